// Attention, flash style (Dao et al. 2022, FlashAttention-2 2023): tiled online softmax, no (T,T) matrix
// in memory. The forward saves the log-sum-exp lse (B,NH,T) f32 (+inf for a row with no visible key, so
// that its probabilities recompute to 0); the backward recomputes the probabilities from q, k and lse.
// Dropout on the probabilities (AttentionDropout, backend.h) as in FlashAttention: the softmax's sum l
// and lse are those of P, the output is dropout(P) v, and the backward regenerates the mask from the
// coordinates (drop_factor): dv = dropout(P)^T dout, dS = P * (factor * dout.v - D), D = rowsum(dout * out).
//
// Layout: q, out, dq (B*T, NH*HS); k, v, dk, dv (B*T, NKV*HS); rows (b, t), head h in columns
// [h*HS, (h+1)*HS), each with its own ld (column blocks of a fused qkv are fine). Query head h reads
// key/value head h / (NH/NKV). Key j is visible to query t when j < lengths[b], (not causal or j <= t) and,
// with a sliding window W, t - j < W; key tiles wholly outside a block's window are skipped, and the dk/dv
// kernel walks only the queries whose window reaches its keys.
//
// These kernels serve every case the tensor-core ones (cuda/attention_tc.cu: 16-bit q, k, v with a head
// size of 64 or 128, on sm_80 and later) do not, and all of them under LORA_ATTENTION=simple.
// This first version favours clarity: fp32 CUDA-core arithmetic from shared-memory tiles, one warp per
// query (or key) row, one lane per key (or query) of a 32-wide tile, each lane holding HS/32 output
// dimensions in registers (HS <= 256). The backward runs two kernels so that nothing needs atomics and
// results are deterministic: dq parallel over query tiles, dk/dv parallel over key tiles (summing over the
// query heads of a group).
#include <cmath>

#include "cuda/attention.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kWarps = 4;
static constexpr int kRowsPerWarp = 4;
static constexpr int kRowTile = kWarps * kRowsPerWarp;  // rows a block owns: queries (fwd, dq) or keys (dk/dv)
static constexpr int kColTile = 32;                     // keys (fwd, dq) or queries (dk/dv) per inner tile
static constexpr int kMaxHS = 256;
static constexpr int kDimsPerLane = kMaxHS / 32;

// dst (rows, stride) <- scale * src[(b*T + t0 + r) * ld + col0 + d], zero outside [0, T).
static __device__ void load_tile(float* dst, int stride, int rows, const void* src, DType t, int64_t ld, int b, int T,
                                 int t0, int64_t col0, int HS, float scale) {
  for (int idx = threadIdx.x; idx < rows * HS; idx += blockDim.x) {
    int r = idx / HS, d = idx % HS, tt = t0 + r;
    dst[r * stride + d] = tt < T ? scale * load_elem(src, t, (int64_t(b) * T + tt) * ld + col0 + d) : 0.0f;
  }
}

static __device__ __forceinline__ float dot_rows(const float* x, const float* y, int HS) {
  float acc = 0.0f;
  for (int d = 0; d < HS; ++d) acc += x[d] * y[d];
  return acc;
}

// grid (ceil(T/kRowTile), NH, B), kWarps*32 threads. Shared: sq (kRowTile,HS) pre-scaled q,
// sk (kColTile,HS+1), sv (kColTile,HS).
static __global__ void attention_forward_kernel(AttnArgs a, void* out, DType tout, int64_t ldo, float* lse) {
  LORA_DYNAMIC_SHARED(float, smem);
  const int HS = a.HS, KS = HS + 1;
  float* sq = smem;
  float* sk = sq + kRowTile * HS;
  float* sv = sk + kColTile * KS;
  const int q0 = blockIdx.x * kRowTile, h = blockIdx.y, b = blockIdx.z, g = h / (a.NH / a.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int len = visible_len(a, b);
  load_tile(sq, HS, kRowTile, a.q, a.tq, a.ldq, b, a.T, q0, int64_t(h) * HS, HS, a.scale);

  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) o[r][e] = 0.0f;
  }
  const int kend = a.causal ? min(len, q0 + kRowTile) : len;
  for (int k0 = key_begin(a, q0, kColTile); k0 < kend; k0 += kColTile) {
    __syncthreads();  // the previous tile is consumed (and sq is loaded, on the first pass)
    load_tile(sk, KS, kColTile, a.k, a.tk, a.ldk, b, a.T, k0, int64_t(g) * HS, HS, 1.0f);
    load_tile(sv, HS, kColTile, a.v, a.tv, a.ldv, b, a.T, k0, int64_t(g) * HS, HS, 1.0f);
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int qi = warp * kRowsPerWarp + r, t = q0 + qi;
      if (t >= a.T) continue;  // warp-uniform
      const int key = k0 + lane;
      const bool ok = visible(a, len, key, t);
      const float s = ok ? dot_rows(sq + qi * HS, sk + lane * KS, HS) : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(s));
      if (m_new == -INFINITY) continue;  // nothing visible yet: warp-uniform
      const float corr = expf(m[r] - m_new);  // 0 when m[r] is -inf
      const float p = ok ? expf(s - m_new) : 0.0f;
      const float pd = ok ? p * drop_factor(a, b, h, t, key) : 0.0f;  // after dropout
      l[r] = l[r] * corr + warp_sum(p);
      m[r] = m_new;
#pragma unroll
      for (int e = 0; e < kDimsPerLane; ++e) o[r][e] *= corr;
      for (int jj = 0; jj < kColTile; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, pd, jj);
        if (pj == 0.0f) continue;  // warp-uniform
#pragma unroll
        for (int e = 0; e < kDimsPerLane; ++e) {
          const int d = lane + 32 * e;
          if (d < HS) o[r][e] += pj * sv[jj * HS + d];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int t = q0 + warp * kRowsPerWarp + r;
    if (t >= a.T) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    const int64_t row = int64_t(b) * a.T + t;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < HS) store_elem(out, tout, row * ldo + int64_t(h) * HS + d, o[r][e] * inv);
    }
    if (lane == 0) lse[(int64_t(b) * a.NH + h) * a.T + t] = l[r] > 0.0f ? m[r] + logf(l[r]) : INFINITY;
  }
}

// D[b,h,t] = sum_d dout * out, one warp a row. grid (ceil(B*T*NH / kWarps)).
static __global__ void attention_dot_kernel(float* D, const void* dout, DType tdo, int64_t lddo, const void* out,
                                            DType to, int64_t ldo, int B, int T, int NH, int HS) {
  const int64_t idx = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;  // (b, t, h)
  const int lane = threadIdx.x % 32;
  if (idx >= int64_t(B) * T * NH) return;
  const int h = int(idx % NH);
  const int64_t row = idx / NH;
  float s = 0.0f;
  for (int d = lane; d < HS; d += 32)
    s += load_elem(dout, tdo, row * lddo + int64_t(h) * HS + d) * load_elem(out, to, row * ldo + int64_t(h) * HS + d);
  s = warp_sum(s);
  const int b = int(row / T), t = int(row % T);
  if (lane == 0) D[(int64_t(b) * NH + h) * T + t] = s;
}

// dq = scale * sum_j ds_j k_j, ds_j = p_j (factor_j dout.v_j - D), p_j = exp(s_j - lse). grid as the forward.
// Shared: sq (kRowTile,HS) pre-scaled q, sdo (kRowTile,HS), sk, sv (kColTile,HS+1).
static __global__ void attention_dq_kernel(AttnArgs a, const void* dout, DType tdo, int64_t lddo, const float* lse,
                                           const float* D, void* dq, DType tdq, int64_t lddq) {
  LORA_DYNAMIC_SHARED(float, smem);
  const int HS = a.HS, KS = HS + 1;
  float* sq = smem;
  float* sdo = sq + kRowTile * HS;
  float* sk = sdo + kRowTile * HS;
  float* sv = sk + kColTile * KS;
  const int q0 = blockIdx.x * kRowTile, h = blockIdx.y, b = blockIdx.z, g = h / (a.NH / a.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int len = visible_len(a, b);
  load_tile(sq, HS, kRowTile, a.q, a.tq, a.ldq, b, a.T, q0, int64_t(h) * HS, HS, a.scale);
  load_tile(sdo, HS, kRowTile, dout, tdo, lddo, b, a.T, q0, int64_t(h) * HS, HS, 1.0f);

  float acc[kRowsPerWarp][kDimsPerLane], row_lse[kRowsPerWarp], row_D[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    query_stats(a, lse, D, b, h, q0 + warp * kRowsPerWarp + r, row_lse[r], row_D[r]);
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) acc[r][e] = 0.0f;
  }
  const int kend = a.causal ? min(len, q0 + kRowTile) : len;
  for (int k0 = key_begin(a, q0, kColTile); k0 < kend; k0 += kColTile) {
    __syncthreads();
    load_tile(sk, KS, kColTile, a.k, a.tk, a.ldk, b, a.T, k0, int64_t(g) * HS, HS, 1.0f);
    load_tile(sv, KS, kColTile, a.v, a.tv, a.ldv, b, a.T, k0, int64_t(g) * HS, HS, 1.0f);
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int qi = warp * kRowsPerWarp + r, t = q0 + qi;
      if (t >= a.T) continue;
      const int key = k0 + lane;
      float ds = 0.0f;
      if (visible(a, len, key, t)) {
        const float p = expf(dot_rows(sq + qi * HS, sk + lane * KS, HS) - row_lse[r]);
        ds = p * (dot_rows(sdo + qi * HS, sv + lane * KS, HS) * drop_factor(a, b, h, t, key) - row_D[r]);
      }
      for (int jj = 0; jj < kColTile; ++jj) {
        const float dsj = __shfl_sync(0xffffffffu, ds, jj);
        if (dsj == 0.0f) continue;
#pragma unroll
        for (int e = 0; e < kDimsPerLane; ++e) {
          const int d = lane + 32 * e;
          if (d < HS) acc[r][e] += dsj * sk[jj * KS + d];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int t = q0 + warp * kRowsPerWarp + r;
    if (t >= a.T) continue;
    const int64_t row = int64_t(b) * a.T + t;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < HS) store_elem(dq, tdq, row * lddq + int64_t(h) * HS + d, a.scale * acc[r][e]);
    }
  }
}

// dv_j = sum_i pd_ij dout_i (pd: p after dropout), dk_j = scale * sum_i ds_ij q_i over the queries i of every
// query head of KV group g. grid (ceil(T/kRowTile), NKV, B): one warp per key row, one lane per query of a
// kColTile tile.
// Shared: sk, sv (kRowTile,HS); sq (kColTile,HS+1) pre-scaled q, sdo (kColTile,HS+1); slse, sD (kColTile).
static __global__ void attention_dkdv_kernel(AttnArgs a, const void* dout, DType tdo, int64_t lddo, const float* lse,
                                             const float* D, void* dk, DType tdk, int64_t lddk, void* dv, DType tdv,
                                             int64_t lddv) {
  LORA_DYNAMIC_SHARED(float, smem);
  const int HS = a.HS, KS = HS + 1;
  float* sk = smem;
  float* sv = sk + kRowTile * HS;
  float* sq = sv + kRowTile * HS;
  float* sdo = sq + kColTile * KS;
  float* slse = sdo + kColTile * KS;
  float* sD = slse + kColTile;
  const int k0 = blockIdx.x * kRowTile, g = blockIdx.y, b = blockIdx.z, group = a.NH / a.NKV;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int len = visible_len(a, b);
  load_tile(sk, HS, kRowTile, a.k, a.tk, a.ldk, b, a.T, k0, int64_t(g) * HS, HS, 1.0f);
  load_tile(sv, HS, kRowTile, a.v, a.tv, a.ldv, b, a.T, k0, int64_t(g) * HS, HS, 1.0f);

  float gk[kRowsPerWarp][kDimsPerLane], gv[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) gk[r][e] = gv[r][e] = 0.0f;

  // Keys at or beyond len are seen by no query: their gradients stay 0.
  const int qbegin = a.causal ? k0 : 0, qend = query_end(a, k0, kRowTile);
  const bool any_key = k0 < len;
  for (int h = g * group; any_key && h < (g + 1) * group; ++h) {
    for (int i0 = qbegin; i0 < qend; i0 += kColTile) {
      __syncthreads();
      load_tile(sq, KS, kColTile, a.q, a.tq, a.ldq, b, a.T, i0, int64_t(h) * HS, HS, a.scale);
      load_tile(sdo, KS, kColTile, dout, tdo, lddo, b, a.T, i0, int64_t(h) * HS, HS, 1.0f);
      if (threadIdx.x < kColTile)
        query_stats(a, lse, D, b, h, i0 + threadIdx.x, slse[threadIdx.x], sD[threadIdx.x]);
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int kr = warp * kRowsPerWarp + r, key = k0 + kr;
        if (key >= len) continue;  // warp-uniform
        const int query = i0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (query < a.T && visible(a, len, key, query)) {
          const float factor = drop_factor(a, b, h, query, key);
          p = expf(dot_rows(sq + lane * KS, sk + kr * HS, HS) - slse[lane]);
          ds = p * (dot_rows(sdo + lane * KS, sv + kr * HS, HS) * factor - sD[lane]);
          p *= factor;
        }
        for (int ii = 0; ii < kColTile; ++ii) {
          const float pi = __shfl_sync(0xffffffffu, p, ii), dsi = __shfl_sync(0xffffffffu, ds, ii);
          if (pi == 0.0f && dsi == 0.0f) continue;
#pragma unroll
          for (int e = 0; e < kDimsPerLane; ++e) {
            const int d = lane + 32 * e;
            if (d < HS) {
              gv[r][e] += pi * sdo[ii * KS + d];
              gk[r][e] += dsi * sq[ii * KS + d];
            }
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int key = k0 + warp * kRowsPerWarp + r;
    if (key >= a.T) continue;
    const int64_t row = int64_t(b) * a.T + key;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) {
      const int d = lane + 32 * e;
      if (d < HS) {
        store_elem(dk, tdk, row * lddk + int64_t(g) * HS + d, gk[r][e]);
        store_elem(dv, tdv, row * lddv + int64_t(g) * HS + d, gv[r][e]);
      }
    }
  }
}

static size_t forward_smem(int HS) { return sizeof(float) * (kRowTile * HS + kColTile * (HS + 1) + kColTile * HS); }
static size_t dq_smem(int HS) { return sizeof(float) * (2 * kRowTile * HS + 2 * kColTile * (HS + 1)); }
static size_t dkdv_smem(int HS) { return sizeof(float) * (2 * kRowTile * HS + 2 * kColTile * (HS + 1) + 2 * kColTile); }

template <typename Kernel>
static void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

static AttnArgs attention_args(const char* op, const MatRef& q, const MatRef& k, const MatRef& v,
                               const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) {
  cuda_require(s.B > 0 && s.T > 0 && s.NH > 0 && s.NKV > 0 && s.HS > 0, op, "empty attention shape");
  cuda_require(s.NH % s.NKV == 0, op, "NH must be a multiple of NKV");
  cuda_require(s.HS <= kMaxHS, op, "head size above " + std::to_string(kMaxHS) + " is not supported");
  const int64_t N = int64_t(s.B) * s.T;
  cuda_require(q.rows == N && q.cols == int64_t(s.NH) * s.HS, op, "q must be (B*T, NH*HS)");
  cuda_require(k.rows == N && k.cols == int64_t(s.NKV) * s.HS, op, "k must be (B*T, NKV*HS)");
  cuda_require(v.rows == N && v.cols == int64_t(s.NKV) * s.HS, op, "v must be (B*T, NKV*HS)");
  cuda_require(cuda_is_float(q.dtype) && cuda_is_float(k.dtype) && cuda_is_float(v.dtype), op, "q, k, v must be float");
  cuda_require(drop.p >= 0.0f && drop.p < 1.0f, op, "attention dropout p must be in [0, 1)");
  cuda_require(s.window >= 0 && (s.window == 0 || s.causal), op,
               "the sliding window must be 0 (none) or positive with causal attention");
  cuda_require(lengths.empty() || (lengths.dtype == DType::i32 && lengths.numel() == s.B &&
                                   lengths.device == Device::cuda),
               op, "lengths must be an i32 (B) tensor on the GPU");
  AttnArgs a{};
  a.q = q.data; a.k = k.data; a.v = v.data;
  a.tq = q.dtype; a.tk = k.dtype; a.tv = v.dtype;
  a.ldq = q.ld; a.ldk = k.ld; a.ldv = v.ld;
  a.lengths = lengths.empty() ? nullptr : static_cast<const int*>(lengths.data);
  a.B = s.B; a.T = s.T; a.NH = s.NH; a.NKV = s.NKV; a.HS = s.HS;
  a.causal = s.causal;
  a.window = s.window;
  a.scale = 1.0f / std::sqrt(float(s.HS));
  a.drop = drop;
  a.drop_scale = drop.p > 0.0f ? 1.0f / (1.0f - drop.p) : 1.0f;
  return a;
}

static void check_like(const char* op, const MatRef& m, const MatRef& like, const char* name) {
  cuda_require(m.rows == like.rows && m.cols == like.cols && cuda_is_float(m.dtype), op,
               std::string(name) + " has the wrong shape or dtype");
}

void attention_forward(CudaContext& ctx, const MatRef& out, Tensor& lse, const MatRef& q, const MatRef& k,
                       const MatRef& v, const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) {
  AttnArgs a = attention_args("attention_forward", q, k, v, s, lengths, drop);
  check_like("attention_forward", out, q, "out");
  cuda_require(lse.dtype == DType::f32 && lse.numel() == int64_t(s.B) * s.NH * s.T, "attention_forward",
               "lse must be f32 (B,NH,T)");
  if (attention_tc_supported(a)) {
    attention_tc_forward(ctx.stream, a, out.data, out.dtype, out.ld, lse.f32());
    return;
  }
  const size_t smem = forward_smem(s.HS);
  allow_smem(attention_forward_kernel, smem);
  dim3 grid(unsigned((s.T + kRowTile - 1) / kRowTile), unsigned(s.NH), unsigned(s.B));
  LORA_LAUNCH(attention_forward_kernel, grid, kWarps * 32, smem, ctx.stream)(a, out.data, out.dtype, out.ld, lse.f32());
  LAUNCH_CHECK();
}

void attention_backward(CudaContext& ctx, const MatRef& dq, const MatRef& dk, const MatRef& dv, const MatRef& dout,
                        const MatRef& q, const MatRef& k, const MatRef& v, const MatRef& out, const Tensor& lse,
                        const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) {
  const char* op = "attention_backward";
  AttnArgs a = attention_args(op, q, k, v, s, lengths, drop);
  check_like(op, dq, q, "dq");
  check_like(op, dk, k, "dk");
  check_like(op, dv, v, "dv");
  check_like(op, dout, q, "dout");
  check_like(op, out, q, "out");
  const int64_t stats = int64_t(s.B) * s.NH * s.T;
  cuda_require(lse.dtype == DType::f32 && lse.numel() == stats && lse.device == Device::cuda, op,
               "saved must be the f32 (B,NH,T) log-sum-exp from the CUDA attention_forward");
  ScratchBuffer D(size_t(stats) * sizeof(float), ctx.stream);
  LORA_LAUNCH(attention_dot_kernel, unsigned((stats + kWarps - 1) / kWarps), kWarps * 32, 0, ctx.stream)(
      D.f32(), dout.data, dout.dtype, dout.ld, out.data, out.dtype, out.ld, s.B, s.T, s.NH, s.HS);
  LAUNCH_CHECK();
  if (attention_tc_supported(a) && dout.dtype == q.dtype) {
    attention_tc_backward(ctx.stream, a, dout.data, dout.dtype, dout.ld, lse.f32(), D.f32(), dq.data, dq.dtype, dq.ld,
                          dk.data, dk.dtype, dk.ld, dv.data, dv.dtype, dv.ld);
    return;
  }

  const size_t smem_dq = dq_smem(s.HS);
  allow_smem(attention_dq_kernel, smem_dq);
  dim3 grid_q(unsigned((s.T + kRowTile - 1) / kRowTile), unsigned(s.NH), unsigned(s.B));
  LORA_LAUNCH(attention_dq_kernel, grid_q, kWarps * 32, smem_dq, ctx.stream)(a, dout.data, dout.dtype, dout.ld, lse.f32(),
                                                                    D.f32(), dq.data, dq.dtype, dq.ld);
  LAUNCH_CHECK();

  const size_t smem_kv = dkdv_smem(s.HS);
  allow_smem(attention_dkdv_kernel, smem_kv);
  dim3 grid_kv(unsigned((s.T + kRowTile - 1) / kRowTile), unsigned(s.NKV), unsigned(s.B));
  LORA_LAUNCH(attention_dkdv_kernel, grid_kv, kWarps * 32, smem_kv, ctx.stream)(a, dout.data, dout.dtype, dout.ld, lse.f32(),
                                                                       D.f32(), dk.data, dk.dtype, dk.ld, dv.data,
                                                                       dv.dtype, dv.ld);
  LAUNCH_CHECK();
}

}  // namespace cuda_ops
}  // namespace lora
