// The fast CPU backend (backend_cpu_fast_create, the default `cpu`) against the reference it replaces
// (backend_cpu_create, `--device ref`), op by op, on fresh random inputs (seeded from std::random_device;
// LORA_TEST_SEED replays), with the CUDA tests' f32 tolerance and comparison (tests/cuda_test_util.h):
// elementwise 1e-5 relative floored by the tensor's scale, and normwise for attention, whose outputs are
// sums of terms of either sign (as tests/test_cuda_ops.cpp argues). Outputs the fast ops overwrite are
// poisoned with NaN first, so an element they fail to write is a mismatch. Sizes have tails (not
// multiples of 8) and views with ld > cols, as the model passes them. Also: the thread pool, and errors
// on bad data raised as the reference raises them.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops/backend.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/cpu_threads.h"
#include "tests/cuda_test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using lora_test::check_close;
using lora_test::test_seed;

namespace {

const double tol = lora_test::tolerance(DType::f32);

struct Fixture {
  std::unique_ptr<Backend> ref = backend_cpu_create(), fast = backend_cpu_fast_create();
  std::mt19937_64 rng;
  explicit Fixture(uint64_t salt) : rng(test_seed() ^ salt) {}

  Tensor random(const std::vector<int64_t>& shape, float lo = -1.0f, float hi = 1.0f) {
    Tensor t = tensor_host(shape);
    std::uniform_real_distribution<float> d(lo, hi);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng);
    return t;
  }
  Tensor poisoned(const std::vector<int64_t>& shape) {
    Tensor t = tensor_host(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = NAN;
    return t;
  }
  static Tensor clone(const Tensor& t) {
    Tensor c = tensor_host(t.shape, t.dtype);
    std::memcpy(c.data, t.data, size_t(t.nbytes()));
    return c;
  }
  static Tensor ints(const std::vector<int32_t>& v) {
    Tensor t = tensor_host({int64_t(v.size())}, DType::i32);
    for (size_t i = 0; i < v.size(); ++i) t.i32()[i] = v[i];
    return t;
  }
};

double normwise_error(const Tensor& got, const Tensor& want) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = got.f32()[i], w = want.f32()[i];
    diff = std::isfinite(g) ? std::max(diff, std::fabs(g - w)) : INFINITY;
    scale = std::max(scale, std::fabs(w));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace

TEST_CASE("fast cpu: the default device is the fast backend, ref the reference") {
  auto cpu = backend_create("cpu", true), ref = backend_create("ref", true);
  CHECK(cpu->name() == "cpu");
  CHECK(ref->name() == "ref");
  CHECK(cpu->device() == Device::cpu);
  const std::string note = cpu->run_note();
  CHECK_MESSAGE(note.find(std::to_string(CpuPool::get().threads()) + " thread") != std::string::npos, note);
  CHECK_MESSAGE(note.find("OpenBLAS (kernel ") != std::string::npos, note);
}

TEST_CASE("fast cpu: gelu forward and backward (tanh and erf) against the reference") {
  Fixture F(1);
  for (GeluKind kind : {GeluKind::tanh, GeluKind::erf})
    for (int64_t n : {int64_t(1), int64_t(13), int64_t(40007)}) {
      INFO("kind " << (kind == GeluKind::tanh ? std::string("tanh") : std::string("erf")) << " n " << n);
      // Far tails (x < -6) on longer vectors only: there the reference's 1 + tanh(u) in double keeps
      // 1e-16 absolute (0 below about -9), the fast loop more; a lone element has no scale to floor it.
      const float lim = n == 1 ? 3.0f : 12.0f;
      Tensor x = F.random({n}, -lim, lim), dy = F.random({n});
      Tensor want = F.poisoned({n}), got = F.poisoned({n});
      F.ref->gelu_forward(want, x, kind);
      F.fast->gelu_forward(got, x, kind);
      check_close("gelu_forward", got, want, tol);
      Tensor dwant = F.clone(dy), dgot = F.clone(dy);  // in place, as the model calls it (dinp aliases dout)
      F.ref->gelu_backward(dwant, dwant, x, kind);
      F.fast->gelu_backward(dgot, dgot, x, kind);
      check_close("gelu_backward", dgot, dwant, tol);
    }
}

TEST_CASE("fast cpu: layernorm forward and backward against the reference") {
  Fixture F(2);
  for (int64_t C : {int64_t(5), int64_t(37), int64_t(768)})
    for (bool affine : {true, false}) {
      INFO("C " << C << " affine " << affine);
      const int64_t N = 19;
      // Rows far from zero mean with a small spread: the variance must not lose digits to x - mean.
      Tensor x = F.random({N, C}, 30.0f, 30.5f), w, b;
      if (affine) w = F.random({C}, 0.5f, 1.5f), b = F.random({C});
      Tensor out[2] = {F.poisoned({N, C}), F.poisoned({N, C})};
      Tensor mean[2] = {F.poisoned({N}), F.poisoned({N})}, rstd[2] = {F.poisoned({N}), F.poisoned({N})};
      F.ref->layernorm_forward(out[0], mean[0], rstd[0], x, w, b, 1e-5f);
      F.fast->layernorm_forward(out[1], mean[1], rstd[1], x, w, b, 1e-5f);
      check_close("layernorm out", out[1], out[0], tol);
      check_close("layernorm mean", mean[1], mean[0], tol);
      check_close("layernorm rstd", rstd[1], rstd[0], tol);

      Tensor dy = F.random({N, C}), dx0 = F.random({N, C});
      Tensor dx[2] = {F.clone(dx0), F.clone(dx0)};  // accumulated into
      Tensor dw0 = affine ? F.random({C}) : Tensor(), db0 = affine ? F.random({C}) : Tensor();
      Tensor dw[2] = {affine ? F.clone(dw0) : Tensor(), affine ? F.clone(dw0) : Tensor()};
      Tensor db[2] = {affine ? F.clone(db0) : Tensor(), affine ? F.clone(db0) : Tensor()};
      F.ref->layernorm_backward(dx[0], dw[0], db[0], dy, x, w, mean[0], rstd[0]);
      F.fast->layernorm_backward(dx[1], dw[1], db[1], dy, x, w, mean[0], rstd[0]);
      check_close("layernorm dinp", dx[1], dx[0], tol);
      if (affine) {
        check_close("layernorm dweight", dw[1], dw[0], tol);
        check_close("layernorm dbias", db[1], db[0], tol);
      }
    }
}

TEST_CASE("fast cpu: bias_add on a column block and add against the reference") {
  Fixture F(3);
  const int64_t N = 33, C = 29;
  Tensor base = F.random({N, 3 * C}), bias = F.random({C});
  Tensor got = F.clone(base), want = F.clone(base);
  F.ref->bias_add(mat_cols(want, C, C), bias);
  F.fast->bias_add(mat_cols(got, C, C), bias);
  check_close("bias_add", got, want, tol);  // the columns outside the block untouched too

  Tensor a = F.random({40001}), b = F.random({40001});
  Tensor y0 = F.poisoned({40001}), y1 = F.poisoned({40001});
  F.ref->add(y0, a, b, -0.75f);
  F.fast->add(y1, a, b, -0.75f);
  check_close("add", y1, y0, tol);
  Tensor a0 = F.clone(a), a1 = F.clone(a);  // y aliasing a
  F.ref->add(a0, a0, b, 2.0f);
  F.fast->add(a1, a1, b, 2.0f);
  check_close("add in place", a1, a0, tol);
}

TEST_CASE("fast cpu: dropout draws the reference's mask") {
  Fixture F(4);
  Tensor x = F.random({50003});
  for (float p : {0.0f, 0.1f, 1.0f}) {
    Tensor want = F.poisoned({50003}), got = F.poisoned({50003});
    F.ref->dropout_forward(want, x, p, 7, 12345);
    F.fast->dropout_forward(got, x, p, 7, 12345);
    for (int64_t i = 0; i < x.numel(); ++i)
      if (got.f32()[i] != want.f32()[i]) FAIL_CHECK("dropout p " << p << " element " << i << ": " << got.f32()[i] << " vs " << want.f32()[i]);
    F.ref->dropout_backward(want, x, p, 7, 99);
    F.fast->dropout_backward(got, x, p, 7, 99);
    check_close("dropout_backward", got, want, 0.0);
  }
}

TEST_CASE("fast cpu: attention forward and backward against the reference") {
  Fixture F(5);
  struct Case {
    int B, T, NH, NKV, HS;
    bool causal;
    std::vector<int32_t> lengths;
    int window = 0;
  };
  const Case cases[] = {
      {2, 37, 4, 2, 16, true, {37, 20}},  {2, 33, 2, 2, 64, false, {25, 0}}, {1, 70, 3, 1, 48, true, {}},
      {3, 128, 2, 2, 64, true, {128, 100, 1}}, {2, 45, 4, 2, 16, true, {45, 30}, 9}, {1, 9, 1, 1, 8, false, {}},
  };
  const AttentionDropout drops[] = {{}, {0.2f, 31, 1000}};
  for (const Case& c : cases)
    for (const AttentionDropout& drop : drops) {
      INFO("B=" << c.B << " T=" << c.T << " NH=" << c.NH << " NKV=" << c.NKV << " HS=" << c.HS << " causal="
                << c.causal << " window=" << c.window << " dropout=" << drop.p);
      AttentionShape s;
      s.B = c.B, s.T = c.T, s.NH = c.NH, s.NKV = c.NKV, s.HS = c.HS, s.causal = c.causal, s.window = c.window;
      const int64_t N = int64_t(c.B) * c.T, CQ = int64_t(c.NH) * c.HS, CKV = int64_t(c.NKV) * c.HS;
      Tensor qkv = F.random({N, CQ + 2 * CKV}, -2.0f, 2.0f);  // fused, as GPT-2's c_attn
      Tensor lengths = c.lengths.empty() ? Tensor() : F.ints(c.lengths);
      auto views = [&](const Tensor& t) {
        return std::vector<MatRef>{mat_cols(t, 0, CQ), mat_cols(t, CQ, CKV), mat_cols(t, CQ + CKV, CKV)};
      };
      auto v = views(qkv);
      Tensor out[2] = {F.poisoned({N, CQ}), F.poisoned({N, CQ})};
      Tensor saved0 = F.ref->attention_forward(mat(out[0]), v[0], v[1], v[2], s, lengths, drop);
      Tensor saved1 = F.fast->attention_forward(mat(out[1]), v[0], v[1], v[2], s, lengths, drop);
      CHECK(saved1.shape == saved0.shape);
      check_close("attention probabilities", saved1, saved0, tol);
      double err = normwise_error(out[1], out[0]);
      CHECK_MESSAGE(err <= tol, "attention out: normwise error " << err);

      Tensor dout = F.random({N, CQ});
      Tensor dqkv[2] = {F.poisoned({N, CQ + 2 * CKV}), F.poisoned({N, CQ + 2 * CKV})};
      auto d0 = views(dqkv[0]), d1 = views(dqkv[1]);
      F.ref->attention_backward(d0[0], d0[1], d0[2], mat(dout), v[0], v[1], v[2], mat(out[0]), saved0, s, lengths, drop);
      F.fast->attention_backward(d1[0], d1[1], d1[2], mat(dout), v[0], v[1], v[2], mat(out[0]), saved0, s, lengths, drop);
      err = normwise_error(dqkv[1], dqkv[0]);
      CHECK_MESSAGE(err <= tol, "attention dq|dk|dv: normwise error " << err);
    }
}

TEST_CASE("fast cpu: bad lengths and targets are refused as the reference refuses them") {
  Fixture F(6);
  AttentionShape s;
  s.B = 1, s.T = 4, s.NH = 1, s.NKV = 1, s.HS = 8;
  Tensor q = F.random({4, 8}), out = F.random({4, 8});
  CHECK_THROWS_AS(F.fast->attention_forward(mat(out), mat(q), mat(q), mat(q), s, F.ints({5}), {}), std::out_of_range);
  Tensor logits = F.random({2, 11}), losses = F.random({2}), no_argmax;
  CHECK_THROWS_AS(F.fast->cross_entropy(mat(logits), losses, no_argmax, F.ints({3, 11}), 0.0f, 1.0f),
                  std::out_of_range);
}

TEST_CASE("fast cpu: cross-entropy, its gradient and arg max against the reference") {
  Fixture F(7);
  for (int64_t V : {int64_t(7), int64_t(1003), int64_t(50257)})
    for (float smoothing : {0.0f, 0.1f})
      for (float dscale : {0.0f, 0.125f}) {
        INFO("V " << V << " smoothing " << smoothing << " dscale " << dscale);
        const int64_t N = 9;
        Tensor logits = F.random({N, V + 3}, -8.0f, 8.0f);  // a column block: ld = V + 3
        float* z = logits.f32();
        z[2 * (V + 3) + 1] = z[2 * (V + 3) + 2] = 20.0f;  // a tie: the first index wins
        z[3 * (V + 3) + 0] = NAN;                         // NaN first: arg max 0, as `z[v] > z[best]` gives
        z[4 * (V + 3) + 3] = NAN;                         // NaN later: never the arg max
        z[5 * (V + 3) + V - 1] = 30.0f;                   // the max in the tail
        std::vector<int32_t> t(static_cast<size_t>(N));
        for (int64_t i = 0; i < N; ++i) t[size_t(i)] = int32_t((i * 7919) % V);
        t[1] = -100;  // ignored
        Tensor targets = F.ints(t);
        Tensor l0 = F.clone(logits), l1 = F.clone(logits);
        Tensor loss[2] = {F.poisoned({N}), F.poisoned({N})};
        Tensor am[2] = {tensor_host({N}, DType::i32), tensor_host({N}, DType::i32)};
        F.ref->cross_entropy(mat_cols(l0, 0, V), loss[0], am[0], targets, smoothing, dscale);
        F.fast->cross_entropy(mat_cols(l1, 0, V), loss[1], am[1], targets, smoothing, dscale);
        for (int64_t i = 0; i < N; ++i) CHECK_MESSAGE(am[1].i32()[i] == am[0].i32()[i], "arg max of row " << i);
        // Rows 3 and 4 hold a NaN: their loss and gradient are NaN on both; compare the others.
        for (Tensor* l : {&l0, &l1, &loss[0], &loss[1]})
          for (int64_t row : {3, 4}) {
            if (l->ndim() == 1) l->f32()[row] = 0.0f;
            else
              for (int64_t v = 0; v < V + 3; ++v) l->f32()[row * (V + 3) + v] = 0.0f;
          }
        check_close("cross_entropy losses", loss[1], loss[0], tol);
        check_close("cross_entropy gradient", l1, l0, tol);
      }
}

TEST_CASE("fast cpu: the thread pool runs every index once and passes exceptions on") {
  CpuPool& pool = CpuPool::get();
  CHECK(pool.threads() >= 1);
  std::string why;
  CHECK(cpu_usable_cores(&why) >= 1);
  CHECK(!why.empty());
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000)}) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
    for (auto& s : seen) s.store(0);
    pool.parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) seen[size_t(i)]++;
      pool.parallel_for(4, 1, [&](int64_t, int64_t) {});  // nested: runs serially, no deadlock
    });
    for (int64_t i = 0; i < n; ++i) CHECK_MESSAGE(seen[size_t(i)] == 1, "index " << i << " of " << n);
  }
  CHECK_THROWS_AS(pool.parallel_for(100, 1, [](int64_t i0, int64_t) {
    if (i0 > 0) throw std::out_of_range("share");
    if (CpuPool::get().threads() == 1) throw std::out_of_range("one thread");
  }), std::out_of_range);
  pool.parallel_for(10, 1, [](int64_t, int64_t) {});  // usable after an exception
}

}  // namespace
