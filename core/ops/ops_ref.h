// Reference kernels for the op set (core/ops/backend.h), templated on the element type on raw pointers.
//
// core/ops/backend_cpu.cpp instantiates them with Real = float (the CPU backend); tests/test_ops.cpp
// instantiates them with Real = double to check every backward against central finite differences.
// They are plain loops, written to be obviously correct rather than fast; reductions (dot products,
// row statistics, sums over the vocabulary) accumulate in double whatever Real is, so the float
// instantiation is as close to the exact answer as its inputs and outputs allow.
//
// Conventions are those of backend.h: matrices are row-major with a leading dimension `ld` (elements
// between consecutive rows), which lets a kernel read or write a column block of a fused buffer;
// parameter gradients are accumulated (+=) and skipped when their pointer is null (frozen);
// activation gradients are overwritten except where a kernel says otherwise (the norms accumulate
// into dinp, the residual stream). Shapes are checked by the caller (backend_cpu.cpp), not here, except
// for data-dependent values (token ids, targets, lengths) that only the loops see.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops/backend.h"

namespace lora {
namespace ref {

// ---- linear algebra ----

// out = alpha * op(a) op(b) + beta * out; op(a) (M,K), op(b) (K,N), out (M,N). With beta == 0 the old
// contents of out are not read (BLAS semantics: NaN garbage in out must not leak through 0 * NaN).
template <class Real>
void matmul(Real* out, int64_t ldo, const Real* a, int64_t lda, const Real* b, int64_t ldb, int64_t M,
            int64_t N, int64_t K, bool trans_a, bool trans_b, Real alpha, Real beta) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        double aik = trans_a ? a[k * lda + i] : a[i * lda + k];
        double bkj = trans_b ? b[j * ldb + k] : b[k * ldb + j];
        acc += aik * bkj;
      }
      Real prev = beta == Real(0) ? Real(0) : beta * out[i * ldo + j];
      out[i * ldo + j] = Real(alpha * acc) + prev;
    }
  }
}

// out[i, :] += bias[:]                                            out (N,C) with leading dim ldo
template <class Real>
void bias_add(Real* out, int64_t ldo, const Real* bias, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) out[i * ldo + c] += bias[c];
}

// dbias[:] += sum_i dout[i, :]
template <class Real>
void bias_backward(Real* dbias, const Real* dout, int64_t ldd, int64_t N, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0;
    for (int64_t i = 0; i < N; ++i) acc += dout[i * ldd + c];
    dbias[c] += Real(acc);
  }
}

// ---- normalisation ----

// LayerNorm (Ba et al. 2016; torch.nn.LayerNorm): biased variance over the last dim C.
// inp, out (N,C); mean, rstd (N). weight or bias null: 1 or 0 (no affine).
template <class Real>
void layernorm_forward(Real* out, Real* mean, Real* rstd, const Real* inp, const Real* weight,
                       const Real* bias, int64_t N, int64_t C, Real eps) {
  for (int64_t i = 0; i < N; ++i) {
    const Real* x = inp + i * C;
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    double mu = sum / C;
    double var = 0;
    for (int64_t c = 0; c < C; ++c) var += (x[c] - mu) * (x[c] - mu);
    var /= C;
    double rs = 1.0 / std::sqrt(var + double(eps));
    for (int64_t c = 0; c < C; ++c) {
      double y = (x[c] - mu) * rs;
      if (weight) y *= weight[c];
      if (bias) y += bias[c];
      out[i * C + c] = Real(y);
    }
    mean[i] = Real(mu);
    rstd[i] = Real(rs);
  }
}

// With xhat = (x - mean) * rstd and g = dout * weight:
//   dinp += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),  dweight += dout * xhat,  dbias += dout.
// dinp ACCUMULATES (backend.h: it is the residual stream). dweight, dbias null: frozen.
template <class Real>
void layernorm_backward(Real* dinp, Real* dweight, Real* dbias, const Real* dout, const Real* inp,
                        const Real* weight, const Real* mean, const Real* rstd, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i) {
    const Real* x = inp + i * C;
    const Real* dy = dout + i * C;
    double mu = mean[i], rs = rstd[i];
    double g_mean = 0, gx_mean = 0;
    for (int64_t c = 0; c < C; ++c) {
      double g = double(dy[c]) * (weight ? double(weight[c]) : 1.0);
      g_mean += g;
      gx_mean += g * (x[c] - mu) * rs;
    }
    g_mean /= C;
    gx_mean /= C;
    for (int64_t c = 0; c < C; ++c) {
      double g = double(dy[c]) * (weight ? double(weight[c]) : 1.0);
      double xhat = (x[c] - mu) * rs;
      dinp[i * C + c] += Real(rs * (g - g_mean - xhat * gx_mean));
    }
  }
  if (!dweight && !dbias) return;
  for (int64_t c = 0; c < C; ++c) {
    double dw = 0, db = 0;
    for (int64_t i = 0; i < N; ++i) {
      double dy = dout[i * C + c];
      dw += dy * (inp[i * C + c] - double(mean[i])) * double(rstd[i]);
      db += dy;
    }
    if (dweight) dweight[c] += Real(dw);
    if (dbias) dbias[c] += Real(db);
  }
}

// RMSNorm (Zhang & Sennrich 2019; HF LlamaRMSNorm): out = inp * rstd * weight,
// rstd = 1 / sqrt(mean_c(inp^2) + eps).                           inp, out (N,C); rstd (N)
template <class Real>
void rmsnorm_forward(Real* out, Real* rstd, const Real* inp, const Real* weight, int64_t N, int64_t C,
                     Real eps) {
  for (int64_t i = 0; i < N; ++i) {
    const Real* x = inp + i * C;
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double(x[c]) * x[c];
    double rs = 1.0 / std::sqrt(ss / C + double(eps));
    for (int64_t c = 0; c < C; ++c) out[i * C + c] = Real(x[c] * rs * (weight ? double(weight[c]) : 1.0));
    rstd[i] = Real(rs);
  }
}

// With xhat = x * rstd and g = dout * weight (d rstd / dx_c = -rstd^3 x_c / C):
//   dinp += rstd * (g - xhat * mean_c(g * xhat)),  dweight += dout * xhat.   dinp ACCUMULATES.
template <class Real>
void rmsnorm_backward(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                      const Real* rstd, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i) {
    const Real* x = inp + i * C;
    const Real* dy = dout + i * C;
    double rs = rstd[i];
    double gx_mean = 0;
    for (int64_t c = 0; c < C; ++c) gx_mean += double(dy[c]) * (weight ? double(weight[c]) : 1.0) * x[c] * rs;
    gx_mean /= C;
    for (int64_t c = 0; c < C; ++c) {
      double g = double(dy[c]) * (weight ? double(weight[c]) : 1.0);
      dinp[i * C + c] += Real(rs * (g - x[c] * rs * gx_mean));
    }
  }
  if (!dweight) return;
  for (int64_t c = 0; c < C; ++c) {
    double dw = 0;
    for (int64_t i = 0; i < N; ++i) dw += double(dout[i * C + c]) * inp[i * C + c] * double(rstd[i]);
    dweight[c] += Real(dw);
  }
}

// ---- activations ----

constexpr double pi = 3.14159265358979323846;

// GELU. tanh form: HF "gelu_new" / GPT-2, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
// erf form: the exact 0.5 x (1 + erf(x / sqrt(2))) (BERT/RoBERTa "gelu").
inline double gelu_value(double x, GeluKind kind) {
  if (kind == GeluKind::erf) return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  const double s = std::sqrt(2.0 / pi);
  return 0.5 * x * (1.0 + std::tanh(s * (x + 0.044715 * x * x * x)));
}

// d gelu / dx. tanh: 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 * 0.044715 x^2);
// erf: Phi(x) + x phi(x) with the standard normal cdf Phi and density phi.
inline double gelu_grad(double x, GeluKind kind) {
  if (kind == GeluKind::erf)
    return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * pi);
  const double s = std::sqrt(2.0 / pi);
  double th = std::tanh(s * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * 0.044715 * x * x);
}

template <class Real>
void gelu_forward(Real* out, const Real* inp, int64_t n, GeluKind kind) {
  for (int64_t i = 0; i < n; ++i) out[i] = Real(gelu_value(inp[i], kind));
}

// dinp = dout * gelu'(inp), overwritten; dinp may alias dout (each element is read before written).
template <class Real>
void gelu_backward(Real* dinp, const Real* dout, const Real* inp, int64_t n, GeluKind kind) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = Real(double(dout[i]) * gelu_grad(inp[i], kind));
}

// tanh (the pooler/classifier activation of BERT and RoBERTa).
template <class Real>
void tanh_forward(Real* out, const Real* inp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Real(std::tanh(double(inp[i])));
}

// dinp = dout * (1 - out^2), with out = tanh(inp) the forward's output; dinp may alias dout.
template <class Real>
void tanh_backward(Real* dinp, const Real* dout, const Real* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dinp[i] = Real(double(dout[i]) * (1.0 - double(out[i]) * double(out[i])));
}

// SwiGLU (Shazeer 2020; HF LlamaMLP): out = silu(gate) * up, silu(g) = g * sigmoid(g).
template <class Real>
void swiglu_forward(Real* out, const Real* gate, const Real* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = gate[i];
    out[i] = Real(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

// dgate = dout * up * sigmoid(g) (1 + g (1 - sigmoid(g))), dup = dout * silu(g); both overwritten.
template <class Real>
void swiglu_backward(Real* dgate, Real* dup, const Real* dout, const Real* gate, const Real* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double g = gate[i], u = up[i], dy = dout[i];
    double sig = 1.0 / (1.0 + std::exp(-g));
    double dg = dy * u * sig * (1.0 + g * (1.0 - sig));
    double du = dy * g * sig;
    dgate[i] = Real(dg);
    dup[i] = Real(du);
  }
}

// Rotary position embedding (Su et al. 2021) in the HF "rotate_half" convention: within each head the
// pair (x_i, x_{i+HS/2}) rotates by angle t * theta^(-2i/HS), t the position in the sequence:
//   x_i' = x_i cos - x_{i+HS/2} sin,   x_{i+HS/2}' = x_{i+HS/2} cos + x_i sin.
// x: (B*T rows, leading dim ldx), head h in columns [h*HS, (h+1)*HS). inverse rotates by -angle, which
// is also the backward (a rotation's transpose is its inverse). Angles are computed in double. pos, if
// given, holds each row's position instead of t (rope_at).
template <class Real>
void rope(Real* x, int64_t ldx, int B, int T, int nheads, int HS, double theta, bool inverse,
          const int32_t* pos = nullptr) {
  const int half = HS / 2;
  for (int64_t row = 0; row < int64_t(B) * T; ++row) {
    const int t = pos ? pos[row] : int(row % T);
    for (int i = 0; i < half; ++i) {
      double angle = double(t) * std::pow(theta, -2.0 * i / HS);
      double c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
      for (int h = 0; h < nheads; ++h) {
        Real* xh = x + row * ldx + int64_t(h) * HS;
        double x1 = xh[i], x2 = xh[i + half];
        xh[i] = Real(x1 * c - x2 * s);
        xh[i + half] = Real(x2 * c + x1 * s);
      }
    }
  }
}

// ---- attention ----

// Key t2 is visible to query t of batch row b: inside the sequence and, when causal, not in the future
// and, with a sliding window, fewer than s.window positions back (AttentionShape, backend.h).
inline bool attention_visible(const AttentionShape& s, const int32_t* lengths, int b, int t, int t2) {
  if (s.causal && t2 > t) return false;
  if (s.window > 0 && t - t2 >= s.window) return false;
  return !lengths || t2 < lengths[b];
}

inline void attention_check_lengths(const AttentionShape& s, const int32_t* lengths) {
  if (!lengths) return;
  for (int b = 0; b < s.B; ++b)
    if (lengths[b] < 0 || lengths[b] > s.T)
      throw std::out_of_range("attention: lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) +
                              " is outside [0, T = " + std::to_string(s.T) + "]");
}

// Scaled dot-product attention (Vaswani et al. 2017), grouped K/V heads as in GQA (Ainslie et al. 2023):
// query head h reads kv head h / (NH / NKV). q (N, NH*HS), k and v (N, NKV*HS), out (N, NH*HS), rows
// ordered (b, t); probs (B, NH, T, T) receives the softmax probabilities (0 for masked keys) before
// dropout. A query with no visible key (a padding row of a bidirectional batch with length 0) gets
// probabilities 0 and output 0 rather than 0/0. With drop.p > 0, out = dropout(P) v: each probability
// is kept by attention_keep (backend.h) and scaled by 1/(1-p), or zeroed.
template <class Real>
void attention_forward(Real* out, int64_t ldo, const Real* q, int64_t ldq, const Real* k, int64_t ldk,
                       const Real* v, int64_t ldv, Real* probs, const AttentionShape& s,
                       const int32_t* lengths, const AttentionDropout& drop) {
  attention_check_lengths(s, lengths);
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, group = s.NH / s.NKV;
  const double scale = 1.0 / std::sqrt(double(HS));
  const bool dropout = drop.p > 0.0f;
  const double keep_scale = dropout ? 1.0 / (1.0 - double(drop.p)) : 1.0;
  for (int64_t bh = 0; bh < int64_t(B) * NH; ++bh) {
    const int b = int(bh / NH), h = int(bh % NH), g = h / group;
    std::vector<double> row(T);  // one query's scores, then its probabilities, kept in double
    for (int t = 0; t < T; ++t) {
      const Real* qt = q + (int64_t(b) * T + t) * ldq + int64_t(h) * HS;
      double maxval = -INFINITY;
      for (int t2 = 0; t2 < T; ++t2) {
        row[t2] = 0;
        if (!attention_visible(s, lengths, b, t, t2)) continue;
        const Real* kt = k + (int64_t(b) * T + t2) * ldk + int64_t(g) * HS;
        double dot = 0;
        for (int d = 0; d < HS; ++d) dot += double(qt[d]) * kt[d];
        row[t2] = dot * scale;
        maxval = std::max(maxval, row[t2]);
      }
      double sum = 0;
      for (int t2 = 0; t2 < T; ++t2) {
        row[t2] = attention_visible(s, lengths, b, t, t2) ? std::exp(row[t2] - maxval) : 0.0;
        sum += row[t2];
      }
      Real* p = probs + (bh * T + t) * T;
      for (int t2 = 0; t2 < T; ++t2) {
        row[t2] = sum > 0 ? row[t2] / sum : 0.0;
        p[t2] = Real(row[t2]);
      }
      if (dropout)
        for (int t2 = 0; t2 < T; ++t2) row[t2] = attention_keep(drop, NH, T, b, h, t, t2) ? row[t2] * keep_scale : 0.0;
      Real* ot = out + (int64_t(b) * T + t) * ldo + int64_t(h) * HS;
      for (int d = 0; d < HS; ++d) {
        double acc = 0;
        for (int t2 = 0; t2 < T; ++t2) acc += row[t2] * v[(int64_t(b) * T + t2) * ldv + int64_t(g) * HS + d];
        ot[d] = Real(acc);
      }
    }
  }
}

// Backward from the saved probabilities P: dP = dout v^T, dS = P * (dP - sum_t2 P dP) (softmax
// backward), dq = scale dS k, dk = scale dS^T q, dv = P^T dout. dq, dk, dv are overwritten; the heads of
// one kv group accumulate into the same dk, dv columns, so the loop runs over (b, kv head) pairs.
// With dropout (Pd = P * keep / (1-p), out = Pd v), the forward's mask is regenerated: dv = Pd^T dout,
// and dP = keep / (1-p) * dout v^T enters the softmax backward in place of dout v^T.
template <class Real>
void attention_backward(Real* dq, int64_t lddq, Real* dk, int64_t lddk, Real* dv, int64_t lddv,
                        const Real* dout, int64_t lddo, const Real* q, int64_t ldq, const Real* k, int64_t ldk,
                        const Real* v, int64_t ldv, const Real* probs, const AttentionShape& s,
                        const AttentionDropout& drop) {
  const int B = s.B, T = s.T, NH = s.NH, NKV = s.NKV, HS = s.HS, group = s.NH / s.NKV;
  const double scale = 1.0 / std::sqrt(double(HS));
  const bool dropout = drop.p > 0.0f;
  const double keep_scale = dropout ? 1.0 / (1.0 - double(drop.p)) : 1.0;
  // The factor dropout puts on probability (t, t2) of head h: keep / (1-p).
  auto keep = [&](int b, int h, int t, int t2) {
    return attention_keep(drop, NH, T, b, h, t, t2) ? keep_scale : 0.0;
  };
  for (int64_t bg = 0; bg < int64_t(B) * NKV; ++bg) {
    const int b = int(bg / NKV), g = int(bg % NKV);
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < HS; ++d) {
        dk[(int64_t(b) * T + t) * lddk + int64_t(g) * HS + d] = Real(0);
        dv[(int64_t(b) * T + t) * lddv + int64_t(g) * HS + d] = Real(0);
      }
    for (int h = g * group; h < (g + 1) * group; ++h) {
      for (int t = 0; t < T; ++t) {
        const Real* p = probs + ((int64_t(b) * NH + h) * T + t) * T;
        const Real* dot = dout + (int64_t(b) * T + t) * lddo + int64_t(h) * HS;
        const Real* qt = q + (int64_t(b) * T + t) * ldq + int64_t(h) * HS;
        double pdp = 0;  // sum_t2 P dP
        for (int t2 = 0; t2 < T; ++t2) {
          const Real* vt = v + (int64_t(b) * T + t2) * ldv + int64_t(g) * HS;
          double dp = 0;
          for (int d = 0; d < HS; ++d) dp += double(dot[d]) * vt[d];
          if (dropout) dp *= keep(b, h, t, t2);
          pdp += double(p[t2]) * dp;
        }
        Real* dqt = dq + (int64_t(b) * T + t) * lddq + int64_t(h) * HS;
        for (int d = 0; d < HS; ++d) dqt[d] = Real(0);
        for (int t2 = 0; t2 < T; ++t2) {
          if (p[t2] == Real(0)) continue;  // masked (or underflowed): contributes nothing below
          const int64_t r2 = int64_t(b) * T + t2;
          const Real* vt = v + r2 * ldv + int64_t(g) * HS;
          const Real* kt = k + r2 * ldk + int64_t(g) * HS;
          double dp = 0;
          for (int d = 0; d < HS; ++d) dp += double(dot[d]) * vt[d];
          const double factor = dropout ? keep(b, h, t, t2) : 1.0;
          if (dropout) dp *= factor;
          double ds = double(p[t2]) * (dp - pdp) * scale;
          const double pd = dropout ? double(p[t2]) * factor : double(p[t2]);  // the probability after dropout
          Real* dkt = dk + r2 * lddk + int64_t(g) * HS;
          Real* dvt = dv + r2 * lddv + int64_t(g) * HS;
          for (int d = 0; d < HS; ++d) {
            dqt[d] += Real(ds * kt[d]);
            dkt[d] += Real(ds * qt[d]);
            dvt[d] += Real(pd * dot[d]);
          }
        }
      }
    }
  }
}

// Attention over a key/value cache, for incremental decoding (the shape of FlashAttention's
// flash_attn_with_kvcache): k and v of T new tokens per row are first written into cache slots
// slot0..slot0+T-1, then query (r, t) attends to row r's slots j with start[r] <= j <= slot0 + t and,
// with a sliding window, slot0 + t - j < s.window (a row's slots are its positions plus a constant, the
// left padding, so this is the window on positions). q, out (R*T, NH*HS) and k, v (R*T, NKV*HS) have
// rows ordered (r, t). The caches are time-major, (S, RC, NKV*HS) contiguous with RC >= R physical rows
// per slot: row r writes its new tokens to physical row r, and reads slot j < slot0 from physical row
// slot_rows[j*R + r] (r itself when slot_rows is null), so beam search reorders rows by rewriting that
// table instead of moving the cache (a block table with blocks of one token, as in paged attention). A
// query with no visible slot (left padding not reached yet) gets output 0. Scores, softmax and the
// weighted sum accumulate in double.
template <class Real>
void attention_decode(Real* out, int64_t ldo, const Real* q, int64_t ldq, const Real* k, int64_t ldk,
                      const Real* v, int64_t ldv, Real* k_cache, Real* v_cache, int S, int RC,
                      const int32_t* start, const int32_t* slot_rows, int slot0, const AttentionShape& s) {
  const int R = s.B, T = s.T, NH = s.NH, NKV = s.NKV, HS = s.HS, group = s.NH / s.NKV;
  const int64_t CKV = int64_t(NKV) * HS;
  if (slot0 < 0 || slot0 + T > S)
    throw std::out_of_range("attention_decode: slots [" + std::to_string(slot0) + ", " + std::to_string(slot0 + T) +
                            ") do not fit in a cache of " + std::to_string(S) + " slots");
  for (int r = 0; r < R; ++r)
    if (start[r] < 0 || start[r] > S)
      throw std::out_of_range("attention_decode: start[" + std::to_string(r) + "] = " + std::to_string(start[r]) +
                              " is outside [0, " + std::to_string(S) + "]");
  if (slot_rows)
    for (int64_t i = 0; i < int64_t(slot0) * R; ++i)
      if (slot_rows[i] < 0 || slot_rows[i] >= RC)
        throw std::out_of_range("attention_decode: slot_rows[" + std::to_string(i) + "] = " +
                                std::to_string(slot_rows[i]) + " is outside [0, " + std::to_string(RC) + ")");
  // Physical row of (slot j, row r) in the (S*RC, CKV) cache.
  auto phys = [&](int j, int r) {
    return int64_t(j) * RC + (slot_rows && j < slot0 ? slot_rows[int64_t(j) * R + r] : r);
  };
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      const int64_t src = int64_t(r) * T + t, dst = phys(slot0 + t, r);
      for (int64_t c = 0; c < CKV; ++c) {
        k_cache[dst * CKV + c] = k[src * ldk + c];
        v_cache[dst * CKV + c] = v[src * ldv + c];
      }
    }
  const double scale = 1.0 / std::sqrt(double(HS));
  for (int64_t rh = 0; rh < int64_t(R) * NH; ++rh) {
    const int r = int(rh / NH), h = int(rh % NH), g = h / group;
    std::vector<double> row(size_t(slot0) + T), acc(HS);
    for (int t = 0; t < T; ++t) {
      const int64_t qrow = int64_t(r) * T + t;
      const Real* qt = q + qrow * ldq + int64_t(h) * HS;
      const int j1 = slot0 + t + 1;  // visible slots [j0, j1)
      const int j0 = s.window > 0 ? std::max(start[r], j1 - s.window) : start[r];
      double maxval = -INFINITY, sum = 0;
      for (int j = j0; j < j1; ++j) {
        const Real* kj = k_cache + phys(j, r) * CKV + int64_t(g) * HS;
        double dot = 0;
        for (int d = 0; d < HS; ++d) dot += double(qt[d]) * kj[d];
        row[j] = dot * scale;
        maxval = std::max(maxval, row[j]);
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int j = j0; j < j1; ++j) {
        const double p = std::exp(row[j] - maxval);
        const Real* vj = v_cache + phys(j, r) * CKV + int64_t(g) * HS;
        for (int d = 0; d < HS; ++d) acc[d] += p * vj[d];
        sum += p;
      }
      Real* ot = out + qrow * ldo + int64_t(h) * HS;
      for (int d = 0; d < HS; ++d) ot[d] = sum > 0 ? Real(acc[d] / sum) : Real(0);
    }
  }
}

// ---- embeddings ----

// out[b,t,:] = wte[tokens[b,t],:] (+ wpe[t,:] when wpe is not null).   tokens (B,T), wte (V,C), out (B,T,C)
template <class Real>
void embedding_forward(Real* out, const int32_t* tokens, const Real* wte, const Real* wpe, int B, int T,
                       int64_t C, int64_t V) {
  for (int64_t n = 0; n < int64_t(B) * T; ++n)
    if (tokens[n] < 0 || tokens[n] >= V)
      throw std::out_of_range("embedding: token id " + std::to_string(tokens[n]) + " at position " +
                              std::to_string(n) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  for (int64_t n = 0; n < int64_t(B) * T; ++n) {
    const Real* e = wte + int64_t(tokens[n]) * C;
    const Real* p = wpe ? wpe + (n % T) * C : nullptr;
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = p ? e[c] + p[c] : e[c];
  }
}

// dwte[tokens[b,t],:] += dout[b,t,:], dwpe[t,:] += dout[b,t,:]; either null: frozen. Serial over rows
// because repeated tokens add into the same row of dwte.
template <class Real>
void embedding_backward(Real* dwte, Real* dwpe, const Real* dout, const int32_t* tokens, int B, int T, int64_t C) {
  for (int64_t n = 0; n < int64_t(B) * T; ++n) {
    const Real* d = dout + n * C;
    if (dwte)
      for (int64_t c = 0; c < C; ++c) dwte[int64_t(tokens[n]) * C + c] += d[c];
    if (dwpe)
      for (int64_t c = 0; c < C; ++c) dwpe[(n % T) * C + c] += d[c];
  }
}

// ---- loss ----

// Softmax cross-entropy per row of logits (N,V) (leading dim ld) against targets (N), -100 ignored.
// With lse = log sum_v exp(z_v) (computed as max + log sum exp(z - max)), log p_v = z_v - lse:
//   loss = (1 - eps) * (lse - z_y) + eps * (lse - mean_v z_v)          (PyTorch label_smoothing)
//   dloss/dz_v = p_v - (1 - eps) [v == y] - eps / V
// losses (N) gets each row's loss, 0 where ignored; argmax (N), if not null, each row's first arg max
// (ignored rows too: generation has no targets). If dscale != 0 the logits are overwritten by
// dscale * dloss/dlogits, 0 on ignored rows.
constexpr int32_t ignore_index = -100;

template <class Real>
void cross_entropy(Real* logits, int64_t ld, Real* losses, int32_t* argmax, const int32_t* targets,
                   int64_t N, int64_t V, double eps, double dscale) {
  for (int64_t i = 0; i < N; ++i)
    if (targets[i] != ignore_index && (targets[i] < 0 || targets[i] >= V))
      throw std::out_of_range("cross_entropy: target " + std::to_string(targets[i]) + " in row " +
                              std::to_string(i) + " is outside [0, " + std::to_string(V) + ") and is not -100");
  for (int64_t i = 0; i < N; ++i) {
    Real* z = logits + i * ld;
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (z[v] > z[best]) best = v;
    if (argmax) argmax[i] = int32_t(best);
    const int32_t y = targets[i];
    if (y == ignore_index) {
      losses[i] = Real(0);
      if (dscale != 0)
        for (int64_t v = 0; v < V; ++v) z[v] = Real(0);
      continue;
    }
    double maxval = z[best], sumexp = 0, sumz = 0;
    for (int64_t v = 0; v < V; ++v) {
      sumexp += std::exp(double(z[v]) - maxval);
      sumz += z[v];
    }
    double lse = maxval + std::log(sumexp);
    losses[i] = Real((1.0 - eps) * (lse - double(z[y])) + eps * (lse - sumz / double(V)));
    if (dscale == 0) continue;
    for (int64_t v = 0; v < V; ++v) {
      double p = std::exp(double(z[v]) - lse);
      double d = p - eps / double(V) - (v == y ? 1.0 - eps : 0.0);
      z[v] = Real(dscale * d);
    }
  }
}

// Squared error per row (PyTorch MSELoss with reduction 'sum' split by row): preds (N) with stride ldp,
// targets (N). losses[i] = (p_i - y_i)^2; if dscale != 0, preds are overwritten by dscale * 2 (p_i - y_i).
template <class Real>
void mse_loss(Real* preds, int64_t ldp, Real* losses, const float* targets, int64_t N, double dscale) {
  for (int64_t i = 0; i < N; ++i) {
    const double d = double(preds[i * ldp]) - double(targets[i]);
    losses[i] = Real(d * d);
    if (dscale != 0) preds[i * ldp] = Real(dscale * 2.0 * d);
  }
}

// ---- memory ----

// dst = src, (rows, cols) matrices with leading dims ldd, lds (a strided gather or scatter of rows).
template <class Real>
void mat_copy(Real* dst, int64_t ldd, const Real* src, int64_t lds, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[i * ldd + j] = src[i * lds + j];
}

// ---- dropout ----

// out = inp * keep / (1 - p), keep[i] = rng_uniform(seed, offset + i) >= p (backend.h), the same mask on
// every backend and in both directions (the backward calls this with dout). p == 0: a plain copy;
// p == 1: zeros. out may alias inp.
template <class Real>
void dropout_apply(Real* out, const Real* inp, int64_t n, float p, uint64_t seed, uint64_t offset) {
  if (p == 0.0f) {
    for (int64_t i = 0; i < n; ++i) out[i] = inp[i];
    return;
  }
  const double keep_scale = p < 1.0f ? 1.0 / (1.0 - double(p)) : 0.0;
  for (int64_t i = 0; i < n; ++i) {
    bool keep = rng_uniform(seed, offset + uint64_t(i)) >= p;
    out[i] = keep ? Real(double(inp[i]) * keep_scale) : Real(0);
  }
}

// ---- reductions and the optimizer ----

template <class Real>
double sum_squares(const Real* x, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]) * x[i];
  return acc;
}

template <class Real>
bool all_finite(const Real* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// One AdamW step (Loshchilov & Hutter 2019), laid out as torch.optim.AdamW (foreach=False):
//   param *= 1 - lr * wd                                  (decoupled decay, only when `decay`)
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,      g = grad * grad_scale
//   param -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// which is p -= lr * mhat / (sqrt(vhat) + eps) with mhat = m / (1 - b1^t), vhat = v / (1 - b2^t).
// Bias corrections in double, as PyTorch computes them in Python floats.
template <class Real>
void adamw_step(Real* param, const Real* grad, Real* m, Real* v, int64_t n, const AdamWParams& p, bool decay) {
  const double lr = p.lr, b1 = p.beta1, b2 = p.beta2;
  const double bc1 = 1.0 - std::pow(b1, double(p.step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, double(p.step)));
  const Real step_size = Real(lr / bc1);
  const Real decay_factor = decay ? Real(1.0 - lr * double(p.weight_decay)) : Real(1);
  const Real rb1 = Real(b1), rb2 = Real(b2), eps = Real(p.eps), gs = Real(p.grad_scale), rbc2 = Real(bc2_sqrt);
  for (int64_t i = 0; i < n; ++i) {
    Real g = grad[i] * gs;
    m[i] = rb1 * m[i] + (Real(1) - rb1) * g;
    v[i] = rb2 * v[i] + (Real(1) - rb2) * g * g;
    param[i] = param[i] * decay_factor - step_size * m[i] / (std::sqrt(v[i]) / rbc2 + eps);
  }
}

}  // namespace ref
}  // namespace lora
