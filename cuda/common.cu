// Check-macro back ends and the scratch buffer (see common.cuh).
#include "cuda/common.cuh"

#include <cstdlib>
#include <stdexcept>

#include "core/base/error.h"

namespace lora {

[[noreturn]] void cuda_fail(const char* what, const char* stmt, const char* file, int line) {
  std::string device = "?";
  int id = -1;
  if (cudaGetDevice(&id) == cudaSuccess) {
    cudaDeviceProp prop;
    device = std::to_string(id);
    if (cudaGetDeviceProperties(&prop, id) == cudaSuccess) device += std::string(" (") + prop.name + ")";
  }
  throw Error(EXIT_CODE_RUNTIME,
              std::string("CUDA error: ") + what + "\n  in: " + stmt + "\n  at: " + file + ":" +
                  std::to_string(line) + " on device " + device,
              "an asynchronous fault may come from an earlier launch: rerun with LORA_CUDA_SYNC=1, or "
              "under compute-sanitizer");
}

void cuda_launch_check(const char* file, int line) {
  static const bool sync = [] {
    const char* s = std::getenv("LORA_CUDA_SYNC");
    return s && *s && std::string(s) != "0";
  }();
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) cuda_fail(cudaGetErrorString(err), "kernel launch", file, line);
  if (sync) {
    err = cudaDeviceSynchronize();
    if (err != cudaSuccess) cuda_fail(cudaGetErrorString(err), "kernel launch (LORA_CUDA_SYNC)", file, line);
  }
}

void cuda_require(bool ok, const char* op, const std::string& message) {
  if (!ok) throw std::logic_error(std::string("cuda ") + op + ": " + message);
}

bool cuda_is_float(DType dtype) { return dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16; }

ScratchBuffer::ScratchBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
  CUDA_CHECK(cudaMallocAsync(&ptr_, bytes ? bytes : 16, stream));
}

ScratchBuffer::~ScratchBuffer() {
  if (ptr_) cudaFreeAsync(ptr_, stream_);  // a destructor must not throw; a fault shows at the next check
}

}  // namespace lora
