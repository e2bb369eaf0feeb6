// Fused softmax cross-entropy, one block per row of logits (N,V), fp32 throughout, no fp32 copy of the
// logits kept. One pass finds the row's max, arg max (lowest index on ties), sum of exp (online softmax,
// Milakov & Gimelshein 2018) and sum of logits; a second pass, when dscale != 0, overwrites the logits in
// place with dscale * dloss/dlogits = dscale * (softmax - (1-eps) onehot(target) - eps/V).
// Label smoothing as PyTorch: loss = (1-eps) * (lse - x_target) + eps * (lse - mean(x)).
// Target -100 is ignored (loss 0, gradient 0). Any other target outside [0,V) gives a NaN loss.
#include <climits>
#include <cmath>

#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 512;
static constexpr int kIgnoreIndex = -100;

struct RowStat {
  float m;   // max
  float s;   // sum of exp(x - m)
  float sx;  // sum of x
  int idx;   // arg max
};

static __device__ __forceinline__ RowStat combine(const RowStat& a, const RowStat& b) {
  RowStat r;
  const bool take_b = b.m > a.m || (b.m == a.m && b.idx < a.idx);
  r.m = take_b ? b.m : a.m;
  r.idx = take_b ? b.idx : a.idx;
  r.s = (a.m == -INFINITY ? 0.0f : a.s * expf(a.m - r.m)) + (b.m == -INFINITY ? 0.0f : b.s * expf(b.m - r.m));
  r.sx = a.sx + b.sx;
  return r;
}

static __device__ RowStat shfl_stat(const RowStat& x, int offset) {
  RowStat y;
  y.m = __shfl_xor_sync(0xffffffffu, x.m, offset);
  y.s = __shfl_xor_sync(0xffffffffu, x.s, offset);
  y.sx = __shfl_xor_sync(0xffffffffu, x.sx, offset);
  y.idx = __shfl_xor_sync(0xffffffffu, x.idx, offset);
  return y;
}

static __global__ void cross_entropy_kernel(MatRef logits, float* losses, int* argmax, const int* targets,
                                            float eps, float dscale) {
  __shared__ RowStat warp_stats[kThreads / 32];
  __shared__ RowStat row_stat;
  const int64_t row = blockIdx.x;
  const int64_t V = logits.cols;
  const int64_t base = row * logits.ld;
  RowStat st{-INFINITY, 0.0f, 0.0f, INT_MAX};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float x = load_elem(logits.data, logits.dtype, base + v);
    st.sx += x;
    if (x > st.m) {
      st.s = (st.m == -INFINITY ? 0.0f : st.s * expf(st.m - x)) + 1.0f;
      st.m = x;
      st.idx = int(v);
    } else if (x != -INFINITY) {
      st.s += expf(x - st.m);
    }
  }
  for (int o = 16; o > 0; o >>= 1) st = combine(st, shfl_stat(st, o));
  if (threadIdx.x % 32 == 0) warp_stats[threadIdx.x / 32] = st;
  __syncthreads();
  if (threadIdx.x == 0) {
    RowStat r = warp_stats[0];
    for (int w = 1; w < int(blockDim.x / 32); ++w) r = combine(r, warp_stats[w]);
    row_stat = r;
  }
  __syncthreads();
  const RowStat r = row_stat;
  const float lse = r.m + logf(r.s);
  const int target = targets[row];
  const bool ignored = target == kIgnoreIndex;
  const bool valid = target >= 0 && int64_t(target) < V;
  if (threadIdx.x == 0) {
    float loss = 0.0f;
    if (!ignored) {
      const float x_t = valid ? load_elem(logits.data, logits.dtype, base + target) : NAN;
      loss = (1.0f - eps) * (lse - x_t) + eps * (lse - r.sx / float(V));
    }
    losses[row] = loss;
    if (argmax) argmax[row] = r.idx;
  }
  if (dscale == 0.0f) return;
  __syncthreads();  // thread 0 has read x_target before anyone overwrites it
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    float g = 0.0f;
    if (!ignored) {
      const float p = expf(load_elem(logits.data, logits.dtype, base + v) - lse);
      g = p - eps / float(V) - (v == target ? 1.0f - eps : 0.0f);
    }
    store_elem(logits.data, logits.dtype, base + v, dscale * g);
  }
}

void cross_entropy(CudaContext& ctx, const MatRef& logits, Tensor& losses, Tensor& argmax, const Tensor& targets,
                   float label_smoothing, float dscale) {
  const char* op = "cross_entropy";
  const int64_t N = logits.rows;
  cuda_require(cuda_is_float(logits.dtype) && logits.cols > 0, op, "logits must be a float (N,V) matrix");
  cuda_require(targets.dtype == DType::i32 && targets.numel() == N && targets.device == Device::cuda, op,
               "targets must be i32 (N) on the GPU");
  cuda_require(losses.dtype == DType::f32 && losses.numel() == N, op, "losses must be f32 (N)");
  cuda_require(argmax.empty() || (argmax.dtype == DType::i32 && argmax.numel() == N), op, "argmax must be i32 (N)");
  cuda_require(N <= int64_t(INT_MAX), op, "too many rows");
  if (N == 0) return;
  LORA_LAUNCH(cross_entropy_kernel, unsigned(N), kThreads, 0, ctx.stream)(logits, losses.f32(),
                                                                 argmax.empty() ? nullptr : argmax.i32(),
                                                                 static_cast<const int*>(targets.data),
                                                                 label_smoothing, dscale);
  LAUNCH_CHECK();
}

}  // namespace cuda_ops
}  // namespace lora
