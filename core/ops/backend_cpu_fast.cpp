// The fast CPU backend, the default `cpu`: the reference's checked ops (core/ops/backend_cpu.cpp) with
// faster loops behind the hot ones (core/ops/cpu_kernels.h); every other op is the reference's.
//
// What makes these loops faster than ops_ref.h, and what it costs in agreement with it:
//   - fp32 arithmetic with 8-wide vectors (GCC vector extensions), compiled twice by target_clones: for
//     x86-64-v3 (AVX2, FMA), chosen at run time where the processor has it, and for the x86-64 baseline
//     (SSE2). Row statistics (LayerNorm's mean and variance, the sum of the softmax over the
//     vocabulary) still accumulate in double, as the reference does; elementwise values are fp32, with
//     an exp good to about 2 ulp. tests/test_ops_fast.cpp holds every entry to the reference within the
//     CUDA f32 tolerance (1e-5 relative, floored by the tensor's scale).
//   - attention as GEMMs through OpenBLAS per (batch, head): S = Q K^T, P V, and in the backward
//     dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q; the softmax and its backward are row loops.
//   - the loops split over one thread pool (core/ops/cpu_threads.h) sized like OpenBLAS.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops/backend.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/cpu_threads.h"
#include "core/ops/ops_ref.h"

// Each vector loop exists as an AVX2+FMA clone and a baseline one; the loader picks (GNU ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LORA_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LORA_VECTOR_CLONES
#endif
#define LORA_INLINE inline __attribute__((always_inline))
// The helpers below pass 32-byte vectors by value but are always inlined: no call, no ABI to warn about.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lora {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

LORA_INLINE v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
LORA_INLINE void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }
LORA_INLINE v8f splat(float x) { return v8f{} + x; }
// The first n < 8 elements, the rest 0 (a loop's tail).
LORA_INLINE v8f load_part(const float* p, int64_t n) {
  float b[8] = {};
  std::memcpy(b, p, size_t(n) * sizeof(float));
  return load8(b);
}
LORA_INLINE void store_part(float* p, v8f v, int64_t n) {
  float b[8];
  store8(b, v);
  std::memcpy(p, b, size_t(n) * sizeof(float));
}
// Both halves of v added into a double accumulator.
LORA_INLINE v4d widen_add(v4d acc, v8f v) {
  const v4f lo = {v[0], v[1], v[2], v[3]}, hi = {v[4], v[5], v[6], v[7]};
  return acc + __builtin_convertvector(lo, v4d) + __builtin_convertvector(hi, v4d);
}

// exp, Cephes' expf: x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r, 2^n from the exponent
// bits. Inputs are clamped to [-87.3, 88.3] (no denormals, no infinity: e^-87.3 ~ 1e-38 is 0 to every
// caller here, and nothing here exponentiates a positive number that large).
LORA_INLINE v8f exp8(v8f x) {
  x = x < -87.3f ? splat(-87.3f) : x;
  x = x > 88.3f ? splat(88.3f) : x;
  const v8f magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const v8f n = (x * 1.44269504088896341f + magic) - magic;
  const v8f r = x - n * 0.693359375f + n * 2.12194440e-4f;
  v8f p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const v8f y = p * r * r + r + 1.0f;
  const v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  return y * (v8f)bits;
}

CpuPool& pool() { return CpuPool::get(); }

// Items per share below which a loop is not split: a share must outweigh waking a thread (~10 us).
constexpr int64_t kGrainElems = 16384;

// ---- elementwise ----

LORA_VECTOR_CLONES void add_range(float* y, const float* a, const float* b, int64_t n, float alpha) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8(y + i, load8(a + i) + alpha * load8(b + i));
  for (; i < n; ++i) y[i] = a[i] + alpha * b[i];
}

void fast_add(float* y, const float* a, const float* b, int64_t n, float alpha) {
  pool().parallel_for(n, kGrainElems, [&](int64_t i0, int64_t i1) { add_range(y + i0, a + i0, b + i0, i1 - i0, alpha); });
}

LORA_VECTOR_CLONES void bias_rows(float* out, int64_t ldo, const float* bias, int64_t r0, int64_t r1, int64_t C) {
  for (int64_t i = r0; i < r1; ++i) {
    float* o = out + i * ldo;
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) store8(o + c, load8(o + c) + load8(bias + c));
    for (; c < C; ++c) o[c] += bias[c];
  }
}

void fast_bias_add(float* out, int64_t ldo, const float* bias, int64_t N, int64_t C) {
  pool().parallel_for(N, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, C)),
                      [&](int64_t r0, int64_t r1) { bias_rows(out, ldo, bias, r0, r1, C); });
}

// GELU, tanh form (ops_ref.h gelu_value): 0.5 x (1 + tanh u) = x s with s = sigmoid(2u) = 1 / (1 + e^-2u),
// u = k (x + c x^3); the derivative 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) u' is s + 2 x s (1 - s) u'.
constexpr float kGeluK = 0.7978845608028654f, kGeluC = 0.044715f;

// s = sigmoid(2u); 0 where e^-2u would pass exp8's clamp (x below about -9: GELU is -0 there in float,
// as the reference's 1 + tanh u rounds to 0, not the -1e-38 a clamped exponent would leave).
LORA_INLINE v8f gelu_sigmoid8(v8f x) {
  const v8f t = -2.0f * kGeluK * (x + kGeluC * x * x * x);
  const v8f s = 1.0f / (1.0f + exp8(t));
  return t > 88.0f ? splat(0.0f) : s;
}

LORA_INLINE v8f gelu8(v8f x) { return x * gelu_sigmoid8(x); }

LORA_INLINE v8f gelu_grad8(v8f x) {
  const v8f s = gelu_sigmoid8(x);
  return s + 2.0f * x * s * (1.0f - s) * (kGeluK * (1.0f + 3.0f * kGeluC * x * x));
}

LORA_VECTOR_CLONES void gelu_range(float* out, const float* inp, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8(out + i, gelu8(load8(inp + i)));
  if (i < n) store_part(out + i, gelu8(load_part(inp + i, n - i)), n - i);
}

LORA_VECTOR_CLONES void gelu_grad_range(float* dinp, const float* dout, const float* inp, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8(dinp + i, load8(dout + i) * gelu_grad8(load8(inp + i)));
  if (i < n) store_part(dinp + i, load_part(dout + i, n - i) * gelu_grad8(load_part(inp + i, n - i)), n - i);
}

void fast_gelu_forward(float* out, const float* inp, int64_t n, GeluKind kind) {
  if (kind != GeluKind::tanh) return ref::gelu_forward(out, inp, n, kind);  // erf: the reference's loop
  pool().parallel_for(n, kGrainElems, [&](int64_t i0, int64_t i1) { gelu_range(out + i0, inp + i0, i1 - i0); });
}

void fast_gelu_backward(float* dinp, const float* dout, const float* inp, int64_t n, GeluKind kind) {
  if (kind != GeluKind::tanh) return ref::gelu_backward(dinp, dout, inp, n, kind);
  pool().parallel_for(n, kGrainElems,
                      [&](int64_t i0, int64_t i1) { gelu_grad_range(dinp + i0, dout + i0, inp + i0, i1 - i0); });
}

// Dropout: the reference's mask (rng_uniform per element), split over threads; the draw is the cost.
void fast_dropout_apply(float* out, const float* inp, int64_t n, float p, uint64_t seed, uint64_t offset) {
  pool().parallel_for(n, kGrainElems, [&](int64_t i0, int64_t i1) {
    ref::dropout_apply(out + i0, inp + i0, i1 - i0, p, seed, offset + uint64_t(i0));
  });
}

// ---- LayerNorm ----

// sum_c x[c] and sum_c (x[c] - mu)^2 in double lanes.
LORA_INLINE double row_sum(const float* x, int64_t C) {
  v4d acc = {};
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) acc = widen_add(acc, load8(x + c));
  double s = acc[0] + acc[1] + acc[2] + acc[3];
  for (; c < C; ++c) s += x[c];
  return s;
}

LORA_VECTOR_CLONES void layernorm_rows(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                       const float* bias, int64_t r0, int64_t r1, int64_t C, float eps) {
  for (int64_t i = r0; i < r1; ++i) {
    const float* x = inp + i * C;
    float* y = out + i * C;
    const double mu = row_sum(x, C) / double(C);
    const float muf = float(mu);
    v4d acc = {};
    int64_t c = 0;
    double var = 0;
    for (; c + 8 <= C; c += 8) {  // (x - mu)^2 in double: x - mu in float loses digits of x near mu
      const v8f xv = load8(x + c);
      const v4f lo = {xv[0], xv[1], xv[2], xv[3]}, hi = {xv[4], xv[5], xv[6], xv[7]};
      const v4d dl = __builtin_convertvector(lo, v4d) - mu, dh = __builtin_convertvector(hi, v4d) - mu;
      acc += dl * dl + dh * dh;
    }
    var = acc[0] + acc[1] + acc[2] + acc[3];
    for (; c < C; ++c) var += (x[c] - mu) * (x[c] - mu);
    const double rs = 1.0 / std::sqrt(var / double(C) + double(eps));
    const float rsf = float(rs);
    // x - mu as (x - mu_hi) - mu_lo, mu = mu_hi + mu_lo: for x near mu the first difference is exact
    // (Sterbenz), so a row far from zero mean keeps the digits float(mu) alone would cost (tested).
    const float mulo = float(mu - double(muf));
    c = 0;
    for (; c + 8 <= C; c += 8) {
      v8f v = ((load8(x + c) - muf) - mulo) * rsf;
      if (weight) v *= load8(weight + c);
      if (bias) v += load8(bias + c);
      store8(y + c, v);
    }
    for (; c < C; ++c) {
      float v = ((x[c] - muf) - mulo) * rsf;
      if (weight) v *= weight[c];
      if (bias) v += bias[c];
      y[c] = v;
    }
    mean[i] = muf;
    rstd[i] = rsf;
  }
}

void fast_layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                            const float* bias, int64_t N, int64_t C, float eps) {
  pool().parallel_for(N, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, 4 * C)), [&](int64_t r0, int64_t r1) {
    layernorm_rows(out, mean, rstd, inp, weight, bias, r0, r1, C, eps);
  });
}

// dinp += rstd (g - mean(g) - xhat mean(g xhat)), g = dout * weight (ops_ref.h), the two means in double.
LORA_VECTOR_CLONES void layernorm_back_rows(float* dinp, const float* dout, const float* inp, const float* weight,
                                            const float* mean, const float* rstd, int64_t r0, int64_t r1, int64_t C) {
  for (int64_t i = r0; i < r1; ++i) {
    const float* x = inp + i * C;
    const float* dy = dout + i * C;
    float* dx = dinp + i * C;
    const float mu = mean[i], rs = rstd[i];
    v4d ag = {}, agx = {};
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      v8f g = load8(dy + c);
      if (weight) g *= load8(weight + c);
      ag = widen_add(ag, g);
      agx = widen_add(agx, g * ((load8(x + c) - mu) * rs));
    }
    double g_mean = ag[0] + ag[1] + ag[2] + ag[3], gx_mean = agx[0] + agx[1] + agx[2] + agx[3];
    for (; c < C; ++c) {
      const double g = double(dy[c]) * (weight ? double(weight[c]) : 1.0);
      g_mean += g;
      gx_mean += g * (x[c] - mu) * rs;
    }
    const float gm = float(g_mean / double(C)), gxm = float(gx_mean / double(C));
    c = 0;
    for (; c + 8 <= C; c += 8) {
      v8f g = load8(dy + c);
      if (weight) g *= load8(weight + c);
      const v8f xhat = (load8(x + c) - mu) * rs;
      store8(dx + c, load8(dx + c) + rs * (g - gm - xhat * gxm));
    }
    for (; c < C; ++c) {
      const float g = dy[c] * (weight ? weight[c] : 1.0f);
      dx[c] += rs * (g - gm - (x[c] - mu) * rs * gxm);
    }
  }
}

void fast_layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                             const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
  pool().parallel_for(N, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, 4 * C)), [&](int64_t r0, int64_t r1) {
    layernorm_back_rows(dinp, dout, inp, weight, mean, rstd, r0, r1, C);
  });
  if (!dweight && !dbias) return;  // frozen, as in every LoRA run
  // The parameter gradients: sums over rows in double, a row at a time (contiguous reads).
  std::vector<double> dw(size_t(C), 0.0), db(size_t(C), 0.0);
  for (int64_t i = 0; i < N; ++i) {
    const float* dy = dout + i * C;
    const float* x = inp + i * C;
    const double mu = mean[i], rs = rstd[i];
    for (int64_t c = 0; c < C; ++c) {
      dw[size_t(c)] += double(dy[c]) * (x[c] - mu) * rs;
      db[size_t(c)] += dy[c];
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    if (dweight) dweight[c] += float(dw[size_t(c)]);
    if (dbias) dbias[c] += float(db[size_t(c)]);
  }
}

// ---- attention ----

// The keys query t of batch row b sees form one range [lo, hi) (ops_ref.h attention_visible): causal
// cuts at t, a window from below, the padding at lengths[b].
LORA_INLINE void visible_range(const AttentionShape& s, const int32_t* lengths, int b, int t, int& lo, int& hi) {
  hi = s.causal ? t + 1 : s.T;
  if (lengths) hi = std::min(hi, int(lengths[b]));
  lo = s.window > 0 ? std::max(0, t - s.window + 1) : 0;
}

// Softmax in place over one row of scores p (T): the visible range [lo, hi), 0 elsewhere and for a
// query that sees no key.
LORA_VECTOR_CLONES void softmax_row(float* p, int T, int lo, int hi) {
  if (hi <= lo) {
    std::fill(p, p + T, 0.0f);
    return;
  }
  float m = -INFINITY;
  for (int j = lo; j < hi; ++j) m = std::max(m, p[j]);
  v4d acc = {};
  int j = lo;
  for (; j + 8 <= hi; j += 8) {
    const v8f e = exp8(load8(p + j) - m);
    store8(p + j, e);
    acc = widen_add(acc, e);
  }
  double sum = acc[0] + acc[1] + acc[2] + acc[3];
  if (j < hi) {
    const v8f e = exp8(load_part(p + j, hi - j) - m);
    store_part(p + j, e, hi - j);
    for (int l = 0; l < hi - j; ++l) sum += e[l];
  }
  const float inv = float(1.0 / sum);
  for (j = lo; j < hi; ++j) p[j] *= inv;
  std::fill(p, p + lo, 0.0f);
  std::fill(p + hi, p + T, 0.0f);
}

// dS = scale * P (dP - sum_j P dP) over one row, into dp.
LORA_VECTOR_CLONES void softmax_back_row(float* dp, const float* p, int T, float scale) {
  v4d acc = {};
  int j = 0;
  for (; j + 8 <= T; j += 8) acc = widen_add(acc, load8(p + j) * load8(dp + j));
  double pdp = acc[0] + acc[1] + acc[2] + acc[3];
  for (; j < T; ++j) pdp += double(p[j]) * dp[j];
  const float c = float(pdp);
  j = 0;
  for (; j + 8 <= T; j += 8) store8(dp + j, scale * load8(p + j) * (load8(dp + j) - c));
  for (; j < T; ++j) dp[j] = scale * p[j] * (dp[j] - c);
}

// out = op(a) op(b) (+ beta out) on (rows, cols) row-major views: the per-head products.
void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, a,
              int(lda), b, int(ldb), beta, c, int(ldc));
}

// P with the dropout mask applied (P * keep / (1 - p)), head (b, h), into pd (T, T).
void dropped(float* pd, const float* p, const AttentionDropout& drop, int NH, int T, int b, int h) {
  const float keep_scale = float(1.0 / (1.0 - double(drop.p)));
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < T; ++j) {
      const float v = p[int64_t(t) * T + j];
      pd[int64_t(t) * T + j] = v != 0.0f && attention_keep(drop, NH, T, b, h, t, j) ? v * keep_scale : 0.0f;
    }
}

void fast_attention_forward(float* out, int64_t ldo, const float* q, int64_t ldq, const float* k, int64_t ldk,
                            const float* v, int64_t ldv, float* probs, const AttentionShape& s, const int32_t* lengths,
                            const AttentionDropout& drop) {
  ref::attention_check_lengths(s, lengths);
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, group = s.NH / s.NKV;
  if (B == 0 || T == 0) return;
  const float scale = float(1.0 / std::sqrt(double(HS)));
  const int64_t TT = int64_t(T) * T;
  // Scores for every head (OpenBLAS threads each product), then the softmax over all rows at once.
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const int g = h / group;
      gemm(false, true, T, T, HS, scale, q + int64_t(b) * T * ldq + int64_t(h) * HS, ldq,
           k + int64_t(b) * T * ldk + int64_t(g) * HS, ldk, 0.0f, probs + (int64_t(b) * NH + h) * TT, T);
    }
  pool().parallel_for(int64_t(B) * NH * T, std::max<int64_t>(1, kGrainElems / (4 * int64_t(T))),
                      [&](int64_t r0, int64_t r1) {
                        for (int64_t r = r0; r < r1; ++r) {
                          const int b = int(r / (int64_t(NH) * T)), t = int(r % T);
                          int lo, hi;
                          visible_range(s, lengths, b, t, lo, hi);
                          softmax_row(probs + r * T, T, lo, hi);
                        }
                      });
  std::vector<float> pd(drop.p > 0.0f ? size_t(TT) : 0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const int g = h / group;
      const float* p = probs + (int64_t(b) * NH + h) * TT;
      if (drop.p > 0.0f) {
        dropped(pd.data(), p, drop, NH, T, b, h);
        p = pd.data();
      }
      gemm(false, false, T, HS, T, 1.0f, p, T, v + int64_t(b) * T * ldv + int64_t(g) * HS, ldv, 0.0f,
           out + int64_t(b) * T * ldo + int64_t(h) * HS, ldo);
    }
}

void fast_attention_backward(float* dq, int64_t lddq, float* dk, int64_t lddk, float* dv, int64_t lddv,
                             const float* dout, int64_t lddo, const float* q, int64_t ldq, const float* k, int64_t ldk,
                             const float* v, int64_t ldv, const float* probs, const AttentionShape& s,
                             const AttentionDropout& drop) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, group = s.NH / s.NKV;
  if (B == 0 || T == 0) return;
  const float scale = float(1.0 / std::sqrt(double(HS)));
  const int64_t TT = int64_t(T) * T;
  const bool dropout = drop.p > 0.0f;
  const float keep_scale = dropout ? float(1.0 / (1.0 - double(drop.p))) : 1.0f;
  // dP = dO V^T for every head (with dropout, times keep / (1 - p)), then dS over all rows at once.
  std::vector<float> ds(size_t(B) * NH * TT);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      gemm(false, true, T, T, HS, 1.0f, dout + int64_t(b) * T * lddo + int64_t(h) * HS, lddo,
           v + int64_t(b) * T * ldv + int64_t(h / group) * HS, ldv, 0.0f, ds.data() + (int64_t(b) * NH + h) * TT, T);
  pool().parallel_for(int64_t(B) * NH * T, std::max<int64_t>(1, kGrainElems / (4 * int64_t(T))),
                      [&](int64_t r0, int64_t r1) {
                        for (int64_t r = r0; r < r1; ++r) {
                          float* dp = ds.data() + r * T;
                          if (dropout) {
                            const int b = int(r / (int64_t(NH) * T)), h = int(r / T % NH), t = int(r % T);
                            for (int j = 0; j < T; ++j)
                              dp[j] = attention_keep(drop, NH, T, b, h, t, j) ? dp[j] * keep_scale : 0.0f;
                          }
                          softmax_back_row(dp, probs + r * T, T, scale);
                        }
                      });
  // dV = Pd^T dO, dQ = dS K, dK = dS^T Q; the heads of a kv group add into one dK, dV block.
  std::vector<float> pd(dropout ? size_t(TT) : 0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const int g = h / group;
      const float beta = h % group == 0 ? 0.0f : 1.0f;
      const float* p = probs + (int64_t(b) * NH + h) * TT;
      const float* dsh = ds.data() + (int64_t(b) * NH + h) * TT;
      if (dropout) {
        dropped(pd.data(), p, drop, NH, T, b, h);
        p = pd.data();
      }
      const int64_t qo = int64_t(b) * T * ldq + int64_t(h) * HS;
      gemm(true, false, T, HS, T, 1.0f, p, T, dout + int64_t(b) * T * lddo + int64_t(h) * HS, lddo, beta,
           dv + int64_t(b) * T * lddv + int64_t(g) * HS, lddv);
      gemm(false, false, T, HS, T, 1.0f, dsh, T, k + int64_t(b) * T * ldk + int64_t(g) * HS, ldk, 0.0f,
           dq + int64_t(b) * T * lddq + int64_t(h) * HS, lddq);
      gemm(true, false, T, HS, T, 1.0f, dsh, T, q + qo, ldq, beta, dk + int64_t(b) * T * lddk + int64_t(g) * HS, lddk);
    }
}

// ---- cross-entropy ----

// One row (ops_ref.h cross_entropy): the arg max, the loss from lse = max + log sum exp(z - max) (the sum
// in double lanes) and, if dscale != 0, the gradient written over z.
LORA_VECTOR_CLONES void cross_entropy_row(float* z, float* loss, int32_t* argmax, int32_t y, int64_t V, double eps,
                                          double dscale) {
  // The first arg max as the reference finds it (`z[v] > z[best]`): NaNs never win, except at 0.
  v8f mv = splat(-INFINITY);
  int64_t v = 0;
  for (; v + 8 <= V; v += 8) {
    const v8f x = load8(z + v);
    mv = x > mv ? x : mv;
  }
  float m = -INFINITY;
  for (int l = 0; l < 8; ++l) m = mv[l] > m ? mv[l] : m;
  for (; v < V; ++v) m = z[v] > m ? z[v] : m;
  int64_t best = 0;
  if (!std::isnan(z[0]) && z[0] < m)
    while (best < V && !(z[best] == m)) ++best;
  if (argmax) *argmax = int32_t(best);
  if (y == ref::ignore_index) {
    *loss = 0.0f;
    if (dscale != 0) std::fill(z, z + V, 0.0f);
    return;
  }
  const float maxval = z[best];
  v4d acc = {}, accz = {};
  v = 0;
  for (; v + 8 <= V; v += 8) {
    const v8f x = load8(z + v);
    acc = widen_add(acc, exp8(x - maxval));
    if (eps != 0) accz = widen_add(accz, x);
  }
  double sumexp = acc[0] + acc[1] + acc[2] + acc[3], sumz = accz[0] + accz[1] + accz[2] + accz[3];
  for (; v < V; ++v) {
    sumexp += std::exp(double(z[v]) - maxval);
    sumz += z[v];
  }
  const double lse = double(maxval) + std::log(sumexp);
  const double zy = z[y];
  *loss = float((1.0 - eps) * (lse - zy) + eps * (lse - sumz / double(V)));
  if (dscale == 0) return;
  const float lsef = float(lse), ds = float(dscale), base = float(eps / double(V));
  v = 0;
  for (; v + 8 <= V; v += 8) store8(z + v, ds * (exp8(load8(z + v) - lsef) - base));
  for (; v < V; ++v) z[v] = float(dscale * (std::exp(double(z[v]) - lse) - eps / double(V)));
  // The target's term in double: p_y - 1 cancels.
  z[y] = float(dscale * (std::exp(zy - lse) - eps / double(V) - (1.0 - eps)));
}

void fast_cross_entropy(float* logits, int64_t ld, float* losses, int32_t* argmax, const int32_t* targets, int64_t N,
                        int64_t V, double eps, double dscale) {
  for (int64_t i = 0; i < N; ++i)
    if (targets[i] != ref::ignore_index && (targets[i] < 0 || targets[i] >= V))
      throw std::out_of_range("cross_entropy: target " + std::to_string(targets[i]) + " in row " + std::to_string(i) +
                              " is outside [0, " + std::to_string(V) + ") and is not -100");
  pool().parallel_for(N, std::max<int64_t>(1, kGrainElems / V), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      cross_entropy_row(logits + i * ld, losses + i, argmax ? argmax + i : nullptr, targets[i], V, eps, dscale);
  });
}

std::string fast_run_note() {
  CpuPool& p = pool();
  const char* core = openblas_get_corename();
  return "cpu: " + std::to_string(p.threads()) + (p.threads() == 1 ? " thread" : " threads") + " (" + p.origin() +
         ") for its loops and OpenBLAS (kernel " + (core ? core : "unknown") +
         "); OPENBLAS_NUM_THREADS sets how many, --device ref runs the plain reference";
}

}  // namespace

const CpuKernels& cpu_fast_kernels() {
  static const CpuKernels k = [] {
    CpuKernels t = cpu_ref_kernels();
    t.name = "cpu";
    t.run_note = fast_run_note;
    t.bias_add = fast_bias_add;
    t.add = fast_add;
    t.layernorm_forward = fast_layernorm_forward;
    t.layernorm_backward = fast_layernorm_backward;
    t.gelu_forward = fast_gelu_forward;
    t.gelu_backward = fast_gelu_backward;
    t.attention_forward = fast_attention_forward;
    t.attention_backward = fast_attention_backward;
    t.cross_entropy = fast_cross_entropy;
    t.dropout_apply = fast_dropout_apply;
    return t;
  }();
  return k;
}

std::unique_ptr<Backend> backend_cpu_fast_create() {
  CpuPool::get();  // sizes the pool and OpenBLAS before the first op
  return backend_cpu_with(cpu_fast_kernels());
}

}  // namespace lora
