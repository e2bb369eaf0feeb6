// Shared helpers of the CUDA backend (ggml style: every CUDA/cuBLAS call and every launch is checked).
//
// - CUDA_CHECK / CUBLAS_CHECK wrap every runtime and cuBLASLt call; LAUNCH_CHECK() follows every kernel
//   launch. A failure throws lora::Error(EXIT_CODE_RUNTIME) naming the statement, file:line and device.
//   LORA_CUDA_SYNC=1 in the environment makes LAUNCH_CHECK synchronise, so an asynchronous fault is
//   reported at the launch that caused it (slow; for debugging).
// - load_elem / store_elem read and write one element of an f32, bf16 or f16 buffer as float: every
//   kernel of this first version is dtype-generic at run time (the switch is warp-uniform and cheap next
//   to the memory access), so ops accept any mix of float dtypes.
// - ScratchBuffer: a temporary device buffer, stream-ordered (cudaMallocAsync / cudaFreeAsync on the
//   pool whose release threshold backend_cuda.cu raises, so it caches).
// - LORA_LAUNCH(kernel, grid, block, smem, stream)(args...) launches a kernel, and
//   LORA_DYNAMIC_SHARED(type, name) declares a kernel's dynamic shared memory. With nvcc they are
//   `kernel<<<grid, block, smem, stream>>>(args...)` and `extern __shared__ type name[]`; in the CPU
//   emulation that tests these kernels without a GPU (tests/emu/, LORA_CUDA_EMU) they run the kernel's
//   threads as fibers, block by block.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#if defined(LORA_CUDA_EMU)
#include <cuda_emu.h>  // the emulation's own include path (tests/emu), given only to its build
#else
#define LORA_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#define LORA_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace lora {

[[noreturn]] void cuda_fail(const char* what, const char* stmt, const char* file, int line);
void cuda_launch_check(const char* file, int line);
// A shape or dtype error in a call of the op set: a bug in the caller, thrown as std::logic_error.
void cuda_require(bool ok, const char* op, const std::string& message);
bool cuda_is_float(DType dtype);

#define CUDA_CHECK(stmt)                                                              \
  do {                                                                                \
    cudaError_t err_ = (stmt);                                                        \
    if (err_ != cudaSuccess) ::lora::cuda_fail(cudaGetErrorString(err_), #stmt, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(stmt)                                                            \
  do {                                                                                \
    cublasStatus_t st_ = (stmt);                                                      \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::lora::cuda_fail(cublasLtGetStatusString(st_), #stmt, __FILE__, __LINE__);     \
  } while (0)

#define LAUNCH_CHECK() ::lora::cuda_launch_check(__FILE__, __LINE__)

// Blocks for a grid-stride loop over n items.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > (1 << 20)) blocks = 1 << 20;
  return unsigned(blocks);
}

class ScratchBuffer {
 public:
  ScratchBuffer(size_t bytes, cudaStream_t stream);
  ~ScratchBuffer();
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  void* get() const { return ptr_; }
  float* f32() const { return static_cast<float*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

#if defined(__CUDACC__) || defined(LORA_CUDA_EMU)
__device__ __forceinline__ float load_elem(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::f16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_elem(void* p, DType t, int64_t i, float x) {
  switch (t) {
    case DType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x); break;
    case DType::f16: static_cast<__half*>(p)[i] = __float2half_rn(x); break;
    default: static_cast<float*>(p)[i] = x; break;
  }
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
#endif

}  // namespace lora
