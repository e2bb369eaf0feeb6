// Backend selection: --device cuda|cpu|auto (auto: CUDA when a device answers, else the CPU with a
// one-line notice). A missing driver makes cudaGetDeviceCount fail rather than return 0: any error
// counts as "no device".
#include "core/backend.h"

#include <cstdio>

#include "core/error.h"

namespace lora {

#if defined(LORA_HAVE_CUDA)
// cuda/backend_cuda.cu: nullptr and a reason when no device is usable.
std::unique_ptr<Backend> backend_cuda_create(std::string* why_not, DType activations);
#else
static std::unique_ptr<Backend> backend_cuda_create(std::string* why_not, DType) {
  *why_not = "this build of lora has no CUDA backend (nvcc was not found at build time)";
  return nullptr;
}
#endif

std::unique_ptr<Backend> backend_create(const std::string& device, bool quiet, DType activations) {
  if (device == "cpu") return backend_cpu_create();
  if (device != "cuda" && device != "auto")
    fail_usage("unknown device '" + device + "'", "use --device cpu, cuda or auto");
  std::string why_not;
  auto cuda = backend_cuda_create(&why_not, activations);
  if (cuda) return cuda;
  if (device == "cuda")
    fail_runtime("--device cuda was asked for but no CUDA device is usable: " + why_not,
                 "check nvidia-smi and LD_LIBRARY_PATH, or run with --device cpu");
  if (!quiet) std::fprintf(stderr, "notice: no CUDA device (%s); running on the CPU\n", why_not.c_str());
  return backend_cpu_create();
}

bool cuda_device_available(std::string* why_not) {
  std::string reason;
  bool ok = backend_cuda_create(&reason, DType::f32) != nullptr;
  if (why_not) *why_not = reason;
  return ok;
}

}  // namespace lora
