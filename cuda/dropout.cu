// Dropout with a counter-based mask: keep[i] = rng_uniform(seed, offset + i) >= p (core/ops/backend.h), the
// same function the CPU backend calls, so both backends drop the same elements. out = inp * keep / (1-p);
// p >= 1 drops everything. out may alias inp; the backward is the same map applied to dout.
#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;

static __global__ void dropout_kernel(void* out, DType to, const void* inp, DType ti, int64_t n, float p,
                                      float keep_scale, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = rng_uniform(seed, offset + uint64_t(i)) >= p;
    store_elem(out, to, i, keep ? load_elem(inp, ti, i) * keep_scale : 0.0f);
  }
}

static void launch_dropout(const char* op, CudaContext& ctx, Tensor& out, const Tensor& inp, float p, uint64_t seed,
                           uint64_t offset) {
  const int64_t n = inp.numel();
  cuda_require(out.numel() == n && cuda_is_float(out.dtype) && cuda_is_float(inp.dtype), op,
               "out " + out.shape_str() + " and inp " + inp.shape_str() + " must be float tensors of equal numel");
  cuda_require(p >= 0.0f, op, "p must be >= 0");
  if (n == 0) return;
  const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  LORA_LAUNCH(dropout_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(out.data, out.dtype, inp.data, inp.dtype, n, p,
                                                                     keep_scale, seed, offset);
  LAUNCH_CHECK();
}

void dropout_forward(CudaContext& ctx, Tensor& out, const Tensor& inp, float p, uint64_t seed, uint64_t offset) {
  launch_dropout("dropout_forward", ctx, out, inp, p, seed, offset);
}

void dropout_backward(CudaContext& ctx, Tensor& dinp, const Tensor& dout, float p, uint64_t seed, uint64_t offset) {
  launch_dropout("dropout_backward", ctx, dinp, dout, p, seed, offset);
}

}  // namespace cuda_ops
}  // namespace lora
