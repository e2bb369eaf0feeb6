// The op set: the seam between the model and the hardware (docs/ARCHITECTURE.md, "The op seam").
//
// The model code (core/model/model.cpp) is written once against this interface and never branches on the
// device. core/ops/backend_cpu.cpp is the reference: fp32, plain loops, BLAS for GEMM, obviously correct.
// cuda/ implements the same ops with the same names and argument order (bf16/fp16 activations, fp32
// accumulation). Shape letters: B batch, T time, C channels, V vocab, NH heads, HS head size, N = B*T rows.
//
// Contract for gradients: parameter gradients (dweight, dbias, dwte, ...) are ACCUMULATED with +=;
// activation gradients (dinp, dq, ...) are OVERWRITTEN unless the op says otherwise. An empty Tensor
// passed as a parameter gradient means "frozen, do not compute".
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/base/splitmix.h"
#include "core/base/tensor.h"

namespace lora {

enum class GeluKind { tanh, erf };

// What a fused GEMM does after the product (cuBLASLt's epilogues on CUDA). The GELU is the tanh form.
enum class Epilogue {
  bias,       // out = op(a) op(b) + bias                                  (matmul, bias_add)
  bias_gelu,  // aux = op(a) op(b) (+ bias); out = gelu(aux)               (matmul, bias_add, gelu_forward)
  dgelu,      // out = (op(a) op(b)) * gelu'(aux): a GELU's input gradient (matmul, gelu_backward)
};

struct AttentionShape {
  int B = 0, T = 0;   // batch, time (padded length of this batch)
  int NH = 0;         // query heads
  int NKV = 0;        // key/value heads (== NH without grouped-query attention)
  int HS = 0;         // head size
  bool causal = true; // causal (decoder) or bidirectional (encoder)
  // Sliding-window attention (Mistral's sliding_window, Qwen2's on its sliding layers: the model passes
  // ModelConfig::window_of(layer)), causal only; 0 = no window. Query t sees key t2 iff t2 <= t and
  // t - t2 < window: itself and the window - 1 keys before it. That is transformers'
  // rule (masking_utils.py: sliding_window_overlay, kv_idx > q_idx - sliding_window, and-ed with the
  // causal kv_idx <= q_idx; MistralModel builds it for eager and SDPA attention alike, and its
  // DynamicSlidingWindowLayer keeps the last sliding_window - 1 keys for decoding). Padding, grouped
  // K/V heads and dropout apply on top of it unchanged.
  int window = 0;
};

// Dropout on the attention probabilities (HF's attention_probs_dropout_prob / attn_pdrop), applied as
// FlashAttention does: probability (b, h, query i, key j) is kept when
// rng_uniform(seed, offset + ((b*NH + h)*T + i)*T + j) >= p (attention_keep below) and kept ones are
// scaled by 1/(1-p); the backward regenerates the same mask. p = 0: no dropout.
struct AttentionDropout {
  float p = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// One trainable tensor for the fused AdamW update.
struct AdamWSlot {
  Tensor* param = nullptr;       // fp32 master weights, updated in place
  const Tensor* grad = nullptr;  // fp32 gradient, same shape
  Tensor* m = nullptr;           // fp32 first moment
  Tensor* v = nullptr;           // fp32 second moment
  Tensor* shadow = nullptr;      // optional lower-precision copy used by the forward pass; refreshed
  bool decay = true;             // apply weight decay (off for biases and norms)
};

struct AdamWParams {
  float lr = 0, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0;
  int64_t step = 1;        // 1-based step number, for bias correction
  float grad_scale = 1.0f; // gradients are multiplied by this first (clipping, 1/loss_scale)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;           // "cpu", "cuda:0 (NVIDIA H100 ...)"
  // A line on how the backend runs that a user may want to change ("" for none): the CPU's thread count.
  virtual std::string run_note() const { return ""; }
  virtual DType activation_dtype() const = 0;     // f32 on the CPU; bf16 or f16 on CUDA
  // Bytes the device can still allocate; -1 where unknown (the CPU: the OS decides).
  virtual int64_t memory_free() { return -1; }
  // The most device memory this backend's tensors and workspaces have held at once so far (its
  // allocator's high-water mark, as torch.cuda.max_memory_allocated counts); -1 where unknown (the CPU).
  virtual int64_t memory_peak() { return -1; }
  // Device memory the backend holds for its whole life besides tensors (CUDA: cuBLASLt's workspace).
  virtual int64_t workspace_bytes() const { return 0; }

  // ---- memory ----
  // A zero-filled tensor on this backend's device.
  virtual Tensor alloc(std::vector<int64_t> shape, DType dtype) = 0;
  // Copy a host tensor (f32 or i32) into dst (same numel), converting f32 to dst's dtype.
  virtual void upload(Tensor& dst, const Tensor& host) = 0;
  // A host copy of src, as f32 (float dtypes) or i32.
  virtual Tensor download(const Tensor& src) = 0;
  // dst = src on this device, converting dtypes; same numel.
  virtual void copy(Tensor& dst, const Tensor& src) = 0;
  virtual void fill(Tensor& t, float value) = 0;
  // dst = src for two (rows, cols) matrices of the same dtype with any leading dimensions: a strided
  // gather or scatter of rows (the first token of each sequence: ld = T*C).
  virtual void mat_copy(const MatRef& dst, const MatRef& src) = 0;

  // ---- linear algebra ----
  // out = alpha * op(a) op(b) + beta * out, op(x) = x or x^T. Shapes: op(a) (M,K), op(b) (K,N), out (M,N).
  virtual void matmul(const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a, bool trans_b,
                      float alpha, float beta) = 0;
  // out = epilogue(op(a) op(b)), overwriting out: one pass over out where the backend can fuse (CUDA:
  // cuBLASLt's BIAS, GELU_AUX_BIAS and DGELU epilogues), otherwise the ops listed beside each Epilogue,
  // which is what this default does (the CPU's reference). out and aux are whole (M,N) tensors of one
  // dtype; aux is written by bias_gelu (the GELU's input, kept for the backward) and read by dgelu.
  // bias (N) is required by `bias`, optional (empty) for bias_gelu, and must be empty for dgelu.
  virtual void matmul_epilogue(Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
                               Epilogue epilogue, const Tensor& bias, Tensor& aux);
  // out[i, :] += bias[:]                                        out (N,C), bias (C)
  virtual void bias_add(const MatRef& out, const Tensor& bias) = 0;
  // dbias[:] += sum_i dout[i, :]
  virtual void bias_backward(Tensor& dbias, const MatRef& dout) = 0;
  // y = a + alpha * b, elementwise over equal numel; y may alias a or b.
  virtual void add(Tensor& y, const Tensor& a, const Tensor& b, float alpha) = 0;
  // y *= alpha
  virtual void scale(Tensor& y, float alpha) = 0;

  // ---- normalisation ----
  // out = (inp - mean) * rstd * weight + bias over the last dim C.  inp, out (N,C); mean, rstd (N) f32.
  virtual void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                                 const Tensor& weight, const Tensor& bias, float eps) = 0;
  // dinp += (accumulates, it is the residual stream), dweight += , dbias += .
  virtual void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                                  const Tensor& inp, const Tensor& weight, const Tensor& mean,
                                  const Tensor& rstd) = 0;
  // out = inp * rstd * weight, rstd = 1/sqrt(mean(inp^2) + eps).            rstd (N) f32
  virtual void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                               float eps) = 0;
  // dinp += , dweight += .
  virtual void rmsnorm_backward(Tensor& dinp, Tensor& dweight, const Tensor& dout, const Tensor& inp,
                                const Tensor& weight, const Tensor& rstd) = 0;

  // ---- activations ----
  virtual void gelu_forward(Tensor& out, const Tensor& inp, GeluKind kind) = 0;
  // dinp = dout * gelu'(inp) (overwrite; dinp may alias dout)
  virtual void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp, GeluKind kind) = 0;
  // out = tanh(inp) (the classification head's activation).
  virtual void tanh_forward(Tensor& out, const Tensor& inp) = 0;
  // dinp = dout * (1 - out^2), from the forward's output (overwrite; dinp may alias dout).
  virtual void tanh_backward(Tensor& dinp, const Tensor& dout, const Tensor& out) = 0;
  // out = silu(gate) * up                                    all (N,F)
  virtual void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) = 0;
  // dgate, dup overwritten.
  virtual void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                               const Tensor& up) = 0;
  // Rotary position embedding in place on x viewed as (B,T,nheads,HS) (rows of x are B*T; x may be a
  // column block of a fused buffer). Pairs (i, i + HS/2) rotate by pos * theta^(-2i/HS) (the HF/LLaMA
  // "rotate_half" convention). inverse = true applies the inverse rotation (the backward pass).
  virtual void rope(const MatRef& x, int B, int T, int nheads, int HS, float theta, bool inverse) = 0;
  // The same rotation with each row's own position: row n rotates by positions[n] (i32 (x.rows) on this
  // device), for decoding, where left-padded rows reach the same slot at different positions. Forward only.
  virtual void rope_at(const MatRef& x, const Tensor& positions, int nheads, int HS, float theta) = 0;

  // ---- attention ----
  // out = softmax(q k^T / sqrt(HS) + mask) v per head. q (N, NH*HS), k and v (N, NKV*HS), out (N, NH*HS),
  // rows ordered (b, t). lengths: i32 (B) on this device; keys at t >= lengths[b] are masked out; an
  // empty tensor means no padding. s.window masks keys outside the sliding window (AttentionShape).
  // drop: dropout on the probabilities (training only; p = 0 is none). Returns what the backward needs
  // (backend-specific: the CPU keeps the probabilities before dropout, CUDA the log-sum-exp).
  virtual Tensor attention_forward(const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v,
                                   const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) = 0;
  // dq, dk, dv overwritten. drop: the forward's (the mask is regenerated, not stored).
  virtual void attention_backward(const MatRef& dq, const MatRef& dk, const MatRef& dv, const MatRef& dout,
                                  const MatRef& q, const MatRef& k, const MatRef& v, const MatRef& out,
                                  const Tensor& saved, const AttentionShape& s, const Tensor& lengths,
                                  const AttentionDropout& drop) = 0;

  // Attention of T new tokens per row against a key/value cache (incremental decoding; the shape of
  // FlashAttention's flash_attn_with_kvcache). First writes k and v into cache slots slot0..slot0+T-1,
  // then query (r,t) attends to row r's slots j with start[r] <= j <= slot0 + t (slots before start[r]
  // are left padding) and, with a sliding window, slot0 + t - j < s.window. q, out (R*T, NH*HS);
  // k, v (R*T, NKV*HS); rows ordered (r, t). k_cache, v_cache (S, RC, NKV*HS) in the activation dtype,
  // time-major with RC >= R physical rows per slot: row r writes physical row r of the new slots and
  // reads slot j < slot0 from physical row slot_rows[j*R + r] (slot_rows: i32 (slot0, R), or empty for
  // "row r itself"), so beam search reorders rows by rewriting the table, not the cache. start: i32 (R).
  // Both on this device. A query with no visible slot gets output 0. s.B = R, s.T = T, s.causal must be
  // true. Forward only.
  virtual void attention_decode(const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v,
                                Tensor& k_cache, Tensor& v_cache, const Tensor& start, const Tensor& slot_rows,
                                int slot0, const AttentionShape& s) = 0;

  // ---- embeddings ----
  // out[b,t,:] = wte[tokens[b,t],:] (+ wpe[t,:] when wpe is not empty).  tokens (B,T) i32, out (B,T,C)
  virtual void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) = 0;
  // dwte += , dwpe += (either may be empty: frozen).
  virtual void embedding_backward(Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens) = 0;

  // ---- loss ----
  // Softmax cross-entropy over each row of logits (N,V) against targets (N) i32; target -100 is ignored.
  // Label smoothing eps follows PyTorch: loss = (1-eps) * nll + eps * mean_v(-log p_v).
  // losses (N) f32 receives each row's loss (0 where ignored). argmax, if not empty, (N) i32 receives
  // each row's arg max. If dscale != 0, logits are overwritten by dscale * dloss/dlogits (0 where ignored).
  virtual void cross_entropy(const MatRef& logits, Tensor& losses, Tensor& argmax, const Tensor& targets,
                             float label_smoothing, float dscale) = 0;

  // Squared error of a regression head (PyTorch MSELoss per row): preds (N,1), targets (N) f32.
  // losses (N) f32 receives (preds[i] - targets[i])^2; if dscale != 0, preds are overwritten by
  // dscale * 2 (preds[i] - targets[i]), the gradient of dscale * sum(losses).
  virtual void mse_loss(const MatRef& preds, Tensor& losses, const Tensor& targets, float dscale) = 0;

  // ---- dropout (counter-based RNG: the same mask on every backend) ----
  // out = inp * keep / (1 - p), keep[i] = uniform(seed, offset + i) >= p. out may alias inp.
  virtual void dropout_forward(Tensor& out, const Tensor& inp, float p, uint64_t seed, uint64_t offset) = 0;
  // dinp = dout * keep / (1 - p) with the same mask. dinp may alias dout.
  virtual void dropout_backward(Tensor& dinp, const Tensor& dout, float p, uint64_t seed, uint64_t offset) = 0;

  // ---- reductions and the optimizer ----
  virtual double sum_squares(const Tensor& t) = 0;  // sum of x^2 in fp64 on the host
  virtual bool all_finite(const Tensor& t) = 0;
  // One fused AdamW step (decoupled weight decay, bias correction; Loshchilov & Hutter 2019) over all slots.
  virtual void adamw_update(const std::vector<AdamWSlot>& slots, const AdamWParams& p) = 0;
};

// The CPU reference, `--device ref` (backend_cpu.cpp); the fast default `cpu` is in cpu_kernels.h.
std::unique_ptr<Backend> backend_cpu_create();

// Counter-based uniform in [0,1): a pure function of (seed, counter), identical on CPU and CUDA.
// SplitMix64 (rng_mix) of seed + counter * golden, that is, the (counter + 1)-th output of a SplitMix64
// stream started at seed; top 24 bits.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline float rng_uniform(uint64_t seed, uint64_t counter) {
  const uint64_t z = rng_mix(seed + counter * 0x9E3779B97F4A7C15ull);
  return float(z >> 40) * (1.0f / 16777216.0f);
}

// Attention dropout's keep decision for probability (b, h, query i, key j) of a (B, NH, T, T) batch
// (AttentionDropout), the same on every backend and in both directions.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline bool attention_keep(const AttentionDropout& d, int NH, int T, int b, int h, int i, int j) {
  const uint64_t row = (uint64_t(b) * uint64_t(NH) + uint64_t(h)) * uint64_t(T) + uint64_t(i);
  const uint64_t counter = row * uint64_t(T) + uint64_t(j);
  return rng_uniform(d.seed, d.offset + counter) >= d.p;
}

}  // namespace lora

namespace lora {
// "cpu" (fast), "ref", "cuda" or "auto". quiet suppresses the CPU fall-back notice. activations: the dtype of
// activations and frozen weights on CUDA (the CPU backend always computes in f32).
std::unique_ptr<Backend> backend_create(const std::string& device, bool quiet = false,
                                        DType activations = DType::bf16);
// True when a CUDA device can be used; otherwise why_not says why. Used by tests to skip.
bool cuda_device_available(std::string* why_not);
}  // namespace lora
