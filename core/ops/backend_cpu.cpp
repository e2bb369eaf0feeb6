// The CPU reference backend: every op of core/ops/backend.h in fp32 on host memory.
//
// Each op checks its tensors (device, dtype, shapes) and calls the plain kernel of core/ops/ops_ref.h with
// Real = float; matmul goes to OpenBLAS cblas_sgemm. The hot ops call their loop through a CpuKernels
// table (core/ops/cpu_kernels.h): the reference's own (`--device ref`, backend_cpu_create: the tests'
// oracle) or the fast backend's (core/ops/backend_cpu_fast.cpp, the default `cpu`), behind the same checks. The backend stores f32 and i32 only (its
// activation dtype is f32); asking it for bf16 or f16 is a programming error (std::logic_error). Shape
// and dtype mismatches are programming errors too: the model code, not the user, chose them. Values
// only the data can get wrong (token ids, targets, lengths) throw std::out_of_range from the kernels.
// Gradient contract as in backend.h: parameter gradients +=, activation gradients overwritten, an
// empty parameter-gradient tensor means frozen.
#include <cblas.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "core/ops/backend.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/ops_ref.h"

namespace lora {
namespace {

[[noreturn]] void bad(const char* op, const std::string& what) {
  throw std::logic_error(std::string("cpu backend: ") + op + ": " + what);
}

void need_host(const char* op, const char* name, const Tensor& t) {
  if (t.empty()) bad(op, std::string(name) + " is an empty tensor");
  if (t.device != Device::cpu) bad(op, std::string(name) + " lives on " + device_name(t.device) + ", not the cpu");
}

void need_dtype(const char* op, const char* name, const Tensor& t, DType dtype) {
  need_host(op, name, t);
  if (t.dtype != dtype)
    bad(op, std::string(name) + " is " + dtype_name(t.dtype) + ", expected " + dtype_name(dtype));
}

void need_numel(const char* op, const char* name, const Tensor& t, int64_t n) {
  if (t.numel() != n)
    bad(op, std::string(name) + " " + t.shape_str() + " has " + std::to_string(t.numel()) + " elements, expected " +
                std::to_string(n));
}

// f32 tensor of n elements.
float* f32_of(const char* op, const char* name, const Tensor& t, int64_t n) {
  need_dtype(op, name, t, DType::f32);
  need_numel(op, name, t, n);
  return t.f32();
}

// Optional f32 tensor (a frozen gradient, an absent bias): nullptr when empty.
float* f32_opt(const char* op, const char* name, const Tensor& t, int64_t n) {
  return t.empty() ? nullptr : f32_of(op, name, t, n);
}

void need_mat(const char* op, const char* name, const MatRef& m, int64_t rows, int64_t cols) {
  if (m.dtype != DType::f32) bad(op, std::string(name) + " is " + dtype_name(m.dtype) + ", expected f32");
  if (!m.data && rows * cols > 0) bad(op, std::string(name) + " has no data");
  if (m.rows != rows || m.cols != cols)
    bad(op, std::string(name) + " is (" + std::to_string(m.rows) + ", " + std::to_string(m.cols) + "), expected (" +
                std::to_string(rows) + ", " + std::to_string(cols) + ")");
  if (m.ld < m.cols)
    bad(op, std::string(name) + " has ld " + std::to_string(m.ld) + " < cols " + std::to_string(m.cols));
}

// The (N, C) view the row-wise ops use: C the last dim.
void rows_cols(const Tensor& t, int64_t& N, int64_t& C) {
  C = t.shape.empty() ? 1 : t.shape.back();
  N = C ? t.numel() / C : 0;
}

// lengths (B) i32, or nullptr when empty (no padding).
const int32_t* lengths_of(const char* op, const Tensor& lengths, int B) {
  if (lengths.empty()) return nullptr;
  need_dtype(op, "lengths", lengths, DType::i32);
  need_numel(op, "lengths", lengths, B);
  return lengths.i32();
}

void check_attention_shape(const char* op, const AttentionShape& s) {
  if (s.B < 0 || s.T < 0 || s.NH <= 0 || s.NKV <= 0 || s.HS <= 0 || s.NH % s.NKV != 0)
    bad(op, "bad shape B " + std::to_string(s.B) + " T " + std::to_string(s.T) + " NH " + std::to_string(s.NH) +
                " NKV " + std::to_string(s.NKV) + " HS " + std::to_string(s.HS) + " (NH must be a multiple of NKV)");
  if (s.window < 0 || (s.window > 0 && !s.causal))
    bad(op, "bad sliding window " + std::to_string(s.window) + " (0 for none; a window needs causal attention)");
}

// OpenBLAS's pthreads build spins its idle threads: on cores busy with other work they stall each
// other (docs/BENCHMARKS.md: 3.4x slower on 2 busy cores), so the count and its knob are shown.
std::string ref_run_note() {
  const int n = openblas_get_num_threads();
  if (n == 1) return "ref: matrix products on 1 OpenBLAS thread (OPENBLAS_NUM_THREADS sets how many)";
  return "ref: matrix products on " + std::to_string(n) +
         " OpenBLAS threads (OPENBLAS_NUM_THREADS sets how many; on cores busy with other work, 1 is faster)";
}

void ref_add(float* y, const float* a, const float* b, int64_t n, float alpha) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + alpha * b[i];
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuKernels& kernels) : k_(kernels) {}
  Device device() const override { return Device::cpu; }
  std::string name() const override { return k_.name; }
  std::string run_note() const override { return k_.run_note(); }
  DType activation_dtype() const override { return DType::f32; }

  // ---- memory ----
  Tensor alloc(std::vector<int64_t> shape, DType dtype) override {
    if (dtype != DType::f32 && dtype != DType::i32)
      bad("alloc", std::string("the cpu backend stores f32 and i32 only, not ") + dtype_name(dtype));
    return tensor_host(std::move(shape), dtype);
  }

  void upload(Tensor& dst, const Tensor& host) override {
    need_host("upload", "host", host);
    need_dtype("upload", "dst", dst, host.dtype);
    if (host.dtype != DType::f32 && host.dtype != DType::i32)
      bad("upload", std::string("host tensor is ") + dtype_name(host.dtype) + ", expected f32 or i32");
    need_numel("upload", "dst", dst, host.numel());
    std::memmove(dst.data, host.data, host.nbytes());
  }

  Tensor download(const Tensor& src) override {
    need_host("download", "src", src);
    if (src.dtype != DType::f32 && src.dtype != DType::i32)
      bad("download", std::string("src is ") + dtype_name(src.dtype) + ", expected f32 or i32");
    Tensor out = tensor_host(src.shape, src.dtype);
    std::memcpy(out.data, src.data, src.nbytes());
    return out;
  }

  void copy(Tensor& dst, const Tensor& src) override {
    need_host("copy", "src", src);
    if (src.dtype != DType::f32 && src.dtype != DType::i32)
      bad("copy", std::string("src is ") + dtype_name(src.dtype) + ", expected f32 or i32");
    need_dtype("copy", "dst", dst, src.dtype);
    need_numel("copy", "dst", dst, src.numel());
    std::memmove(dst.data, src.data, src.nbytes());
  }

  void fill(Tensor& t, float value) override {
    need_host("fill", "t", t);
    const int64_t n = t.numel();
    if (t.dtype == DType::f32) {
      float* p = t.f32();
      for (int64_t i = 0; i < n; ++i) p[i] = value;
    } else if (t.dtype == DType::i32) {
      int32_t* p = t.i32();
      for (int64_t i = 0; i < n; ++i) p[i] = int32_t(value);
    } else {
      bad("fill", std::string("t is ") + dtype_name(t.dtype) + ", expected f32 or i32");
    }
  }

  void mat_copy(const MatRef& dst, const MatRef& src) override {
    need_mat("mat_copy", "src", src, src.rows, src.cols);
    need_mat("mat_copy", "dst", dst, src.rows, src.cols);
    ref::mat_copy(dst.f32(), dst.ld, src.f32(), src.ld, src.rows, src.cols);
  }

  // ---- linear algebra ----
  void matmul(const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a, bool trans_b, float alpha,
              float beta) override {
    const int64_t M = trans_a ? a.cols : a.rows, K = trans_a ? a.rows : a.cols;
    const int64_t N = trans_b ? b.rows : b.cols;
    need_mat("matmul", "a", a, a.rows, a.cols);
    need_mat("matmul", "b", b, trans_b ? N : K, trans_b ? K : N);
    need_mat("matmul", "out", out, M, N);
    if (M == 0 || N == 0) return;
    if (K == 0) {  // out = beta * out; BLAS would reject the ld 0 of an empty operand
      float* o = out.f32();
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) o[i * out.ld + j] = beta == 0 ? 0.0f : beta * o[i * out.ld + j];
      return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M),
                int(N), int(K), alpha, a.f32(), int(a.ld), b.f32(), int(b.ld), beta, out.f32(), int(out.ld));
  }

  // An empty bias is a layer without one (LLaMA's linears): nothing to add.
  void bias_add(const MatRef& out, const Tensor& bias) override {
    if (bias.empty()) return;
    need_mat("bias_add", "out", out, out.rows, out.cols);
    k_.bias_add(out.f32(), out.ld, f32_of("bias_add", "bias", bias, out.cols), out.rows, out.cols);
  }

  void bias_backward(Tensor& dbias, const MatRef& dout) override {
    if (dbias.empty()) return;
    need_mat("bias_backward", "dout", dout, dout.rows, dout.cols);
    ref::bias_backward(f32_of("bias_backward", "dbias", dbias, dout.cols), dout.f32(), dout.ld, dout.rows, dout.cols);
  }

  void add(Tensor& y, const Tensor& a, const Tensor& b, float alpha) override {
    const int64_t n = a.numel();
    const float* pa = f32_of("add", "a", a, n);
    const float* pb = f32_of("add", "b", b, n);
    float* py = f32_of("add", "y", y, n);
    k_.add(py, pa, pb, n, alpha);
  }

  void scale(Tensor& y, float alpha) override {
    const int64_t n = y.numel();
    float* p = f32_of("scale", "y", y, n);
    for (int64_t i = 0; i < n; ++i) p[i] *= alpha;
  }

  // ---- normalisation ----
  void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                         const Tensor& bias, float eps) override {
    const char* op = "layernorm_forward";
    int64_t N, C;
    rows_cols(inp, N, C);
    k_.layernorm_forward(f32_of(op, "out", out, N * C), f32_of(op, "mean", mean, N), f32_of(op, "rstd", rstd, N),
                           f32_of(op, "inp", inp, N * C), f32_opt(op, "weight", weight, C),
                           f32_opt(op, "bias", bias, C), N, C, eps);
  }

  void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout, const Tensor& inp,
                          const Tensor& weight, const Tensor& mean, const Tensor& rstd) override {
    const char* op = "layernorm_backward";
    int64_t N, C;
    rows_cols(inp, N, C);
    k_.layernorm_backward(f32_of(op, "dinp", dinp, N * C), f32_opt(op, "dweight", dweight, C),
                            f32_opt(op, "dbias", dbias, C), f32_of(op, "dout", dout, N * C),
                            f32_of(op, "inp", inp, N * C), f32_opt(op, "weight", weight, C),
                            f32_of(op, "mean", mean, N), f32_of(op, "rstd", rstd, N), N, C);
  }

  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight, float eps) override {
    const char* op = "rmsnorm_forward";
    int64_t N, C;
    rows_cols(inp, N, C);
    ref::rmsnorm_forward(f32_of(op, "out", out, N * C), f32_of(op, "rstd", rstd, N), f32_of(op, "inp", inp, N * C),
                         f32_opt(op, "weight", weight, C), N, C, eps);
  }

  void rmsnorm_backward(Tensor& dinp, Tensor& dweight, const Tensor& dout, const Tensor& inp, const Tensor& weight,
                        const Tensor& rstd) override {
    const char* op = "rmsnorm_backward";
    int64_t N, C;
    rows_cols(inp, N, C);
    ref::rmsnorm_backward(f32_of(op, "dinp", dinp, N * C), f32_opt(op, "dweight", dweight, C),
                          f32_of(op, "dout", dout, N * C), f32_of(op, "inp", inp, N * C),
                          f32_opt(op, "weight", weight, C), f32_of(op, "rstd", rstd, N), N, C);
  }

  // ---- activations ----
  void gelu_forward(Tensor& out, const Tensor& inp, GeluKind kind) override {
    const int64_t n = inp.numel();
    k_.gelu_forward(f32_of("gelu_forward", "out", out, n), f32_of("gelu_forward", "inp", inp, n), n, kind);
  }

  void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp, GeluKind kind) override {
    const char* op = "gelu_backward";
    const int64_t n = inp.numel();
    k_.gelu_backward(f32_of(op, "dinp", dinp, n), f32_of(op, "dout", dout, n), f32_of(op, "inp", inp, n), n, kind);
  }

  void tanh_forward(Tensor& out, const Tensor& inp) override {
    const int64_t n = inp.numel();
    ref::tanh_forward(f32_of("tanh_forward", "out", out, n), f32_of("tanh_forward", "inp", inp, n), n);
  }

  void tanh_backward(Tensor& dinp, const Tensor& dout, const Tensor& out) override {
    const char* op = "tanh_backward";
    const int64_t n = out.numel();
    ref::tanh_backward(f32_of(op, "dinp", dinp, n), f32_of(op, "dout", dout, n), f32_of(op, "out", out, n), n);
  }

  void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) override {
    const char* op = "swiglu_forward";
    const int64_t n = gate.numel();
    ref::swiglu_forward(f32_of(op, "out", out, n), f32_of(op, "gate", gate, n), f32_of(op, "up", up, n), n);
  }

  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                       const Tensor& up) override {
    const char* op = "swiglu_backward";
    const int64_t n = gate.numel();
    ref::swiglu_backward(f32_of(op, "dgate", dgate, n), f32_of(op, "dup", dup, n), f32_of(op, "dout", dout, n),
                         f32_of(op, "gate", gate, n), f32_of(op, "up", up, n), n);
  }

  void rope(const MatRef& x, int B, int T, int nheads, int HS, float theta, bool inverse) override {
    if (HS <= 0 || HS % 2 != 0) bad("rope", "head size " + std::to_string(HS) + " must be even and positive");
    need_mat("rope", "x", x, int64_t(B) * T, x.cols);
    if (int64_t(nheads) * HS > x.cols)
      bad("rope", std::to_string(nheads) + " heads of " + std::to_string(HS) + " do not fit in " +
                      std::to_string(x.cols) + " columns");
    ref::rope(x.f32(), x.ld, B, T, nheads, HS, double(theta), inverse);
  }

  void rope_at(const MatRef& x, const Tensor& positions, int nheads, int HS, float theta) override {
    const char* op = "rope_at";
    if (HS <= 0 || HS % 2 != 0) bad(op, "head size " + std::to_string(HS) + " must be even and positive");
    need_mat(op, "x", x, x.rows, x.cols);
    need_dtype(op, "positions", positions, DType::i32);
    need_numel(op, "positions", positions, x.rows);
    const int32_t* pos = positions.i32();
    if (int64_t(nheads) * HS > x.cols)
      bad(op, std::to_string(nheads) + " heads of " + std::to_string(HS) + " do not fit in " + std::to_string(x.cols) +
                  " columns");
    for (int64_t n = 0; n < x.rows; ++n)
      if (pos[n] < 0) throw std::out_of_range("rope_at: positions[" + std::to_string(n) + "] = " + std::to_string(pos[n]));
    ref::rope(x.f32(), x.ld, 1, int(x.rows), nheads, HS, double(theta), false, pos);
  }

  // ---- attention ----
  // q, out (B*T, NH*HS) and k, v (B*T, NKV*HS), after the shape itself is checked.
  void check_attention_operands(const char* op, const AttentionShape& s, const MatRef& q, const MatRef& k,
                                const MatRef& v, const MatRef& out) {
    check_attention_shape(op, s);
    const int64_t N = int64_t(s.B) * s.T, CQ = int64_t(s.NH) * s.HS, CKV = int64_t(s.NKV) * s.HS;
    need_mat(op, "q", q, N, CQ);
    need_mat(op, "k", k, N, CKV);
    need_mat(op, "v", v, N, CKV);
    need_mat(op, "out", out, N, CQ);
  }

  void check_attention_dropout(const char* op, const AttentionDropout& drop) {
    if (!(drop.p >= 0.0f && drop.p < 1.0f)) bad(op, "dropout p = " + std::to_string(drop.p) + " is outside [0, 1)");
  }

  Tensor attention_forward(const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v,
                           const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) override {
    const char* op = "attention_forward";
    check_attention_operands(op, s, q, k, v, out);
    check_attention_dropout(op, drop);
    Tensor probs = tensor_host({s.B, s.NH, s.T, s.T}, DType::f32);  // (B,NH,T,T)
    k_.attention_forward(out.f32(), out.ld, q.f32(), q.ld, k.f32(), k.ld, v.f32(), v.ld, probs.f32(), s,
                           lengths_of(op, lengths, s.B), drop);
    return probs;
  }

  // The saved probabilities already carry the padding and causal masks, so `out` and `lengths` are only
  // checked, not read; the dropout mask is regenerated from drop.
  void attention_backward(const MatRef& dq, const MatRef& dk, const MatRef& dv, const MatRef& dout, const MatRef& q,
                          const MatRef& k, const MatRef& v, const MatRef& out, const Tensor& saved,
                          const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) override {
    const char* op = "attention_backward";
    check_attention_operands(op, s, q, k, v, out);
    check_attention_dropout(op, drop);
    const int64_t N = int64_t(s.B) * s.T, CQ = int64_t(s.NH) * s.HS, CKV = int64_t(s.NKV) * s.HS;
    need_mat(op, "dout", dout, N, CQ);
    need_mat(op, "dq", dq, N, CQ);
    need_mat(op, "dk", dk, N, CKV);
    need_mat(op, "dv", dv, N, CKV);
    lengths_of(op, lengths, s.B);
    const float* probs = f32_of(op, "saved", saved, int64_t(s.B) * s.NH * s.T * s.T);
    k_.attention_backward(dq.f32(), dq.ld, dk.f32(), dk.ld, dv.f32(), dv.ld, dout.f32(), dout.ld, q.f32(), q.ld,
                            k.f32(), k.ld, v.f32(), v.ld, probs, s, drop);
  }

  void attention_decode(const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v, Tensor& k_cache,
                        Tensor& v_cache, const Tensor& start, const Tensor& slot_rows, int slot0,
                        const AttentionShape& s) override {
    const char* op = "attention_decode";
    check_attention_shape(op, s);
    if (!s.causal) bad(op, "decoding attention is causal");
    const int64_t N = int64_t(s.B) * s.T, CQ = int64_t(s.NH) * s.HS, CKV = int64_t(s.NKV) * s.HS;
    need_mat(op, "q", q, N, CQ);
    need_mat(op, "k", k, N, CKV);
    need_mat(op, "v", v, N, CKV);
    need_mat(op, "out", out, N, CQ);
    for (const Tensor* c : {&k_cache, &v_cache}) {
      need_dtype(op, "cache", *c, DType::f32);
      if (c->ndim() != 3 || c->dim(1) < s.B || c->dim(2) != CKV)
        bad(op, "cache " + c->shape_str() + " must be (S, >= R = " + std::to_string(s.B) + ", " + std::to_string(CKV) +
                    ")");
    }
    if (v_cache.shape != k_cache.shape) bad(op, "k_cache and v_cache differ in shape");
    need_dtype(op, "start", start, DType::i32);
    need_numel(op, "start", start, s.B);
    const int32_t* table = nullptr;
    if (!slot_rows.empty()) {
      need_dtype(op, "slot_rows", slot_rows, DType::i32);
      need_numel(op, "slot_rows", slot_rows, int64_t(slot0) * s.B);
      table = slot_rows.i32();
    }
    ref::attention_decode(out.f32(), out.ld, q.f32(), q.ld, k.f32(), k.ld, v.f32(), v.ld, k_cache.f32(), v_cache.f32(),
                          int(k_cache.dim(0)), int(k_cache.dim(1)), start.i32(), table, slot0, s);
  }

  // ---- embeddings ----
  void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) override {
    const char* op = "embedding_forward";
    need_dtype(op, "tokens", tokens, DType::i32);
    if (tokens.ndim() != 2) bad(op, "tokens " + tokens.shape_str() + " must be (B, T)");
    need_dtype(op, "wte", wte, DType::f32);
    if (wte.ndim() != 2) bad(op, "wte " + wte.shape_str() + " must be (V, C)");
    const int B = int(tokens.dim(0)), T = int(tokens.dim(1));
    const int64_t V = wte.dim(0), C = wte.dim(1);
    const float* pe = nullptr;
    if (!wpe.empty()) {
      need_dtype(op, "wpe", wpe, DType::f32);
      if (wpe.ndim() != 2 || wpe.dim(1) != C || wpe.dim(0) < T)
        bad(op, "wpe " + wpe.shape_str() + " must be (>= T = " + std::to_string(T) + ", C = " + std::to_string(C) +
                    ")");
      pe = wpe.f32();
    }
    ref::embedding_forward(f32_of(op, "out", out, int64_t(B) * T * C), tokens.i32(), wte.f32(), pe, B, T, C, V);
  }

  void embedding_backward(Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens) override {
    const char* op = "embedding_backward";
    if (dwte.empty() && dwpe.empty()) return;
    need_dtype(op, "tokens", tokens, DType::i32);
    if (tokens.ndim() != 2) bad(op, "tokens " + tokens.shape_str() + " must be (B, T)");
    const int B = int(tokens.dim(0)), T = int(tokens.dim(1));
    const int64_t C = dout.shape.empty() ? 0 : dout.shape.back();
    const float* d = f32_of(op, "dout", dout, int64_t(B) * T * C);
    float* pte = nullptr;
    if (!dwte.empty()) {
      need_dtype(op, "dwte", dwte, DType::f32);
      if (dwte.ndim() != 2 || dwte.dim(1) != C) bad(op, "dwte " + dwte.shape_str() + " must be (V, C)");
      const int32_t* tok = tokens.i32();
      for (int64_t n = 0; n < int64_t(B) * T; ++n)
        if (tok[n] < 0 || tok[n] >= dwte.dim(0))
          throw std::out_of_range("embedding_backward: token id " + std::to_string(tok[n]) + " outside the vocabulary");
      pte = dwte.f32();
    }
    float* ppe = nullptr;
    if (!dwpe.empty()) {
      need_dtype(op, "dwpe", dwpe, DType::f32);
      if (dwpe.ndim() != 2 || dwpe.dim(1) != C || dwpe.dim(0) < T)
        bad(op, "dwpe " + dwpe.shape_str() + " must be (>= T, C)");
      ppe = dwpe.f32();
    }
    ref::embedding_backward(pte, ppe, d, tokens.i32(), B, T, C);
  }

  // ---- loss ----
  void cross_entropy(const MatRef& logits, Tensor& losses, Tensor& argmax, const Tensor& targets,
                     float label_smoothing, float dscale) override {
    const char* op = "cross_entropy";
    need_mat(op, "logits", logits, logits.rows, logits.cols);
    const int64_t N = logits.rows, V = logits.cols;
    if (V <= 0) bad(op, "logits have no columns");
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
      bad(op, "label_smoothing " + std::to_string(label_smoothing) + " is outside [0, 1]");
    need_dtype(op, "targets", targets, DType::i32);
    need_numel(op, "targets", targets, N);
    int32_t* am = nullptr;
    if (!argmax.empty()) {
      need_dtype(op, "argmax", argmax, DType::i32);
      need_numel(op, "argmax", argmax, N);
      am = argmax.i32();
    }
    k_.cross_entropy(logits.f32(), logits.ld, f32_of(op, "losses", losses, N), am, targets.i32(), N, V,
                       double(label_smoothing), double(dscale));
  }

  void mse_loss(const MatRef& preds, Tensor& losses, const Tensor& targets, float dscale) override {
    const char* op = "mse_loss";
    need_mat(op, "preds", preds, preds.rows, 1);
    const int64_t N = preds.rows;
    ref::mse_loss(preds.f32(), preds.ld, f32_of(op, "losses", losses, N), f32_of(op, "targets", targets, N), N,
                  double(dscale));
  }

  // ---- dropout ----
  void dropout_forward(Tensor& out, const Tensor& inp, float p, uint64_t seed, uint64_t offset) override {
    if (!(p >= 0.0f && p <= 1.0f)) bad("dropout_forward", "p = " + std::to_string(p) + " is outside [0, 1]");
    const int64_t n = inp.numel();
    k_.dropout_apply(f32_of("dropout_forward", "out", out, n), f32_of("dropout_forward", "inp", inp, n), n, p,
                       seed, offset);
  }

  void dropout_backward(Tensor& dinp, const Tensor& dout, float p, uint64_t seed, uint64_t offset) override {
    if (!(p >= 0.0f && p <= 1.0f)) bad("dropout_backward", "p = " + std::to_string(p) + " is outside [0, 1]");
    const int64_t n = dout.numel();
    k_.dropout_apply(f32_of("dropout_backward", "dinp", dinp, n), f32_of("dropout_backward", "dout", dout, n), n,
                       p, seed, offset);
  }

  // ---- reductions and the optimizer ----
  double sum_squares(const Tensor& t) override {
    return ref::sum_squares(f32_of("sum_squares", "t", t, t.numel()), t.numel());
  }

  bool all_finite(const Tensor& t) override {
    return ref::all_finite(f32_of("all_finite", "t", t, t.numel()), t.numel());
  }

  // The CPU forward reads the fp32 master weights directly; a shadow, if given, is refreshed by a copy.
  void adamw_update(const std::vector<AdamWSlot>& slots, const AdamWParams& p) override {
    const char* op = "adamw_update";
    if (p.step < 1) bad(op, "step " + std::to_string(p.step) + " must be >= 1 (it is 1-based)");
    for (const AdamWSlot& s : slots) {
      if (!s.param || !s.grad || !s.m || !s.v) bad(op, "a slot lacks param, grad, m or v");
      const int64_t n = s.param->numel();
      ref::adamw_step(f32_of(op, "param", *s.param, n), f32_of(op, "grad", *s.grad, n), f32_of(op, "m", *s.m, n),
                      f32_of(op, "v", *s.v, n), n, p, s.decay);
      if (s.shadow && !s.shadow->empty() && s.shadow->data != s.param->data) copy(*s.shadow, *s.param);
    }
  }

 private:
  const CpuKernels& k_;
};

}  // namespace

const CpuKernels& cpu_ref_kernels() {
  static const CpuKernels k = {
      "ref",
      ref_run_note,
      ref::bias_add<float>,
      ref_add,
      ref::layernorm_forward<float>,
      ref::layernorm_backward<float>,
      ref::gelu_forward<float>,
      ref::gelu_backward<float>,
      ref::attention_forward<float>,
      ref::attention_backward<float>,
      ref::cross_entropy<float>,
      ref::dropout_apply<float>,
  };
  return k;
}

std::unique_ptr<Backend> backend_cpu_with(const CpuKernels& kernels) { return std::make_unique<CpuBackend>(kernels); }

std::unique_ptr<Backend> backend_cpu_create() { return backend_cpu_with(cpu_ref_kernels()); }

}  // namespace lora
