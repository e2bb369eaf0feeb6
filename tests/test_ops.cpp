// The op set's oracle tests (docs/ARCHITECTURE.md, "A new op"), in three layers:
//  1. every backward of core/ops/ops_ref.h, instantiated in double, against central finite differences of
//     the scalar loss L = sum(W * out) with a random projection W;
//  2. the float CPU backend (backend_cpu_create) against that double reference on the same random
//     inputs, including column blocks of fused buffers (ld > cols) for matmul, rope and attention;
//  3. forward sanity checks against independent formulas (softmax rows sum to 1, causal row 0 is v's
//     row 0, layernorm output is standardised, uniform logits give log V, one AdamW step by hand,
//     dropout's keep rate and determinism, rng_uniform's range).
// Inputs are random, never zeros, and drawn as float-representable doubles so the float backend and
// the double reference see identical values.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "core/ops/backend.h"
#include "core/ops/ops_ref.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using vec = std::vector<double>;

namespace {

// Finite differences vs analytic gradients, both in double. With h = 1e-5 the central difference has
// truncation error ~h^2 |f'''| / 6 ~ 1e-11 and rounding error ~1e-16 |L| / h ~ 1e-10 for our |L| ~ 10,
// so 1e-6 relative leaves three orders of margin and still catches any wrong term.
constexpr double fd_rtol = 1e-6;
// Float backend vs double reference: fp32 rounding (6e-8) amplified by reductions of a few dozen terms.
constexpr double f32_rtol = 1e-5;

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  // Normal(mean, sd) values rounded to float.
  vec normal(size_t n, double sd = 1.0, double mean = 0.0) {
    std::normal_distribution<double> d(mean, sd);
    vec x(n);
    for (double& v : x) v = double(float(d(gen)));
    return x;
  }
  int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); }
};

// The comparison helper. Element i fails when |got - want| > rtol * (|want_i| + max_j |want_j|): the
// absolute floor rtol * max|want| is there because entries near zero come from cancellation of terms
// as large as the tensor's scale, and their rounding error follows that scale, not their own size.
// Reports max abs error, max relative error and the first failing index with both values.
template <class G>
void expect_close(const std::string& what, const G* got, const vec& want, double rtol) {
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  double max_abs = 0, max_rel = 0;
  int64_t first_bad = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    double g = double(got[i]), d = std::abs(g - want[i]);
    if (!(d <= rtol * (std::abs(want[i]) + scale)) && first_bad < 0) first_bad = int64_t(i);
    max_abs = std::max(max_abs, d);
    if (want[i] != 0) max_rel = std::max(max_rel, d / std::abs(want[i]));
  }
  std::ostringstream os;
  os << what << ": n " << want.size() << ", max abs err " << max_abs << ", max rel err " << max_rel << ", scale "
     << scale << ", rtol " << rtol;
  if (first_bad >= 0)
    os << "; first mismatch at " << first_bad << ": got " << double(got[first_bad]) << ", want " << want[first_bad];
  CHECK_MESSAGE(first_bad < 0, os.str());
}
void expect_close(const std::string& what, const vec& got, const vec& want, double rtol) {
  REQUIRE(got.size() == want.size());
  expect_close(what, got.data(), want, rtol);
}

double dot(const vec& a, const vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
vec minus(const vec& a, const vec& b) {
  vec d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// Columns [col0, col0 + cols) of a row-major (rows, ld) buffer, as a contiguous (rows, cols) vector.
vec block(const vec& buf, int rows, int ld, int col0, int cols) {
  vec out(size_t(rows) * cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) out[size_t(i) * cols + j] = buf[size_t(i) * ld + col0 + j];
  return out;
}

// dL/dx by central differences; x is perturbed in place and restored. loss reads x by reference.
vec numeric_grad(vec& x, const std::function<double()>& loss) {
  const double h = 1e-5;
  vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double x0 = x[i];
    x[i] = x0 + h;
    double lp = loss();
    x[i] = x0 - h;
    double lm = loss();
    x[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

// ---- float backend tensors ----
Tensor to_backend(Backend& be, const vec& x, std::vector<int64_t> shape) {
  Tensor host = tensor_host(shape, DType::f32);
  REQUIRE(size_t(host.numel()) == x.size());
  for (size_t i = 0; i < x.size(); ++i) host.f32()[i] = float(x[i]);
  Tensor t = be.alloc(shape, DType::f32);
  be.upload(t, host);
  return t;
}
Tensor to_backend_i32(Backend& be, const std::vector<int32_t>& x, std::vector<int64_t> shape) {
  Tensor host = tensor_host(shape, DType::i32);
  std::copy(x.begin(), x.end(), host.i32());
  Tensor t = be.alloc(shape, DType::i32);
  be.upload(t, host);
  return t;
}
vec from_backend(Backend& be, const Tensor& t) {
  Tensor host = be.download(t);
  return vec(host.f32(), host.f32() + host.numel());
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// matmul and bias
// ---------------------------------------------------------------------------------------------------

TEST_CASE("matmul: gradients of every transpose combination match finite differences; float matches double") {
  auto be = backend_cpu_create();
  Rng rng(1);
  const int M = 4, K = 5, N = 3;
  const double alpha = 0.7, beta = 0.3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      CAPTURE(ta);
      CAPTURE(tb);
      // Stored shapes: a (M,K) or (K,M), b (K,N) or (N,K).
      const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
      vec a = rng.normal(ar * ac), b = rng.normal(br * bc), out0 = rng.normal(M * N), W = rng.normal(M * N);
      auto loss = [&] {
        vec out = out0;
        ref::matmul(out.data(), N, a.data(), ac, b.data(), bc, M, N, K, bool(ta), bool(tb), alpha, beta);
        return dot(out, W);
      };
      // The linear layer's backward as the model composes it from matmul: for out = alpha op(a) op(b),
      // dop(a) = alpha W op(b)^T and dop(b) = alpha op(a)^T W, transposed back when a or b is stored so.
      vec da(ar * ac), db(br * bc);
      if (!ta) ref::matmul(da.data(), ac, W.data(), N, b.data(), bc, M, K, N, false, !tb, alpha, 0.0);
      else ref::matmul(da.data(), ac, b.data(), bc, W.data(), N, K, M, N, bool(tb), true, alpha, 0.0);
      if (!tb) ref::matmul(db.data(), bc, a.data(), ac, W.data(), N, K, N, M, !ta, false, alpha, 0.0);
      else ref::matmul(db.data(), bc, W.data(), N, a.data(), ac, N, K, M, true, bool(ta), alpha, 0.0);
      vec dout0(W.size());
      for (size_t i = 0; i < W.size(); ++i) dout0[i] = beta * W[i];
      expect_close("matmul da", da, numeric_grad(a, loss), fd_rtol);
      expect_close("matmul db", db, numeric_grad(b, loss), fd_rtol);
      expect_close("matmul dout0 (beta)", dout0, numeric_grad(out0, loss), fd_rtol);

      // Float backend on column blocks of wider buffers (ld > cols); the whole buffer is compared so
      // writes outside the output block would show.
      const int pad = 3;
      vec aw = rng.normal(ar * (ac + pad)), bw = rng.normal(br * (bc + pad)), ow = rng.normal(M * (N + pad));
      Tensor ta_t = to_backend(*be, aw, {ar, ac + pad}), tb_t = to_backend(*be, bw, {br, bc + pad});
      Tensor to_t = to_backend(*be, ow, {M, N + pad});
      be->matmul(mat_cols(to_t, 1, N), mat_cols(ta_t, 2, ac), mat_cols(tb_t, 0, bc), bool(ta), bool(tb), float(alpha),
                 float(beta));
      vec want = ow;
      ref::matmul(want.data() + 1, N + pad, aw.data() + 2, ac + pad, bw.data(), bc + pad, M, N, K, bool(ta), bool(tb),
                  alpha, beta);
      expect_close("backend matmul", from_backend(*be, to_t), want, f32_rtol);
    }
}

TEST_CASE("matmul: beta = 0 ignores NaN in out; shape mismatches throw") {
  auto be = backend_cpu_create();
  Rng rng(2);
  vec a = rng.normal(6), b = rng.normal(6);
  Tensor ta = to_backend(*be, a, {2, 3}), tb = to_backend(*be, b, {3, 2}), out = be->alloc({2, 2}, DType::f32);
  be->fill(out, NAN);
  be->matmul(mat(out), mat(ta), mat(tb), false, false, 1.0f, 0.0f);
  CHECK(be->all_finite(out));
  CHECK_THROWS_AS(be->matmul(mat(out), mat(ta), mat(ta), false, false, 1.0f, 0.0f), std::logic_error);
}

TEST_CASE("bias: add and backward match finite differences; backward accumulates") {
  auto be = backend_cpu_create();
  Rng rng(3);
  const int N = 5, C = 4, pad = 2;
  vec x = rng.normal(N * (C + pad)), bias = rng.normal(C), W = rng.normal(N * C);
  auto loss = [&] {
    vec y = x;
    ref::bias_add(y.data() + pad, C + pad, bias.data(), N, C);
    double s = 0;
    for (int i = 0; i < N; ++i)
      for (int c = 0; c < C; ++c) s += y[i * (C + pad) + pad + c] * W[i * C + c];
    return s;
  };
  vec dbias0 = rng.normal(C), dbias = dbias0;
  ref::bias_backward(dbias.data(), W.data(), C, N, C);
  expect_close("dbias", minus(dbias, dbias0), numeric_grad(bias, loss), fd_rtol);

  Tensor tx = to_backend(*be, x, {N, C + pad}), tbias = to_backend(*be, bias, {C});
  be->bias_add(mat_cols(tx, pad, C), tbias);
  vec want = x;
  ref::bias_add(want.data() + pad, C + pad, bias.data(), N, C);
  vec got = from_backend(*be, tx);
  expect_close("backend bias_add", got, want, f32_rtol);
  be->bias_add(mat_cols(tx, pad, C), Tensor());  // no bias: unchanged
  CHECK(from_backend(*be, tx) == got);
  Tensor tdb = to_backend(*be, dbias0, {C}), tW = to_backend(*be, W, {N, C});
  be->bias_backward(tdb, mat(tW));
  expect_close("backend bias_backward", from_backend(*be, tdb), dbias, f32_rtol);
}

// ---------------------------------------------------------------------------------------------------
// normalisation
// ---------------------------------------------------------------------------------------------------

TEST_CASE("layernorm: backward matches finite differences, accumulates into dinp; float matches double") {
  auto be = backend_cpu_create();
  Rng rng(4);
  const int N = 6, C = 10;
  const double eps = 1e-5;
  vec x = rng.normal(N * C, 1.5, 0.7), w = rng.normal(C, 0.5, 1.0), b = rng.normal(C), W = rng.normal(N * C);
  vec out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, eps);
    return dot(out, W);
  };
  loss();
  vec dx0 = rng.normal(N * C), dw0 = rng.normal(C), db0 = rng.normal(C);
  vec dx = dx0, dw = dw0, db = db0;
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), W.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          N, C);
  expect_close("layernorm dinp", minus(dx, dx0), numeric_grad(x, loss), fd_rtol);
  expect_close("layernorm dweight", minus(dw, dw0), numeric_grad(w, loss), fd_rtol);
  expect_close("layernorm dbias", minus(db, db0), numeric_grad(b, loss), fd_rtol);
  loss();

  Tensor tx = to_backend(*be, x, {2, 3, C}), tw = to_backend(*be, w, {C}), tb = to_backend(*be, b, {C});
  Tensor tout = be->alloc({2, 3, C}, DType::f32);
  Tensor tmean = be->alloc({N}, DType::f32), trstd = be->alloc({N}, DType::f32);
  be->layernorm_forward(tout, tmean, trstd, tx, tw, tb, float(eps));
  expect_close("backend layernorm out", from_backend(*be, tout), out, f32_rtol);
  expect_close("backend layernorm mean", from_backend(*be, tmean), mean, f32_rtol);
  expect_close("backend layernorm rstd", from_backend(*be, trstd), rstd, f32_rtol);
  Tensor tdx = to_backend(*be, dx0, {2, 3, C}), tdw = to_backend(*be, dw0, {C}), tdb = to_backend(*be, db0, {C});
  be->layernorm_backward(tdx, tdw, tdb, to_backend(*be, W, {2, 3, C}), tx, tw, tmean, trstd);
  expect_close("backend layernorm dinp", from_backend(*be, tdx), dx, f32_rtol);
  expect_close("backend layernorm dweight", from_backend(*be, tdw), dw, f32_rtol);
  expect_close("backend layernorm dbias", from_backend(*be, tdb), db, f32_rtol);

  // Frozen weight and bias (empty gradients): dinp is the same.
  Tensor tdx2 = to_backend(*be, dx0, {2, 3, C}), none;
  be->layernorm_backward(tdx2, none, none, to_backend(*be, W, {2, 3, C}), tx, tw, tmean, trstd);
  expect_close("backend layernorm dinp, frozen affine", from_backend(*be, tdx2), dx, f32_rtol);
}

TEST_CASE("layernorm without affine: each row has mean 0 and variance 1") {
  auto be = backend_cpu_create();
  Rng rng(5);
  const int N = 4, C = 64;
  Tensor tx = to_backend(*be, rng.normal(N * C, 3.0, -2.0), {N, C}), none;
  Tensor tout = be->alloc({N, C}, DType::f32), tmean = be->alloc({N}, DType::f32), trstd = be->alloc({N}, DType::f32);
  be->layernorm_forward(tout, tmean, trstd, tx, none, none, 1e-5f);
  vec y = from_backend(*be, tout);
  for (int i = 0; i < N; ++i) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += y[i * C + c] / C;
    for (int c = 0; c < C; ++c) v += (y[i * C + c] - m) * (y[i * C + c] - m) / C;
    CHECK(std::abs(m) < 1e-6);
    // var(x) ~ 9, so eps shrinks the variance by eps / var ~ 1e-6; float rounding adds ~1e-7.
    CHECK(std::abs(v - 1.0) < 5e-6);
  }
}

TEST_CASE("rmsnorm: backward matches finite differences; float matches double; unit RMS") {
  auto be = backend_cpu_create();
  Rng rng(6);
  const int N = 5, C = 12;
  const double eps = 1e-6;
  vec x = rng.normal(N * C, 1.2, 0.3), w = rng.normal(C, 0.5, 1.0), W = rng.normal(N * C);
  vec out(N * C), rstd(N);
  auto loss = [&] {
    ref::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    return dot(out, W);
  };
  loss();
  vec dx0 = rng.normal(N * C), dw0 = rng.normal(C), dx = dx0, dw = dw0;
  ref::rmsnorm_backward(dx.data(), dw.data(), W.data(), x.data(), w.data(), rstd.data(), N, C);
  expect_close("rmsnorm dinp", minus(dx, dx0), numeric_grad(x, loss), fd_rtol);
  expect_close("rmsnorm dweight", minus(dw, dw0), numeric_grad(w, loss), fd_rtol);
  loss();

  Tensor tx = to_backend(*be, x, {N, C}), tw = to_backend(*be, w, {C});
  Tensor tout = be->alloc({N, C}, DType::f32), trstd = be->alloc({N}, DType::f32);
  be->rmsnorm_forward(tout, trstd, tx, tw, float(eps));
  expect_close("backend rmsnorm out", from_backend(*be, tout), out, f32_rtol);
  expect_close("backend rmsnorm rstd", from_backend(*be, trstd), rstd, f32_rtol);
  Tensor tdx = to_backend(*be, dx0, {N, C}), tdw = to_backend(*be, dw0, {C});
  be->rmsnorm_backward(tdx, tdw, to_backend(*be, W, {N, C}), tx, tw, trstd);
  expect_close("backend rmsnorm dinp", from_backend(*be, tdx), dx, f32_rtol);
  expect_close("backend rmsnorm dweight", from_backend(*be, tdw), dw, f32_rtol);

  Tensor none;
  be->rmsnorm_forward(tout, trstd, tx, none, float(eps));
  vec y = from_backend(*be, tout);
  for (int i = 0; i < N; ++i) {
    double ms = 0;
    for (int c = 0; c < C; ++c) ms += y[i * C + c] * y[i * C + c] / C;
    CHECK(std::abs(ms - 1.0) < 1e-5);  // mean(x^2) ~ 1.5, so eps costs ~1e-6
  }
}

// ---------------------------------------------------------------------------------------------------
// activations and rope
// ---------------------------------------------------------------------------------------------------

TEST_CASE("gelu (tanh and erf): backward matches finite differences; float matches double; known values") {
  auto be = backend_cpu_create();
  Rng rng(7);
  const int n = 40;
  for (GeluKind kind : {GeluKind::tanh, GeluKind::erf}) {
    CAPTURE(int(kind));
    vec x = rng.normal(n, 2.0), W = rng.normal(n), out(n), dx(n);
    auto loss = [&] {
      ref::gelu_forward(out.data(), x.data(), n, kind);
      return dot(out, W);
    };
    ref::gelu_backward(dx.data(), W.data(), x.data(), n, kind);
    expect_close("gelu dinp", dx, numeric_grad(x, loss), fd_rtol);
    loss();

    Tensor tx = to_backend(*be, x, {n}), tout = be->alloc({n}, DType::f32), td = to_backend(*be, W, {n});
    be->gelu_forward(tout, tx, kind);
    expect_close("backend gelu out", from_backend(*be, tout), out, f32_rtol);
    be->gelu_backward(td, td, tx, kind);  // dinp aliases dout
    expect_close("backend gelu dinp", from_backend(*be, td), dx, f32_rtol);
  }
  // Exact GELU(1) = Phi(1); the tanh form stays within 4.8e-4 of it on [-6, 6] (Hendrycks & Gimpel 2016).
  CHECK(ref::gelu_value(1.0, GeluKind::erf) == doctest::Approx(0.8413447460685429).epsilon(1e-15));
  for (double x = -6; x <= 6; x += 0.01)
    CHECK(std::abs(ref::gelu_value(x, GeluKind::tanh) - ref::gelu_value(x, GeluKind::erf)) < 4.8e-4);
}

TEST_CASE("swiglu: backward matches finite differences; float matches double") {
  auto be = backend_cpu_create();
  Rng rng(8);
  const int n = 30;
  vec g = rng.normal(n, 2.0), u = rng.normal(n), W = rng.normal(n), out(n), dg(n), du(n);
  auto loss = [&] {
    ref::swiglu_forward(out.data(), g.data(), u.data(), n);
    return dot(out, W);
  };
  ref::swiglu_backward(dg.data(), du.data(), W.data(), g.data(), u.data(), n);
  expect_close("swiglu dgate", dg, numeric_grad(g, loss), fd_rtol);
  expect_close("swiglu dup", du, numeric_grad(u, loss), fd_rtol);
  loss();
  for (int i = 0; i < n; ++i) CHECK(out[i] == doctest::Approx(g[i] * u[i] / (1 + std::exp(-g[i]))).epsilon(1e-14));

  Tensor tg = to_backend(*be, g, {5, 6}), tu = to_backend(*be, u, {5, 6}), tout = be->alloc({5, 6}, DType::f32);
  be->swiglu_forward(tout, tg, tu);
  expect_close("backend swiglu out", from_backend(*be, tout), out, f32_rtol);
  Tensor tdg = be->alloc({5, 6}, DType::f32), tdu = be->alloc({5, 6}, DType::f32);
  be->swiglu_backward(tdg, tdu, to_backend(*be, W, {5, 6}), tg, tu);
  expect_close("backend swiglu dgate", from_backend(*be, tdg), dg, f32_rtol);
  expect_close("backend swiglu dup", from_backend(*be, tdu), du, f32_rtol);
}

TEST_CASE("tanh: backward (from the output) matches finite differences; float matches double") {
  auto be = backend_cpu_create();
  Rng rng(21);
  const int n = 36;
  vec x = rng.normal(n, 1.5), W = rng.normal(n), out(n), dx(n);
  auto loss = [&] {
    ref::tanh_forward(out.data(), x.data(), n);
    return dot(out, W);
  };
  loss();
  ref::tanh_backward(dx.data(), W.data(), out.data(), n);
  expect_close("tanh dinp", dx, numeric_grad(x, loss), fd_rtol);
  loss();
  for (int i = 0; i < n; ++i) CHECK(out[i] == doctest::Approx(std::tanh(x[i])).epsilon(1e-15));

  Tensor tx = to_backend(*be, x, {6, 6}), tout = be->alloc({6, 6}, DType::f32), td = to_backend(*be, W, {6, 6});
  be->tanh_forward(tout, tx);
  expect_close("backend tanh out", from_backend(*be, tout), out, f32_rtol);
  be->tanh_backward(td, td, tout);  // dinp aliases dout
  expect_close("backend tanh dinp", from_backend(*be, td), dx, f32_rtol);
}

TEST_CASE("mse_loss: gradient matches finite differences; rows of a strided column; float matches double") {
  auto be = backend_cpu_create();
  Rng rng(22);
  const int N = 7, ld = 3;  // predictions in column 0 of a (N, 3) buffer, as a (N, 1) block
  const double dscale = 0.29;
  vec p = rng.normal(N * ld, 2.0);
  vec y = rng.normal(N, 2.0);
  std::vector<float> yf(y.begin(), y.end());
  vec losses(N);
  auto loss = [&] {
    vec pc = p;
    ref::mse_loss(pc.data(), ld, losses.data(), yf.data(), N, 0.0);
    double s = 0;
    for (double l : losses) s += dscale * l;
    return s;
  };
  vec grad = p;
  ref::mse_loss(grad.data(), ld, losses.data(), yf.data(), N, dscale);
  for (int i = 0; i < N; ++i)
    for (int j = 1; j < ld; ++j) grad[i * ld + j] = 0;  // other columns are not predictions
  expect_close("mse dpreds", grad, numeric_grad(p, loss), fd_rtol);
  loss();
  for (int i = 0; i < N; ++i) CHECK(losses[i] == doctest::Approx((p[i * ld] - y[i]) * (p[i * ld] - y[i])).epsilon(1e-14));

  Tensor tp = to_backend(*be, p, {N, ld}), tl = be->alloc({N}, DType::f32), ty = to_backend(*be, y, {N});
  be->mse_loss(mat_cols(tp, 0, 1), tl, ty, float(dscale));
  expect_close("backend mse losses", from_backend(*be, tl), losses, f32_rtol);
  vec want = grad;
  for (int i = 0; i < N; ++i)
    for (int j = 1; j < ld; ++j) want[i * ld + j] = p[i * ld + j];  // untouched outside the column
  expect_close("backend mse dpreds", from_backend(*be, tp), want, f32_rtol);
  CHECK_THROWS_AS(be->mse_loss(mat(tp), tl, ty, 0.0f), std::logic_error);  // 3 columns are not (N, 1)
}

TEST_CASE("mat_copy: gathers and scatters strided rows; shapes are checked") {
  auto be = backend_cpu_create();
  Rng rng(23);
  const int B = 3, T = 4, C = 5;
  vec h = rng.normal(B * T * C);
  Tensor th = to_backend(*be, h, {B * T, C}), first = be->alloc({B, C}, DType::f32);
  MatRef rows0 = mat(th);  // the first token of each sequence: rows b*T, ld T*C
  rows0.rows = B;
  rows0.ld = int64_t(T) * C;
  be->mat_copy(mat(first), rows0);
  vec got = from_backend(*be, first), want(B * C);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) want[b * C + c] = h[(b * T) * C + c];
  expect_close("mat_copy gather", got, want, 0.0);
  Tensor back = be->alloc({B * T, C}, DType::f32);
  MatRef dst = mat(back);
  dst.rows = B;
  dst.ld = int64_t(T) * C;
  be->mat_copy(dst, mat(first));
  vec scattered = from_backend(*be, back), want2(B * T * C, 0.0);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) want2[(b * T) * C + c] = h[(b * T) * C + c];
  expect_close("mat_copy scatter", scattered, want2, 0.0);
  CHECK_THROWS_AS(be->mat_copy(mat(back), mat(first)), std::logic_error);  // (12,5) vs (3,5)
}

TEST_CASE("rope: rotate_half convention, inverse undoes it, backward matches finite differences") {
  auto be = backend_cpu_create();
  // Explicit value: HS 4, theta 100: pair (0, 2) turns by t * 1, pair (1, 3) by t * 100^(-1/2).
  vec one = {1, 2, 3, 4, 1, 0, 0, 0, 0, 1, 0, 0};  // rows t = 0, 1, 2 of one head
  ref::rope(one.data(), 4, 1, 3, 1, 4, 100.0, false);
  CHECK(vec(one.begin(), one.begin() + 4) == vec{1, 2, 3, 4});  // position 0 does not move
  CHECK(one[4] == doctest::Approx(std::cos(1.0)));
  CHECK(one[6] == doctest::Approx(std::sin(1.0)));
  CHECK(one[9] == doctest::Approx(std::cos(0.2)));
  CHECK(one[11] == doctest::Approx(std::sin(0.2)));

  Rng rng(9);
  const int B = 2, T = 5, NH = 3, HS = 6, C = NH * HS, ld = 3 * C;  // x: the k block of a fused qkv
  const double theta = 10000.0;
  vec buf = rng.normal(B * T * ld), W = rng.normal(B * T * ld);
  auto loss = [&] {
    vec y = buf;
    ref::rope(y.data() + C, ld, B, T, NH, HS, theta, false);
    return dot(y, W);
  };
  vec grad = W;  // the rotation is linear and orthogonal: dx = R^T W on the block, W elsewhere
  ref::rope(grad.data() + C, ld, B, T, NH, HS, theta, true);
  expect_close("rope dx", grad, numeric_grad(buf, loss), fd_rtol);

  vec round = buf;
  ref::rope(round.data() + C, ld, B, T, NH, HS, theta, false);
  ref::rope(round.data() + C, ld, B, T, NH, HS, theta, true);
  expect_close("rope inverse(forward(x))", round, buf, 1e-15);

  Tensor tbuf = to_backend(*be, buf, {B * T, ld});
  be->rope(mat_cols(tbuf, C, C), B, T, NH, HS, float(theta), false);
  vec want = buf;
  ref::rope(want.data() + C, ld, B, T, NH, HS, theta, false);
  expect_close("backend rope", from_backend(*be, tbuf), want, f32_rtol);
}

TEST_CASE("rope_at: row n rotates as position pos[n] of a sequence; bad positions are refused") {
  auto be = backend_cpu_create();
  Rng rng(10);
  const int NH = 2, HS = 6, C = NH * HS, ld = 2 * C, T = 9;
  const std::vector<int32_t> pos = {3, 0, 8, 3, 5};
  const int64_t N = int64_t(pos.size());
  vec buf = rng.normal(N * ld);
  Tensor tbuf = to_backend(*be, buf, {N, ld});
  Tensor tpos = tensor_host({N}, DType::i32);
  std::copy(pos.begin(), pos.end(), tpos.i32());
  be->rope_at(mat_cols(tbuf, C, C), tpos, NH, HS, 500.0f);
  const vec got = from_backend(*be, tbuf);
  for (int64_t n = 0; n < N; ++n) {  // row n placed at position pos[n] of a T-row sequence, rotated by rope
    vec seq(size_t(T) * ld, 0.0);
    std::copy(buf.begin() + n * ld, buf.begin() + (n + 1) * ld, seq.begin() + pos[size_t(n)] * ld);
    ref::rope(seq.data() + C, ld, 1, T, NH, HS, 500.0, false);
    expect_close("rope_at row", vec(got.begin() + n * ld, got.begin() + (n + 1) * ld),
                 vec(seq.begin() + pos[size_t(n)] * ld, seq.begin() + (pos[size_t(n)] + 1) * ld), f32_rtol);
  }
  tpos.i32()[2] = -1;
  CHECK_THROWS_AS(be->rope_at(mat_cols(tbuf, C, C), tpos, NH, HS, 500.0f), std::out_of_range);
  Tensor short_pos = tensor_host({N - 1}, DType::i32);
  CHECK_THROWS_AS(be->rope_at(mat_cols(tbuf, C, C), short_pos, NH, HS, 500.0f), std::logic_error);
}

// ---------------------------------------------------------------------------------------------------
// attention
// ---------------------------------------------------------------------------------------------------

namespace {
struct AttentionCase {
  std::string name;
  AttentionShape s;
  std::vector<int32_t> lengths;  // empty: no padding
};
}  // namespace

TEST_CASE("attention: backward matches finite differences; float on a fused qkv matches double; masks; dropout") {
  auto be = backend_cpu_create();
  const AttentionCase cases[] = {
      {"causal", {2, 5, 2, 2, 4, true}, {}},
      {"bidirectional, padding incl. an empty sequence", {3, 5, 2, 2, 4, false}, {5, 3, 0}},
      {"causal, grouped kv, padding incl. an empty sequence", {3, 6, 4, 2, 4, true}, {6, 4, 0}},
      {"bidirectional, one kv head, padding", {2, 5, 3, 1, 4, false}, {2, 5}},
      {"causal, sliding window 3, grouped kv, padding incl. an empty sequence", {3, 7, 4, 2, 4, true, 3}, {7, 5, 0}},
      {"causal, sliding window 1 (each query sees itself)", {1, 4, 2, 1, 4, true, 1}, {}},
  };
  // Without dropout, and with a fixed dropout mask on the probabilities (a function of the seed).
  const AttentionDropout drops[] = {{}, {0.3f, 99, 7}};
  Rng rng(10);
  for (const AttentionCase& c : cases)
  for (const AttentionDropout& drop : drops) {
    CAPTURE(c.name);
    CAPTURE(drop.p);
    const AttentionShape& s = c.s;
    const int N = s.B * s.T, CQ = s.NH * s.HS, CKV = s.NKV * s.HS, ld = CQ + 2 * CKV;
    const int32_t* len = c.lengths.empty() ? nullptr : c.lengths.data();
    vec qkv = rng.normal(N * ld), W = rng.normal(N * CQ), out(N * CQ), probs(s.B * s.NH * s.T * s.T);
    auto loss = [&] {
      ref::attention_forward(out.data(), CQ, qkv.data(), ld, qkv.data() + CQ, ld, qkv.data() + CQ + CKV, ld,
                             probs.data(), s, len, drop);
      return dot(out, W);
    };
    loss();
    vec dqkv(N * ld);
    ref::attention_backward(dqkv.data(), ld, dqkv.data() + CQ, ld, dqkv.data() + CQ + CKV, ld, W.data(), CQ,
                            qkv.data(), ld, qkv.data() + CQ, ld, qkv.data() + CQ + CKV, ld, probs.data(), s, drop);
    expect_close("attention dqkv", dqkv, numeric_grad(qkv, loss), fd_rtol);
    loss();

    // Float backend: q, k, v, dq, dk, dv as column blocks of fused (N, ld) buffers; out and dout as
    // column blocks of wider buffers too.
    Tensor tqkv = to_backend(*be, qkv, {N, ld}), tlen;
    if (len) tlen = to_backend_i32(*be, c.lengths, {s.B});
    vec out_wide = rng.normal(N * (CQ + 2)), dout_wide(N * (CQ + 2));
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < CQ; ++j) dout_wide[i * (CQ + 2) + 1 + j] = W[i * CQ + j];
    Tensor tout = to_backend(*be, out_wide, {N, CQ + 2}), tdout = to_backend(*be, dout_wide, {N, CQ + 2});
    MatRef q = mat_cols(tqkv, 0, CQ), k = mat_cols(tqkv, CQ, CKV), v = mat_cols(tqkv, CQ + CKV, CKV);
    Tensor saved = be->attention_forward(mat_cols(tout, 1, CQ), q, k, v, s, tlen, drop);
    vec got_out = from_backend(*be, tout), want_out = out_wide;
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < CQ; ++j) want_out[i * (CQ + 2) + 1 + j] = out[i * CQ + j];
    expect_close("backend attention out", got_out, want_out, f32_rtol);
    expect_close("backend attention probs", from_backend(*be, saved), probs, f32_rtol);
    Tensor tdqkv = to_backend(*be, rng.normal(N * ld), {N, ld});  // garbage: dq, dk, dv are overwritten
    be->attention_backward(mat_cols(tdqkv, 0, CQ), mat_cols(tdqkv, CQ, CKV), mat_cols(tdqkv, CQ + CKV, CKV),
                           mat_cols(tdout, 1, CQ), q, k, v, mat_cols(tout, 1, CQ), saved, s, tlen, drop);
    expect_close("backend attention dqkv", from_backend(*be, tdqkv), dqkv, f32_rtol);
    CHECK(be->all_finite(tout));
    CHECK(be->all_finite(tdqkv));

    // Separate projections (LLaMA style), every operand with its own leading dimension so that a
    // kernel mixing up two of them fails: q, v, dout, dq, dk, dv are column blocks of padded buffers.
    auto padded = [&](const vec& x, int cols, int ld_pad, int col0) {
      vec w = rng.normal(N * (cols + ld_pad));
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < cols; ++j) w[i * (cols + ld_pad) + col0 + j] = x[i * cols + j];
      return to_backend(*be, w, {N, cols + ld_pad});
    };
    Tensor tq = padded(block(qkv, N, ld, 0, CQ), CQ, 1, 1), tk = to_backend(*be, block(qkv, N, ld, CQ, CKV), {N, CKV});
    Tensor tv = padded(block(qkv, N, ld, CQ + CKV, CKV), CKV, 2, 2), tdo = padded(W, CQ, 3, 0);
    Tensor tout2 = be->alloc({N, CQ}, DType::f32), tdq2 = be->alloc({N, CQ + 2}, DType::f32);
    Tensor tdk2 = be->alloc({N, CKV + 3}, DType::f32), tdv2 = be->alloc({N, CKV + 5}, DType::f32);
    MatRef q2 = mat_cols(tq, 1, CQ), v2 = mat_cols(tv, 2, CKV);
    Tensor saved2 = be->attention_forward(mat(tout2), q2, mat(tk), v2, s, tlen, drop);
    expect_close("backend attention out, separate q k v", from_backend(*be, tout2), out, f32_rtol);
    be->attention_backward(mat_cols(tdq2, 0, CQ), mat_cols(tdk2, 3, CKV), mat_cols(tdv2, 0, CKV), mat_cols(tdo, 0, CQ),
                           q2, mat(tk), v2, mat(tout2), saved2, s, tlen, drop);
    const char* names[3] = {"dq", "dk", "dv"};
    const Tensor* grads[3] = {&tdq2, &tdk2, &tdv2};
    const int cols[3] = {CQ, CKV, CKV}, col0[3] = {0, 3, 0}, want0[3] = {0, CQ, CQ + CKV};
    for (int i = 0; i < 3; ++i)
      expect_close(std::string("backend attention ") + names[i] + ", separate q k v",
                   block(from_backend(*be, *grads[i]), N, int(grads[i]->dim(1)), col0[i], cols[i]),
                   block(dqkv, N, ld, want0[i], cols[i]), f32_rtol);

    // Softmax rows sum to 1 over visible keys [lo, hi), masked keys get exactly 0, rows with no key are all 0.
    vec p = from_backend(*be, saved);
    const int group = s.NH / s.NKV;
    for (int b = 0; b < s.B; ++b)
      for (int h = 0; h < s.NH; ++h)
        for (int t = 0; t < s.T; ++t) {
          const int L = len ? len[b] : s.T;
          const int lo = s.window > 0 ? std::max(0, t - s.window + 1) : 0, hi = std::min(L, s.causal ? t + 1 : s.T);
          const int visible = std::max(0, hi - lo);
          double sum = 0;
          for (int t2 = 0; t2 < s.T; ++t2) {
            double pv = p[((b * s.NH + h) * s.T + t) * s.T + t2];
            if (t2 < lo || t2 >= hi) CHECK(pv == 0.0);
            sum += pv;
          }
          CHECK(sum == doctest::Approx(visible > 0 ? 1.0 : 0.0).epsilon(1e-6));
          // The output is (dropout(P) v): probability (b, h, t, t2) kept by attention_keep, scaled by 1/(1-p).
          for (int d = 0; d < s.HS; ++d) {
            double want = 0;
            for (int t2 = 0; t2 < s.T; ++t2) {
              const bool kept = drop.p == 0 || attention_keep(drop, s.NH, s.T, b, h, t, t2);
              want += kept ? p[((b * s.NH + h) * s.T + t) * s.T + t2] / (1.0 - drop.p) *
                                 qkv[(b * s.T + t2) * ld + CQ + CKV + (h / group) * s.HS + d]
                           : 0.0;
            }
            CHECK(got_out[(b * s.T + t) * (CQ + 2) + 1 + h * s.HS + d] == doctest::Approx(want).epsilon(1e-5));
          }
          // Causal: query 0 sees only key 0, so its output is v's row 0 of its kv head.
          if (drop.p == 0 && s.causal && t == 0 && L > 0)
            for (int d = 0; d < s.HS; ++d)
              CHECK(got_out[(b * s.T) * (CQ + 2) + 1 + h * s.HS + d] ==
                    float(qkv[(b * s.T) * ld + CQ + CKV + (h / group) * s.HS + d]));
          if (visible == 0)
            for (int d = 0; d < s.HS; ++d) CHECK(got_out[(b * s.T + t) * (CQ + 2) + 1 + h * s.HS + d] == 0.0);
        }
  }
}

TEST_CASE("attention with a sliding window: forward equals a brute-force masked softmax; a window >= T is none") {
  auto be = backend_cpu_create();
  Rng rng(12);
  const int B = 3, T = 9, NH = 4, NKV = 2, HS = 4, CQ = NH * HS, CKV = NKV * HS, N = B * T, group = NH / NKV;
  const std::vector<int32_t> lengths = {9, 6, 0};
  vec q = rng.normal(N * CQ), k = rng.normal(N * CKV), v = rng.normal(N * CKV);
  // Mistral's rule written out on its own (transformers' masking_utils: kv_idx <= q_idx and
  // kv_idx > q_idx - sliding_window), plus the padding: softmax over the visible keys, in double.
  auto brute = [&](int W) {
    vec out(N * CQ, 0.0);
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h)
        for (int i = 0; i < T; ++i) {
          vec e(T, 0.0);
          double mx = -INFINITY, sum = 0;
          auto seen = [&](int j) { return j <= i && j > i - W && j < lengths[b]; };
          for (int j = 0; j < T; ++j) {
            if (!seen(j)) continue;
            double sc = 0;
            for (int d = 0; d < HS; ++d) sc += q[(b * T + i) * CQ + h * HS + d] * k[(b * T + j) * CKV + (h / group) * HS + d];
            e[j] = sc / std::sqrt(double(HS));
            mx = std::max(mx, e[j]);
          }
          for (int j = 0; j < T; ++j) sum += (e[j] = seen(j) ? std::exp(e[j] - mx) : 0.0);
          for (int d = 0; d < HS; ++d)
            for (int j = 0; j < T; ++j)
              if (sum > 0) out[(b * T + i) * CQ + h * HS + d] += e[j] / sum * v[(b * T + j) * CKV + (h / group) * HS + d];
        }
    return out;
  };
  vec none(N * CQ), probs(B * NH * T * T);
  ref::attention_forward(none.data(), CQ, q.data(), CQ, k.data(), CKV, v.data(), CKV, probs.data(),
                         AttentionShape{B, T, NH, NKV, HS, true}, lengths.data(), AttentionDropout{});
  Tensor tq = to_backend(*be, q, {N, CQ}), tk = to_backend(*be, k, {N, CKV}), tv = to_backend(*be, v, {N, CKV});
  Tensor tlen = to_backend_i32(*be, lengths, {B}), tout = be->alloc({N, CQ}, DType::f32);
  for (int W : {1, 2, 5, T - 1, T, T + 3}) {
    CAPTURE(W);
    const AttentionShape s{B, T, NH, NKV, HS, true, W};
    vec out(N * CQ);
    ref::attention_forward(out.data(), CQ, q.data(), CQ, k.data(), CKV, v.data(), CKV, probs.data(), s,
                           lengths.data(), AttentionDropout{});
    expect_close("windowed attention, double", out, brute(W), 1e-12);
    be->attention_forward(mat(tout), mat(tq), mat(tk), mat(tv), s, tlen, AttentionDropout{});
    expect_close("windowed attention, cpu backend", from_backend(*be, tout), brute(W), f32_rtol);
    if (W >= T) CHECK(out == none);  // every causal key is within the window
    if (W < T) CHECK(out != none);
    if (W == 1)  // each query sees only itself: out = v of its row, where the row is inside the sequence
      for (int b = 0; b < B; ++b)
        for (int i = 0; i < lengths[b]; ++i)
          for (int h = 0; h < NH; ++h)
            for (int d = 0; d < HS; ++d)
              CHECK(out[(b * T + i) * CQ + h * HS + d] == doctest::Approx(v[(b * T + i) * CKV + (h / group) * HS + d]));
  }
  // A negative window, or a window on bidirectional attention, is refused.
  for (const AttentionShape& bad : {AttentionShape{B, T, NH, NKV, HS, true, -1}, AttentionShape{B, T, NH, NKV, HS, false, 3}})
    CHECK_THROWS(be->attention_forward(mat(tout), mat(tq), mat(tk), mat(tv), bad, tlen, AttentionDropout{}));
}

TEST_CASE("attention dropout keeps about 1-p of the probabilities; p = 0 is none, whatever the seed") {
  auto be = backend_cpu_create();
  // q = k = 0: every probability is 1/T, so with v = 1 each output is (kept keys) / (T (1-p)).
  const AttentionShape s{2, 64, 4, 4, 2, false};
  const int N = s.B * s.T, C = s.NH * s.HS;
  const float p = 0.3f;
  Tensor zeros = be->alloc({N, C}, DType::f32), ones = to_backend(*be, vec(N * C, 1.0), {N, C});
  Tensor out = be->alloc({N, C}, DType::f32);
  be->attention_forward(mat(out), mat(zeros), mat(zeros), mat(ones), s, Tensor(), AttentionDropout{p, 5, 0});
  vec o = from_backend(*be, out);
  double kept = 0;
  for (int row = 0; row < N; ++row)
    for (int h = 0; h < s.NH; ++h) {
      const double count = o[row * C + h * s.HS] * s.T * (1.0 - p);
      CHECK(count == doctest::Approx(std::round(count)).epsilon(1e-5));
      kept += count;
    }
  // Binomial(B*NH*T*T = 32768, 0.7): sd of the kept fraction is 2.5e-3; 5 sd.
  CHECK(std::abs(kept / (double(N) * s.NH * s.T) - (1.0 - p)) < 1.3e-2);

  // p = 0 with a seed and an offset is exactly no dropout; p = 1 is refused.
  Rng rng(11);
  const AttentionShape s2{2, 6, 2, 1, 4, true};
  const int N2 = s2.B * s2.T, CQ = s2.NH * s2.HS, CKV = s2.NKV * s2.HS;
  Tensor q = to_backend(*be, rng.normal(N2 * CQ), {N2, CQ}), k = to_backend(*be, rng.normal(N2 * CKV), {N2, CKV});
  Tensor v = to_backend(*be, rng.normal(N2 * CKV), {N2, CKV}), dout = to_backend(*be, rng.normal(N2 * CQ), {N2, CQ});
  vec got[2];
  const AttentionDropout none{}, zero{0.0f, 123, 456};
  for (int i = 0; i < 2; ++i) {
    const AttentionDropout& d = i == 0 ? none : zero;
    Tensor o2 = be->alloc({N2, CQ}, DType::f32), dq = be->alloc({N2, CQ}, DType::f32);
    Tensor dk = be->alloc({N2, CKV}, DType::f32), dv = be->alloc({N2, CKV}, DType::f32);
    Tensor saved = be->attention_forward(mat(o2), mat(q), mat(k), mat(v), s2, Tensor(), d);
    be->attention_backward(mat(dq), mat(dk), mat(dv), mat(dout), mat(q), mat(k), mat(v), mat(o2), saved, s2, Tensor(),
                           d);
    for (const Tensor* t : {&o2, &dq, &dk, &dv})
      for (double x : from_backend(*be, *t)) got[i].push_back(x);
  }
  CHECK(got[0] == got[1]);
  Tensor o3 = be->alloc({N2, CQ}, DType::f32);
  CHECK_THROWS(be->attention_forward(mat(o3), mat(q), mat(k), mat(v), s2, Tensor(), AttentionDropout{1.0f, 5, 0}));
}

// ---------------------------------------------------------------------------------------------------
// embeddings, loss, dropout
// ---------------------------------------------------------------------------------------------------

TEST_CASE("embedding: backward accumulates and matches finite differences; wpe may be empty") {
  auto be = backend_cpu_create();
  Rng rng(11);
  const int B = 2, T = 4, C = 5, V = 7, maxT = 6;
  std::vector<int32_t> tok(B * T);
  for (int32_t& t : tok) t = rng.uniform_int(0, V - 1);
  tok[5] = tok[1];  // a repeated token must accumulate
  vec wte = rng.normal(V * C), wpe = rng.normal(maxT * C), W = rng.normal(B * T * C), out(B * T * C);
  auto loss = [&] {
    ref::embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C, V);
    return dot(out, W);
  };
  vec dwte0 = rng.normal(V * C), dwpe0 = rng.normal(maxT * C), dwte = dwte0, dwpe = dwpe0;
  ref::embedding_backward(dwte.data(), dwpe.data(), W.data(), tok.data(), B, T, C);
  expect_close("embedding dwte", minus(dwte, dwte0), numeric_grad(wte, loss), fd_rtol);
  expect_close("embedding dwpe", minus(dwpe, dwpe0), numeric_grad(wpe, loss), fd_rtol);
  loss();

  Tensor ttok = to_backend_i32(*be, tok, {B, T});
  Tensor twte = to_backend(*be, wte, {V, C}), twpe = to_backend(*be, wpe, {maxT, C});
  Tensor tout = be->alloc({B, T, C}, DType::f32), none;
  be->embedding_forward(tout, ttok, twte, twpe);
  expect_close("backend embedding out", from_backend(*be, tout), out, f32_rtol);
  Tensor tdwte = to_backend(*be, dwte0, {V, C}), tdwpe = to_backend(*be, dwpe0, {maxT, C});
  be->embedding_backward(tdwte, tdwpe, to_backend(*be, W, {B, T, C}), ttok);
  expect_close("backend embedding dwte", from_backend(*be, tdwte), dwte, f32_rtol);
  expect_close("backend embedding dwpe", from_backend(*be, tdwpe), dwpe, f32_rtol);

  be->embedding_forward(tout, ttok, twte, none);
  vec y = from_backend(*be, tout);
  for (int n = 0; n < B * T; ++n)
    for (int c = 0; c < C; ++c) CHECK(y[n * C + c] == float(wte[tok[n] * C + c]));
  tok[3] = V;
  CHECK_THROWS_AS(be->embedding_forward(tout, to_backend_i32(*be, tok, {B, T}), twte, none), std::out_of_range);
}

TEST_CASE("cross_entropy: gradient matches finite differences with and without smoothing, ignored rows") {
  auto be = backend_cpu_create();
  Rng rng(12);
  const int N = 6, V = 9, ld = V + 3;
  const double dscale = 0.37;
  for (double eps : {0.0, 0.1}) {
    CAPTURE(eps);
    vec z = rng.normal(N * ld, 2.0);
    std::vector<int32_t> y(N);
    for (int32_t& t : y) t = rng.uniform_int(0, V - 1);
    y[2] = -100;
    vec losses(N);
    auto loss = [&] {
      vec zc = z;
      ref::cross_entropy(zc.data(), ld, losses.data(), nullptr, y.data(), N, V, eps, 0.0);
      double s = 0;
      for (double l : losses) s += dscale * l;
      return s;
    };
    vec grad = z;
    ref::cross_entropy(grad.data(), ld, losses.data(), nullptr, y.data(), N, V, eps, dscale);
    for (int i = 0; i < N; ++i)
      for (int v = V; v < ld; ++v) grad[i * ld + v] = 0;  // padding columns are not logits: zero gradient
    expect_close("cross_entropy dlogits", grad, numeric_grad(z, loss), fd_rtol);
    loss();
    CHECK(losses[2] == 0.0);
    // Independent formula for one row: PyTorch's smoothed loss written out with plain sums.
    {
      double se = 0, lp_sum = 0;
      for (int v = 0; v < V; ++v) se += std::exp(z[v]);
      for (int v = 0; v < V; ++v) lp_sum += z[v] - std::log(se);
      double want = -(1 - eps) * (z[y[0]] - std::log(se)) - eps * lp_sum / V;
      CHECK(losses[0] == doctest::Approx(want).epsilon(1e-13));
    }

    Tensor tz = to_backend(*be, z, {N, ld}), tl = be->alloc({N}, DType::f32), ta = be->alloc({N}, DType::i32);
    Tensor ty = to_backend_i32(*be, y, {N});
    be->cross_entropy(mat_cols(tz, 0, V), tl, ta, ty, float(eps), float(dscale));
    expect_close("backend cross_entropy losses", from_backend(*be, tl), losses, f32_rtol);
    vec want = grad;
    for (int i = 0; i < N; ++i)
      for (int v = V; v < ld; ++v) want[i * ld + v] = z[i * ld + v];  // untouched outside the block
    expect_close("backend cross_entropy dlogits", from_backend(*be, tz), want, f32_rtol);
    Tensor am = be->download(ta);
    for (int i = 0; i < N; ++i)
      CHECK(am.i32()[i] == int(std::max_element(z.begin() + i * ld, z.begin() + i * ld + V) - (z.begin() + i * ld)));
  }
}

TEST_CASE("cross_entropy: uniform logits give log V; huge logits stay finite") {
  auto be = backend_cpu_create();
  const int N = 3, V = 50;
  Tensor tz = be->alloc({N, V}, DType::f32), tl = be->alloc({N}, DType::f32), none;
  Tensor ty = to_backend_i32(*be, {0, 17, 49}, {N});
  for (float eps : {0.0f, 0.1f}) {
    be->fill(tz, 3.25f);
    be->cross_entropy(mat(tz), tl, none, ty, eps, 0.0f);
    for (double l : from_backend(*be, tl)) CHECK(l == doctest::Approx(std::log(double(V))).epsilon(1e-6));
  }
  Rng rng(13);
  vec z = rng.normal(N * V);
  vec zbig = z;
  // Rounded to float at 1000 (spacing 6e-5) first, so that z = zbig - 1000 is exact in both precisions.
  for (double& v : zbig) v = double(float(v + 1000.0));
  for (size_t i = 0; i < z.size(); ++i) z[i] = zbig[i] - 1000.0;
  Tensor tbig = to_backend(*be, zbig, {N, V}), tsmall = to_backend(*be, z, {N, V}), tl2 = be->alloc({N}, DType::f32);
  be->cross_entropy(mat(tbig), tl, none, ty, 0.0f, 1.0f);
  be->cross_entropy(mat(tsmall), tl2, none, ty, 0.0f, 1.0f);
  CHECK(be->all_finite(tl));
  CHECK(be->all_finite(tbig));
  expect_close("shift-invariant loss", from_backend(*be, tl), from_backend(*be, tl2), f32_rtol);
  Tensor bad = to_backend_i32(*be, {0, V, 1}, {N});
  CHECK_THROWS_AS(be->cross_entropy(mat(tsmall), tl, none, bad, 0.0f, 0.0f), std::out_of_range);
}

TEST_CASE("dropout: backward matches finite differences, keeps about 1-p, same mask for same (seed, offset)") {
  auto be = backend_cpu_create();
  Rng rng(14);
  const int n = 50;
  const float p = 0.25f;
  vec x = rng.normal(n), W = rng.normal(n), out(n), dx(n);
  auto loss = [&] {
    ref::dropout_apply(out.data(), x.data(), n, p, 1234, 77);
    return dot(out, W);
  };
  ref::dropout_apply(dx.data(), W.data(), n, p, 1234, 77);
  expect_close("dropout dinp", dx, numeric_grad(x, loss), fd_rtol);
  loss();
  Tensor tx = to_backend(*be, x, {n}), tout = be->alloc({n}, DType::f32), td = to_backend(*be, W, {n});
  be->dropout_forward(tout, tx, p, 1234, 77);
  expect_close("backend dropout out", from_backend(*be, tout), out, f32_rtol);
  be->dropout_backward(td, td, p, 1234, 77);
  expect_close("backend dropout dinp", from_backend(*be, td), dx, f32_rtol);

  const int big = 200000;
  vec ones(big, 1.0);
  Tensor a = to_backend(*be, ones, {big}), b = be->alloc({big}, DType::f32), c = be->alloc({big}, DType::f32);
  be->dropout_forward(b, a, 0.3f, 42, 1000);
  be->dropout_forward(c, a, 0.3f, 42, 1000);
  vec vb = from_backend(*be, b), vc = from_backend(*be, c);
  CHECK(vb == vc);
  int kept = 0, other = 0;
  for (double v : vb) {
    kept += v != 0.0;
    other += v != 0.0 && v != double(1.0f / 0.7f);  // kept values are exactly 1 / (1 - p) in float
  }
  CHECK(other == 0);
  // Binomial(200000, 0.7): sd of the kept fraction is 1.0e-3; 5 sd.
  CHECK(std::abs(kept / double(big) - 0.7) < 5.2e-3);
  be->dropout_forward(c, a, 0.3f, 42, 1001);  // offset + 1 shifts the mask by one element
  vc = from_backend(*be, c);
  CHECK(std::equal(vc.begin(), vc.end() - 1, vb.begin() + 1));
  be->dropout_forward(c, a, 0.3f, 43, 1000);
  CHECK(from_backend(*be, c) != vb);
  be->dropout_forward(tout, tx, 0.0f, 42, 0);
  CHECK(from_backend(*be, tout) == x);  // p = 0: a plain copy
}

TEST_CASE("rng_uniform is in [0, 1) with mean 1/2") {
  double lo = 1, hi = 0, sum = 0;
  const int n = 1000000;
  for (int i = 0; i < n; ++i) {
    float u = rng_uniform(7, uint64_t(i));
    lo = std::min(lo, double(u));
    hi = std::max(hi, double(u));
    sum += u;
  }
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);
  CHECK(std::abs(sum / n - 0.5) < 1.5e-3);  // sd of the mean is 2.9e-4; 5 sd
}

// ---------------------------------------------------------------------------------------------------
// memory, reductions, AdamW
// ---------------------------------------------------------------------------------------------------

TEST_CASE("memory: alloc is zeroed, upload/download/copy/fill round-trip, other dtypes are refused") {
  auto be = backend_cpu_create();
  CHECK(be->device() == Device::cpu);
  CHECK(be->activation_dtype() == DType::f32);
  Tensor t = be->alloc({3, 4}, DType::f32);
  for (double v : from_backend(*be, t)) CHECK(v == 0.0);
  Rng rng(15);
  vec x = rng.normal(12);
  Tensor u = to_backend(*be, x, {3, 4});
  CHECK(from_backend(*be, u) == x);
  be->copy(t, u);
  CHECK(from_backend(*be, t) == x);
  be->fill(t, -2.5f);
  for (double v : from_backend(*be, t)) CHECK(v == -2.5);
  Tensor i = to_backend_i32(*be, {1, -2, 3}, {3});
  Tensor ih = be->download(i);
  CHECK(ih.i32()[1] == -2);
  CHECK_THROWS_AS(be->alloc({2}, DType::bf16), std::logic_error);
  CHECK_THROWS_AS(be->upload(i, tensor_host({3}, DType::f32)), std::logic_error);
  CHECK_THROWS_AS(be->copy(t, tensor_host({5}, DType::f32)), std::logic_error);

  be->add(t, u, u, -0.5f);
  be->scale(t, 4.0f);
  vec y = from_backend(*be, t);
  for (int k = 0; k < 12; ++k) CHECK(y[k] == doctest::Approx(2.0 * x[k]).epsilon(1e-7));
}

TEST_CASE("sum_squares and all_finite") {
  auto be = backend_cpu_create();
  Rng rng(16);
  vec x = rng.normal(1000);
  Tensor t = to_backend(*be, x, {1000});
  CHECK(be->sum_squares(t) == doctest::Approx(dot(x, x)).epsilon(1e-12));
  CHECK(be->all_finite(t));
  x[417] = INFINITY;
  CHECK_FALSE(be->all_finite(to_backend(*be, x, {1000})));
  x[417] = NAN;
  CHECK_FALSE(be->all_finite(to_backend(*be, x, {1000})));
}

TEST_CASE("adamw: steps match the hand-computed PyTorch formula, with and without decay") {
  auto be = backend_cpu_create();
  AdamWParams hp;
  hp.lr = 0.1f;
  hp.weight_decay = 0.01f;
  hp.grad_scale = 0.5f;
  // Step 1 from zero moments: mhat = g, vhat = g^2, so p' = p (1 - lr wd) - lr g / (|g| + eps).
  // p = 0.5, grad = 0.2 -> g = 0.1: p' = 0.4995 - 0.01 / (0.1 + 1e-8).
  Tensor p = to_backend(*be, {0.5}, {1}), g = to_backend(*be, {0.2}, {1});
  Tensor m = be->alloc({1}, DType::f32), v = be->alloc({1}, DType::f32);
  be->adamw_update({{&p, &g, &m, &v, nullptr, true}}, hp);
  CHECK(from_backend(*be, p)[0] == doctest::Approx(0.5 * (1 - 0.1 * 0.01) - 0.1 * 0.1 / (0.1 + 1e-8)).epsilon(1e-6));

  // Step 3 from random moments, written as the spec states it (mhat, vhat), in double.
  Rng rng(17);
  const int n = 64;
  vec p0 = rng.normal(n), g0 = rng.normal(n), m0 = rng.normal(n, 0.1), v0 = rng.normal(n, 0.01);
  for (double& e : v0) e = std::abs(e);
  hp.step = 3;
  for (bool decay : {true, false}) {
    CAPTURE(decay);
    Tensor tp = to_backend(*be, p0, {8, 8}), tg = to_backend(*be, g0, {8, 8});
    Tensor tm = to_backend(*be, m0, {8, 8}), tv = to_backend(*be, v0, {8, 8}), shadow = be->alloc({8, 8}, DType::f32);
    be->adamw_update({{&tp, &tg, &tm, &tv, &shadow, decay}}, hp);
    const double lr = hp.lr, b1 = hp.beta1, b2 = hp.beta2, eps = hp.eps, wd = hp.weight_decay, gs = hp.grad_scale;
    vec wp(n), wm(n), wv(n);
    for (int i = 0; i < n; ++i) {
      double gi = g0[i] * gs, pi = p0[i];
      if (decay) pi -= lr * wd * pi;
      wm[i] = b1 * m0[i] + (1 - b1) * gi;
      wv[i] = b2 * v0[i] + (1 - b2) * gi * gi;
      double mhat = wm[i] / (1 - std::pow(b1, 3)), vhat = wv[i] / (1 - std::pow(b2, 3));
      wp[i] = pi - lr * mhat / (std::sqrt(vhat) + eps);
    }
    expect_close("adamw param", from_backend(*be, tp), wp, f32_rtol);
    expect_close("adamw m", from_backend(*be, tm), wm, f32_rtol);
    expect_close("adamw v", from_backend(*be, tv), wv, f32_rtol);
    CHECK(from_backend(*be, shadow) == from_backend(*be, tp));
  }
}

}  // namespace
