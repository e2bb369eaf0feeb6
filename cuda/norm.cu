// LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019), forward and backward, one warp a row.
//
// inp, out, dout, dinp (N,C) in any float dtype; mean, rstd (N) f32; weight, bias (C) in any float dtype
// (an empty weight means 1, an empty bias 0). Backward: dinp += (it is the residual stream), dweight +=,
// dbias += (empty: frozen). Parameter gradients are column sums, reduced deterministically: per-chunk
// partials, then a fixed-order finish (add_partials in elementwise.cu). Formulas as llm.c's
// layernorm_backward: dinp = rstd * (w*dout - mean(w*dout) - xhat * mean(w*dout*xhat)).
#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kRowsPerBlock = 8;  // warps a block, one row each
static constexpr int kColTile = 32;
static constexpr int kRowLanes = 8;

struct NormArgs {
  const void* inp; DType t_inp;
  const void* weight; DType t_weight;  // may be null: 1
  const void* bias; DType t_bias;      // may be null: 0
  int64_t N, C;
};

static __device__ __forceinline__ float weight_at(const NormArgs& a, int64_t c) {
  return a.weight ? load_elem(a.weight, a.t_weight, c) : 1.0f;
}

// rms = false: LayerNorm; rms = true: RMSNorm (mean stays 0 and is not written).
static __global__ void norm_forward_kernel(NormArgs a, void* out, DType t_out, float* mean, float* rstd, float eps,
                                           bool rms) {
  int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= a.N) return;
  int64_t base = row * a.C;
  float mu = 0.0f;
  if (!rms) {
    float s = 0.0f;
    for (int64_t c = lane; c < a.C; c += 32) s += load_elem(a.inp, a.t_inp, base + c);
    mu = warp_sum(s) / float(a.C);
  }
  float s2 = 0.0f;
  for (int64_t c = lane; c < a.C; c += 32) {
    float d = load_elem(a.inp, a.t_inp, base + c) - mu;
    s2 += d * d;
  }
  float rs = rsqrtf(warp_sum(s2) / float(a.C) + eps);
  for (int64_t c = lane; c < a.C; c += 32) {
    float y = (load_elem(a.inp, a.t_inp, base + c) - mu) * rs * weight_at(a, c);
    if (a.bias) y += load_elem(a.bias, a.t_bias, c);
    store_elem(out, t_out, base + c, y);
  }
  if (lane == 0) {
    if (mean) mean[row] = mu;
    rstd[row] = rs;
  }
}

// dinp += ... for one row per warp. For RMSNorm mean is null and the mean(w*dout) term is absent.
static __global__ void norm_backward_inp_kernel(NormArgs a, void* dinp, DType t_dinp, const void* dout, DType t_dout,
                                                const float* mean, const float* rstd) {
  int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= a.N) return;
  int64_t base = row * a.C;
  float mu = mean ? mean[row] : 0.0f, rs = rstd[row];
  float s_g = 0.0f, s_gx = 0.0f;  // sums of g = w*dout and g*xhat
  for (int64_t c = lane; c < a.C; c += 32) {
    float g = weight_at(a, c) * load_elem(dout, t_dout, base + c);
    float xhat = (load_elem(a.inp, a.t_inp, base + c) - mu) * rs;
    s_g += g;
    s_gx += g * xhat;
  }
  float mean_g = mean ? warp_sum(s_g) / float(a.C) : 0.0f;
  float mean_gx = warp_sum(s_gx) / float(a.C);
  for (int64_t c = lane; c < a.C; c += 32) {
    float g = weight_at(a, c) * load_elem(dout, t_dout, base + c);
    float xhat = (load_elem(a.inp, a.t_inp, base + c) - mu) * rs;
    float d = rs * (g - mean_g - xhat * mean_gx);
    store_elem(dinp, t_dinp, base + c, load_elem(dinp, t_dinp, base + c) + d);
  }
}

// Column partials of dweight (sum dout*xhat) and dbias (sum dout) over a chunk of rows.
// Block (kColTile, kRowLanes), grid (column tiles, chunks). pw / pb (chunks, C); either may be null.
static __global__ void norm_backward_params_kernel(NormArgs a, const void* dout, DType t_dout, const float* mean,
                                                   const float* rstd, float* pw, float* pb, int64_t rows_per_chunk) {
  __shared__ float acc_w[kRowLanes][kColTile + 1];
  __shared__ float acc_b[kRowLanes][kColTile + 1];
  int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk, r1 = min(r0 + rows_per_chunk, a.N);
  float sw = 0.0f, sb = 0.0f;
  if (c < a.C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      float g = load_elem(dout, t_dout, r * a.C + c);
      float xhat = (load_elem(a.inp, a.t_inp, r * a.C + c) - (mean ? mean[r] : 0.0f)) * rstd[r];
      sw += g * xhat;
      sb += g;
    }
  acc_w[threadIdx.y][threadIdx.x] = sw;
  acc_b[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < a.C) {
    for (int k = 1; k < kRowLanes; ++k) {
      sw += acc_w[k][threadIdx.x];
      sb += acc_b[k][threadIdx.x];
    }
    if (pw) pw[int64_t(blockIdx.y) * a.C + c] = sw;
    if (pb) pb[int64_t(blockIdx.y) * a.C + c] = sb;
  }
}

static void launch_norm_forward(cudaStream_t stream, const NormArgs& a, void* out, DType t_out, float* mean,
                                float* rstd, float eps, bool rms) {
  unsigned blocks = unsigned((a.N + kRowsPerBlock - 1) / kRowsPerBlock);
  LORA_LAUNCH(norm_forward_kernel, blocks, kRowsPerBlock * 32, 0, stream)(a, out, t_out, mean, rstd, eps, rms);
  LAUNCH_CHECK();
}

static void launch_norm_backward(CudaContext& ctx, const NormArgs& a, Tensor& dinp, Tensor& dweight, Tensor* dbias,
                                 const Tensor& dout, const float* mean, const float* rstd) {
  if (!dinp.empty()) {
    unsigned blocks = unsigned((a.N + kRowsPerBlock - 1) / kRowsPerBlock);
    LORA_LAUNCH(norm_backward_inp_kernel, blocks, kRowsPerBlock * 32, 0, ctx.stream)(a, dinp.data, dinp.dtype, dout.data,
                                                                           dout.dtype, mean, rstd);
    LAUNCH_CHECK();
  }
  bool want_w = !dweight.empty(), want_b = dbias && !dbias->empty();
  if (!want_w && !want_b) return;
  int chunks = column_chunks(a.N);
  int64_t rows_per_chunk = (a.N + chunks - 1) / chunks;
  size_t bytes = size_t(chunks) * a.C * sizeof(float);
  ScratchBuffer pw(want_w ? bytes : 0, ctx.stream), pb(want_b ? bytes : 0, ctx.stream);
  dim3 grid(unsigned((a.C + kColTile - 1) / kColTile), unsigned(chunks));
  LORA_LAUNCH(norm_backward_params_kernel, grid, dim3(kColTile, kRowLanes), 0, ctx.stream)(
      a, dout.data, dout.dtype, mean, rstd, want_w ? pw.f32() : nullptr, want_b ? pb.f32() : nullptr, rows_per_chunk);
  LAUNCH_CHECK();
  if (want_w) add_partials(ctx, dweight.data, dweight.dtype, pw.f32(), chunks, a.C);
  if (want_b) add_partials(ctx, dbias->data, dbias->dtype, pb.f32(), chunks, a.C);
}

static NormArgs norm_args(const char* op, const Tensor& inp, const Tensor& weight, const Tensor* bias) {
  NormArgs a{};
  cuda_require(inp.ndim() >= 1 && cuda_is_float(inp.dtype), op, "inp must be a float tensor");
  a.C = inp.dim(-1);
  a.N = a.C ? inp.numel() / a.C : 0;
  a.inp = inp.data; a.t_inp = inp.dtype;
  cuda_require(weight.empty() || (weight.numel() == a.C && cuda_is_float(weight.dtype)), op,
               "weight " + weight.shape_str() + " does not match C=" + std::to_string(a.C));
  a.weight = weight.data; a.t_weight = weight.dtype;
  if (bias) {
    cuda_require(bias->empty() || (bias->numel() == a.C && cuda_is_float(bias->dtype)), op,
                 "bias " + bias->shape_str() + " does not match C=" + std::to_string(a.C));
    a.bias = bias->data; a.t_bias = bias->dtype;
  }
  return a;
}

static void check_stats(const char* op, const Tensor& t, int64_t N, const char* name) {
  cuda_require(t.dtype == DType::f32 && t.numel() == N, op,
               std::string(name) + " must be f32 with " + std::to_string(N) + " elements, got " + dtype_name(t.dtype) +
                   " " + t.shape_str());
}

static void check_like(const char* op, const Tensor& t, const Tensor& inp, const char* name) {
  cuda_require(t.numel() == inp.numel() && cuda_is_float(t.dtype), op,
               std::string(name) + " " + t.shape_str() + " does not match inp " + inp.shape_str());
}

void layernorm_forward(CudaContext& ctx, Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias, float eps) {
  NormArgs a = norm_args("layernorm_forward", inp, weight, &bias);
  check_like("layernorm_forward", out, inp, "out");
  check_stats("layernorm_forward", mean, a.N, "mean");
  check_stats("layernorm_forward", rstd, a.N, "rstd");
  if (a.N == 0) return;
  launch_norm_forward(ctx.stream, a, out.data, out.dtype, mean.f32(), rstd.f32(), eps, false);
}

void layernorm_backward(CudaContext& ctx, Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd) {
  NormArgs a = norm_args("layernorm_backward", inp, weight, nullptr);
  check_like("layernorm_backward", dout, inp, "dout");
  if (!dinp.empty()) check_like("layernorm_backward", dinp, inp, "dinp");
  if (!dweight.empty()) check_like("layernorm_backward", dweight, weight, "dweight");
  cuda_require(dbias.empty() || (dbias.numel() == a.C && cuda_is_float(dbias.dtype)), "layernorm_backward",
               "dbias " + dbias.shape_str() + " does not match C");
  check_stats("layernorm_backward", mean, a.N, "mean");
  check_stats("layernorm_backward", rstd, a.N, "rstd");
  if (a.N == 0) return;
  launch_norm_backward(ctx, a, dinp, dweight, &dbias, dout, mean.f32(), rstd.f32());
}

void rmsnorm_forward(CudaContext& ctx, Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                     float eps) {
  NormArgs a = norm_args("rmsnorm_forward", inp, weight, nullptr);
  check_like("rmsnorm_forward", out, inp, "out");
  check_stats("rmsnorm_forward", rstd, a.N, "rstd");
  if (a.N == 0) return;
  launch_norm_forward(ctx.stream, a, out.data, out.dtype, nullptr, rstd.f32(), eps, true);
}

void rmsnorm_backward(CudaContext& ctx, Tensor& dinp, Tensor& dweight, const Tensor& dout, const Tensor& inp,
                      const Tensor& weight, const Tensor& rstd) {
  NormArgs a = norm_args("rmsnorm_backward", inp, weight, nullptr);
  check_like("rmsnorm_backward", dout, inp, "dout");
  if (!dinp.empty()) check_like("rmsnorm_backward", dinp, inp, "dinp");
  if (!dweight.empty()) check_like("rmsnorm_backward", dweight, weight, "dweight");
  check_stats("rmsnorm_backward", rstd, a.N, "rstd");
  if (a.N == 0) return;
  launch_norm_backward(ctx, a, dinp, dweight, nullptr, dout, nullptr, rstd.f32());
}

}  // namespace cuda_ops
}  // namespace lora
