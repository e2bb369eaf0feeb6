// The CUDA backend's creation functions (cuda/backend_cuda.cu). Plain C++: includable without nvcc.
// Both return nullptr and set *why_not on any CUDA error (no driver, no device, no kernel image for this
// GPU, a failed cuBLASLt handle).
#pragma once
#include <memory>
#include <string>

#include "core/ops/backend.h"

namespace lora {

// activations: DType::bf16 (default), DType::f16 or DType::f32 (f32 is for tests and debugging).
std::unique_ptr<Backend> backend_cuda_create(std::string* why_not, DType activations);
// True when this machine has no NVIDIA driver or no device at all (no libcuda, a stub libcuda, or no
// device reported), as opposed to a driver that is present but cannot be used (too old, a failing device):
// `--device auto` then runs on the CPU without a notice.
bool cuda_driver_absent();

}  // namespace lora
