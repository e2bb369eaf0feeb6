// Reductions answered on the host: sum_squares (fp64 accumulation; per-block partials summed in a fixed
// order on the host, so the result is deterministic) and all_finite (a flag any thread may clear).
// Both synchronise the stream: the caller wants the number now (gradient clipping, loss scaling).
#include <vector>

#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;
static constexpr int kMaxBlocks = 1024;

static __global__ void sum_squares_kernel(double* partials, const void* x, DType t, int64_t n) {
  __shared__ double warp_sums[kThreads / 32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double v = load_elem(x, t, i);
    s += v * v;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
    partials[blockIdx.x] = total;
  }
}

static __global__ void all_finite_kernel(int* finite, const void* x, DType t, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (!isfinite(load_elem(x, t, i))) *finite = 0;  // every writer writes the same value
}

static unsigned reduce_blocks(int64_t n) {
  unsigned blocks = grid_for(n, kThreads);
  return blocks > kMaxBlocks ? kMaxBlocks : blocks;
}

double sum_squares(CudaContext& ctx, const Tensor& t) {
  cuda_require(cuda_is_float(t.dtype), "sum_squares", "float tensors only");
  const int64_t n = t.numel();
  if (n == 0) return 0.0;
  const unsigned blocks = reduce_blocks(n);
  ScratchBuffer partials(blocks * sizeof(double), ctx.stream);
  LORA_LAUNCH(sum_squares_kernel, blocks, kThreads, 0, ctx.stream)(static_cast<double*>(partials.get()), t.data, t.dtype, n);
  LAUNCH_CHECK();
  std::vector<double> host(blocks);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), partials.get(), blocks * sizeof(double), cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  double total = 0.0;
  for (double p : host) total += p;
  return total;
}

bool all_finite(CudaContext& ctx, const Tensor& t) {
  cuda_require(cuda_is_float(t.dtype), "all_finite", "float tensors only");
  const int64_t n = t.numel();
  if (n == 0) return true;
  ScratchBuffer flag(sizeof(int), ctx.stream);
  const int one = 1;
  CUDA_CHECK(cudaMemcpyAsync(flag.get(), &one, sizeof(int), cudaMemcpyHostToDevice, ctx.stream));
  LORA_LAUNCH(all_finite_kernel, reduce_blocks(n), kThreads, 0, ctx.stream)(static_cast<int*>(flag.get()), t.data, t.dtype, n);
  LAUNCH_CHECK();
  int host = 0;
  CUDA_CHECK(cudaMemcpyAsync(&host, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return host != 0;
}

}  // namespace cuda_ops
}  // namespace lora
