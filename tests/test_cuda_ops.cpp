// Every CUDA op against the CPU oracle (core/ops/backend_cpu.cpp), forward and backward, for f32, bf16 and f16
// activations, on fresh random inputs (seeded from std::random_device; set LORA_TEST_SEED to replay).
// Inputs are drawn on the host, uploaded to the GPU in the activation dtype, and the GPU's rounded values
// are what the CPU sees, so differences come from the ops alone. Overwritten GPU outputs are poisoned
// with NaN first, so an element the kernel fails to write shows up as a mismatch.
//
// With no usable CUDA device the suite prints "skipped: no CUDA device (<why>)" and exits 77, which ctest
// reports as skipped (tests/test_suite.h).
#include <doctest/doctest.h>

#include "tests/test_suite.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/ops/backend.h"
#include "cuda/backend_cuda.h"
#include "cuda/profile.cuh"
#include "tests/cuda_test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using lora_test::check_close;
using lora_test::test_seed;
using lora_test::tolerance;

namespace {

const std::vector<DType> kActivations = lora_test::test_activations();

// The CPU oracle beside one CUDA backend with activations in `act`.
struct Pair {
  std::unique_ptr<Backend> cpu, gpu;
  DType act;
  double tol;
  std::mt19937_64 rng;

  Pair(DType activations, uint64_t salt) : act(activations), tol(tolerance(activations)), rng(test_seed() ^ salt) {
    std::string why;
    cpu = backend_cpu_create();
    gpu = backend_cuda_create(&why, activations);
    REQUIRE_MESSAGE(gpu != nullptr, "CUDA backend: " << why);
  }

  Tensor random_host(const std::vector<int64_t>& shape, float lo = -1.0f, float hi = 1.0f) {
    Tensor t = tensor_host(shape);
    std::uniform_real_distribution<float> dist(lo, hi);
    float* p = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
    return t;
  }

  Tensor to_gpu(const Tensor& host, DType dtype) {
    Tensor t = gpu->alloc(host.shape, dtype);
    gpu->upload(t, host);
    return t;
  }

  // Random values in `dtype` on the GPU and the same (rounded) values on the CPU.
  struct Both {
    Tensor cpu, gpu;
  };
  Both random(const std::vector<int64_t>& shape, DType dtype, float lo = -1.0f, float hi = 1.0f) {
    Both b;
    b.gpu = to_gpu(random_host(shape, lo, hi), dtype);
    b.cpu = gpu->download(b.gpu);
    return b;
  }
  Both random(const std::vector<int64_t>& shape) { return random(shape, act); }
  // An output the op overwrites: zeros on the CPU, NaN on the GPU.
  Both poisoned(const std::vector<int64_t>& shape, DType dtype) {
    Both b;
    b.cpu = tensor_host(shape);
    b.gpu = gpu->alloc(shape, dtype);
    gpu->fill(b.gpu, NAN);
    return b;
  }
  Both ints(const std::vector<int64_t>& shape, const std::vector<int32_t>& values) {
    Both b;
    b.cpu = tensor_host(shape, DType::i32);
    for (int64_t i = 0; i < b.cpu.numel(); ++i) b.cpu.i32()[i] = values.at(size_t(i));
    b.gpu = gpu->alloc(shape, DType::i32);
    gpu->upload(b.gpu, b.cpu);
    return b;
  }

  void expect(const std::string& what, const Both& b, double tol_override = 0.0) {
    check_close(what + " [" + dtype_name(act) + "]", gpu->download(b.gpu), b.cpu, tol_override ? tol_override : tol);
  }
};

#define FOR_EACH_ACTIVATION(salt)                                   \
  for (DType act_ : kActivations)                                   \
    if (Pair P(act_, salt); true)                                   \
      if (INFO("activations " << std::string(dtype_name(act_)) << ", LORA_TEST_SEED=" << test_seed()); true)

}  // namespace

TEST_CASE("cuda matmul: transposes, alpha/beta, column blocks") {
  FOR_EACH_ACTIVATION(1) {
    const int64_t M = 37, K = 53, N = 29;
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        // a and out are column blocks of wider buffers (odd offsets: unaligned for 16-bit dtypes).
        auto a = P.random({ta ? K : M, (ta ? M : K) + 5});
        auto b = P.random({tb ? N : K, tb ? K : N});
        auto out = P.random({M, N + 3});
        const int64_t acols = ta ? M : K;
        P.cpu->matmul(mat_cols(out.cpu, 1, N), mat_cols(a.cpu, 3, acols), mat(b.cpu), ta, tb, 1.5f, 0.5f);
        P.gpu->matmul(mat_cols(out.gpu, 1, N), mat_cols(a.gpu, 3, acols), mat(b.gpu), ta, tb, 1.5f, 0.5f);
        P.expect("matmul ta=" + std::to_string(ta) + " tb=" + std::to_string(tb), out);
      }
    if (P.act != DType::f32) {  // 16-bit operands into an f32 output, beta = 0
      auto a = P.random({M, K});
      auto b = P.random({K, N});
      auto out = P.poisoned({M, N}, DType::f32);
      P.cpu->matmul(mat(out.cpu), mat(a.cpu), mat(b.cpu), false, false, 1.0f, 0.0f);
      P.gpu->matmul(mat(out.gpu), mat(a.gpu), mat(b.gpu), false, false, 1.0f, 0.0f);
      P.expect("matmul into f32", out, tolerance(DType::f32) * 10);  // fp32 output: only accumulation order differs
    }
  }
}

// The fused GEMM epilogues against the CPU's unfused ops: (M,N) outputs with N a multiple of 8 (cuBLASLt's
// epilogue path), and N = 30, where CUDA runs the same ops unfused.
TEST_CASE("cuda matmul_epilogue: bias, bias + GELU keeping its input, GELU backward") {
  FOR_EACH_ACTIVATION(11) {
    for (int64_t N : {40, 30})
      for (int tb = 0; tb < 2; ++tb) {
        const int64_t M = 21, K = 48;
        const std::string shape = " N=" + std::to_string(N) + " tb=" + std::to_string(tb);
        auto a = P.random({M, K});
        auto b = P.random({tb ? N : K, tb ? K : N});
        auto bias = P.random({N});
        auto out = P.poisoned({M, N}, P.act);
        Tensor none;
        P.cpu->matmul_epilogue(out.cpu, a.cpu, b.cpu, false, tb, Epilogue::bias, bias.cpu, none);
        P.gpu->matmul_epilogue(out.gpu, a.gpu, b.gpu, false, tb, Epilogue::bias, bias.gpu, none);
        P.expect("bias" + shape, out);

        auto pre = P.poisoned({M, N}, P.act);
        auto act = P.poisoned({M, N}, P.act);
        P.cpu->matmul_epilogue(act.cpu, a.cpu, b.cpu, false, tb, Epilogue::bias_gelu, bias.cpu, pre.cpu);
        P.gpu->matmul_epilogue(act.gpu, a.gpu, b.gpu, false, tb, Epilogue::bias_gelu, bias.gpu, pre.gpu);
        P.expect("bias_gelu: GELU input (aux)" + shape, pre);
        P.expect("bias_gelu: output" + shape, act);
        P.cpu->matmul_epilogue(act.cpu, a.cpu, b.cpu, false, tb, Epilogue::bias_gelu, none, pre.cpu);
        P.gpu->matmul_epilogue(act.gpu, a.gpu, b.gpu, false, tb, Epilogue::bias_gelu, none, pre.gpu);
        P.expect("gelu without bias: GELU input (aux)" + shape, pre);
        P.expect("gelu without bias: output" + shape, act);

        // dgelu: d pre = (dy W^T) * gelu'(pre), dy (M,K2) and W (N,K2) as a linear layer's backward has them.
        const int64_t K2 = 24;
        auto dy = P.random({M, K2});
        auto w = P.random({tb ? K2 : N, tb ? N : K2});
        auto gin = P.random({M, N}, P.act, -3.0f, 3.0f);
        auto dpre = P.poisoned({M, N}, P.act);
        P.cpu->matmul_epilogue(dpre.cpu, dy.cpu, w.cpu, false, !tb, Epilogue::dgelu, none, gin.cpu);
        P.gpu->matmul_epilogue(dpre.gpu, dy.gpu, w.gpu, false, !tb, Epilogue::dgelu, none, gin.gpu);
        P.expect("dgelu" + shape, dpre);
      }
  }
}

TEST_CASE("cuda elementwise: bias, add, scale, fill, copy") {
  FOR_EACH_ACTIVATION(2) {
    auto out = P.random({19, 70});
    auto bias = P.random({70});
    P.cpu->bias_add(mat(out.cpu), bias.cpu);
    P.gpu->bias_add(mat(out.gpu), bias.gpu);
    P.expect("bias_add", out);

    auto dout = P.random({300, 70});
    auto dbias = P.random({70}, DType::f32);
    P.cpu->bias_backward(dbias.cpu, mat(dout.cpu));
    P.gpu->bias_backward(dbias.gpu, mat(dout.gpu));
    P.expect("bias_backward", dbias);

    auto y = P.random({1000});
    auto x = P.random({1000});
    P.cpu->add(y.cpu, y.cpu, x.cpu, -0.75f);
    P.gpu->add(y.gpu, y.gpu, x.gpu, -0.75f);
    P.expect("add (aliased)", y);
    P.cpu->scale(y.cpu, 3.0f);
    P.gpu->scale(y.gpu, 3.0f);
    P.expect("scale", y);

    auto f = P.poisoned({77}, P.act);
    P.cpu->fill(f.cpu, 0.25f);
    P.gpu->fill(f.gpu, 0.25f);
    P.expect("fill", f);

    auto src = P.random({513});
    Pair::Both dst{tensor_host({513}), P.gpu->alloc({513}, DType::f32)};
    P.cpu->copy(dst.cpu, src.cpu);
    P.gpu->copy(dst.gpu, src.gpu);
    P.expect("copy to f32", dst, 1e-7);
  }
}

TEST_CASE("cuda layernorm and rmsnorm, forward and backward") {
  FOR_EACH_ACTIVATION(3) {
    const int64_t N = 13, C = 67;
    auto inp = P.random({N, C}, P.act, -2.0f, 3.0f);
    auto weight = P.random({C});
    auto bias = P.random({C});
    auto out = P.poisoned({N, C}, P.act);
    auto mean = P.poisoned({N}, DType::f32);
    auto rstd = P.poisoned({N}, DType::f32);
    P.cpu->layernorm_forward(out.cpu, mean.cpu, rstd.cpu, inp.cpu, weight.cpu, bias.cpu, 1e-5f);
    P.gpu->layernorm_forward(out.gpu, mean.gpu, rstd.gpu, inp.gpu, weight.gpu, bias.gpu, 1e-5f);
    P.expect("layernorm out", out);
    P.expect("layernorm mean", mean, 1e-5);
    P.expect("layernorm rstd", rstd, 1e-5);

    auto dout = P.random({N, C});
    auto dinp = P.random({N, C});  // accumulated into
    auto dweight = P.random({C}, DType::f32);
    auto dbias = P.random({C}, DType::f32);
    P.cpu->layernorm_backward(dinp.cpu, dweight.cpu, dbias.cpu, dout.cpu, inp.cpu, weight.cpu, mean.cpu, rstd.cpu);
    P.gpu->layernorm_backward(dinp.gpu, dweight.gpu, dbias.gpu, dout.gpu, inp.gpu, weight.gpu, mean.gpu, rstd.gpu);
    P.expect("layernorm dinp", dinp);
    P.expect("layernorm dweight", dweight);
    P.expect("layernorm dbias", dbias);

    auto rout = P.poisoned({N, C}, P.act);
    auto rrstd = P.poisoned({N}, DType::f32);
    P.cpu->rmsnorm_forward(rout.cpu, rrstd.cpu, inp.cpu, weight.cpu, 1e-6f);
    P.gpu->rmsnorm_forward(rout.gpu, rrstd.gpu, inp.gpu, weight.gpu, 1e-6f);
    P.expect("rmsnorm out", rout);
    P.expect("rmsnorm rstd", rrstd, 1e-5);
    auto rdinp = P.random({N, C});
    auto rdweight = P.random({C}, DType::f32);
    P.cpu->rmsnorm_backward(rdinp.cpu, rdweight.cpu, dout.cpu, inp.cpu, weight.cpu, rrstd.cpu);
    P.gpu->rmsnorm_backward(rdinp.gpu, rdweight.gpu, dout.gpu, inp.gpu, weight.gpu, rrstd.gpu);
    P.expect("rmsnorm dinp", rdinp);
    P.expect("rmsnorm dweight", rdweight);
  }
}

TEST_CASE("cuda gelu and swiglu, forward and backward") {
  FOR_EACH_ACTIVATION(4) {
    for (GeluKind kind : {GeluKind::tanh, GeluKind::erf}) {
      const std::string name = kind == GeluKind::tanh ? "gelu tanh" : "gelu erf";
      auto inp = P.random({11, 97}, P.act, -4.0f, 4.0f);
      auto out = P.poisoned({11, 97}, P.act);
      P.cpu->gelu_forward(out.cpu, inp.cpu, kind);
      P.gpu->gelu_forward(out.gpu, inp.gpu, kind);
      P.expect(name + " forward", out);
      auto dout = P.random({11, 97});
      P.cpu->gelu_backward(dout.cpu, dout.cpu, inp.cpu, kind);  // dinp aliases dout
      P.gpu->gelu_backward(dout.gpu, dout.gpu, inp.gpu, kind);
      P.expect(name + " backward (aliased)", dout);
    }
    auto gate = P.random({9, 130}, P.act, -5.0f, 5.0f);
    auto up = P.random({9, 130});
    auto out = P.poisoned({9, 130}, P.act);
    P.cpu->swiglu_forward(out.cpu, gate.cpu, up.cpu);
    P.gpu->swiglu_forward(out.gpu, gate.gpu, up.gpu);
    P.expect("swiglu forward", out);
    auto dout = P.random({9, 130});
    auto dgate = P.poisoned({9, 130}, P.act);
    auto dup = P.poisoned({9, 130}, P.act);
    P.cpu->swiglu_backward(dgate.cpu, dup.cpu, dout.cpu, gate.cpu, up.cpu);
    P.gpu->swiglu_backward(dgate.gpu, dup.gpu, dout.gpu, gate.gpu, up.gpu);
    P.expect("swiglu dgate", dgate);
    P.expect("swiglu dup", dup);
  }
}

TEST_CASE("cuda rope on a column block, forward and inverse") {
  FOR_EACH_ACTIVATION(5) {
    const int B = 2, T = 45, NH = 3, HS = 32;
    auto qkv = P.random({B * T, 3 * NH * HS});
    for (bool inverse : {false, true}) {
      P.cpu->rope(mat_cols(qkv.cpu, NH * HS, NH * HS), B, T, NH, HS, 10000.0f, inverse);
      P.gpu->rope(mat_cols(qkv.gpu, NH * HS, NH * HS), B, T, NH, HS, 10000.0f, inverse);
      P.expect(inverse ? "rope inverse" : "rope forward", qkv);
      qkv.cpu = P.gpu->download(qkv.gpu);  // the inverse starts from the GPU's rounded rotation, on both
    }
  }
}

TEST_CASE("cuda rope_at on a column block, each row at its own position") {
  FOR_EACH_ACTIVATION(5) {
    const int N = 37, NH = 3, HS = 32;
    auto qkv = P.random({N, 3 * NH * HS});
    Tensor pos = tensor_host({N}, DType::i32);
    for (int n = 0; n < N; ++n) pos.i32()[n] = (n * 37) % 1000;  // up to 999: angles past fp32's exactness
    Tensor pos_gpu = P.gpu->alloc({N}, DType::i32);
    P.gpu->upload(pos_gpu, pos);
    P.cpu->rope_at(mat_cols(qkv.cpu, NH * HS, NH * HS), pos, NH, HS, 10000.0f);
    P.gpu->rope_at(mat_cols(qkv.gpu, NH * HS, NH * HS), pos_gpu, NH, HS, 10000.0f);
    P.expect("rope_at", qkv);
  }
}

// The tensor-core attention (cuda/attention_tc.cu: q, k, v of one 16-bit dtype, head size 64 or 128) rounds
// the probabilities P and the score gradients dS to the operand dtype before multiplying them, as
// FlashAttention does: its results differ from the fp32 oracle by more than the output's rounding. Its
// same-precision reference computes the same algorithm in double, rounding where the kernels round (P per
// 64-key tile against the running max; dS and P in the backward) and at the output; the GPU must equal
// it to the dtype's tolerance, and be no worse than twice its normwise error against the fp32 oracle
// (the rule every low-precision result here follows).
bool attention_on_tensor_cores(DType act, int HS) {
  const char* env = std::getenv("LORA_ATTENTION");
  return act != DType::f32 && (HS == 64 || HS == 128) && !(env && std::string(env) == "simple");
}

float round_to(DType t, double x) {
  if (t == DType::bf16) return __bfloat162float(__float2bfloat16_rn(float(x)));
  if (t == DType::f16) return __half2float(__float2half_rn(float(x)));
  return float(x);
}

struct AttentionLowp {
  Tensor out, dqkv;  // f32 host: (N, CQ) and (N, CQ + 2 CKV) like the test's buffers
};

// q, k, v: column blocks (offsets 0, CQ, CQ + CKV) of qkv (N, CQ + 2 CKV); dout (N, CQ); D from out.
// Dropout as the kernels apply it: P after dropout (P * factor) rounded before its products.
AttentionLowp attention_lowp_reference(DType act, const AttentionShape& s, const std::vector<int32_t>& lengths,
                                       const Tensor& qkv, const Tensor& dout, const Tensor& out,
                                       const AttentionDropout& drop) {
  const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, group = s.NH / s.NKV;
  const int64_t CQ = int64_t(NH) * HS, CKV = int64_t(s.NKV) * HS, W = CQ + 2 * CKV;
  const double scale = 1.0 / std::sqrt(double(HS));
  AttentionLowp r{tensor_host({int64_t(B) * T, CQ}), tensor_host({int64_t(B) * T, W})};
  std::fill(r.dqkv.f32(), r.dqkv.f32() + r.dqkv.numel(), 0.0f);
  std::vector<double> dq(size_t(B) * T * CQ, 0.0), dkv(size_t(B) * T * 2 * CKV, 0.0);
  const float* x = qkv.f32();
  auto q = [&](int b, int t, int h, int d) { return double(x[(int64_t(b) * T + t) * W + int64_t(h) * HS + d]); };
  auto k = [&](int b, int t, int g, int d) { return double(x[(int64_t(b) * T + t) * W + CQ + int64_t(g) * HS + d]); };
  auto v = [&](int b, int t, int g, int d) {
    return double(x[(int64_t(b) * T + t) * W + CQ + CKV + int64_t(g) * HS + d]);
  };
  for (int b = 0; b < B; ++b) {
    const int len = lengths.empty() ? T : std::min(lengths[size_t(b)], T);
    for (int h = 0; h < NH; ++h) {
      const int g = h / group;
      for (int t = 0; t < T; ++t) {
        auto vis = [&](int j) { return j < len && (!s.causal || j <= t) && (s.window == 0 || t - j < s.window); };
        auto factor = [&](int j) {
          return drop.p == 0 ? 1.0 : attention_keep(drop, NH, T, b, h, t, j) ? 1.0 / (1.0 - double(drop.p)) : 0.0;
        };
        auto score = [&](int j) {
          double acc = 0;
          for (int d = 0; d < HS; ++d) acc += q(b, t, h, d) * k(b, j, g, d);
          return acc * scale;
        };
        // Forward, key tile by key tile as the kernel walks them.
        const int q0 = t / 64 * 64, kend = s.causal ? std::min(len, q0 + 64) : len;
        double m = -INFINITY, l = 0;
        std::vector<double> o(size_t(HS), 0.0);
        for (int k0 = 0; k0 < kend; k0 += 64) {
          double m_new = m;
          for (int j = k0; j < std::min(k0 + 64, T); ++j)
            if (vis(j)) m_new = std::max(m_new, score(j));
          if (m_new == -INFINITY) continue;
          const double corr = std::exp(m - m_new);
          l *= corr;
          for (double& e : o) e *= corr;
          for (int j = k0; j < std::min(k0 + 64, T); ++j) {
            if (!vis(j)) continue;
            const double p = std::exp(score(j) - m_new);
            l += p;
            const double pr = round_to(act, p * factor(j));
            for (int d = 0; d < HS; ++d) o[size_t(d)] += pr * v(b, j, g, d);
          }
          m = m_new;
        }
        const int64_t row = int64_t(b) * T + t;
        for (int d = 0; d < HS; ++d) r.out.f32()[row * CQ + int64_t(h) * HS + d] = round_to(act, l > 0 ? o[size_t(d)] / l : 0.0);
        if (l == 0) continue;
        // Backward for this query row.
        const double lse = m + std::log(l);
        double D = 0;
        for (int d = 0; d < HS; ++d)
          D += double(dout.f32()[row * CQ + int64_t(h) * HS + d]) * double(out.f32()[row * CQ + int64_t(h) * HS + d]);
        for (int j = 0; j < len; ++j) {
          if (!vis(j)) continue;
          const double p = std::exp(score(j) - lse);
          double dp = 0;
          for (int d = 0; d < HS; ++d) dp += double(dout.f32()[row * CQ + int64_t(h) * HS + d]) * v(b, j, g, d);
          const double ds = round_to(act, p * (dp * factor(j) - D)), pr = round_to(act, p * factor(j));
          const int64_t rj = int64_t(b) * T + j;
          for (int d = 0; d < HS; ++d) {
            dq[size_t(row * CQ + int64_t(h) * HS + d)] += scale * ds * k(b, j, g, d);
            dkv[size_t(rj * 2 * CKV + int64_t(g) * HS + d)] += scale * ds * q(b, t, h, d);
            dkv[size_t(rj * 2 * CKV + CKV + int64_t(g) * HS + d)] +=
                pr * double(dout.f32()[row * CQ + int64_t(h) * HS + d]);
          }
        }
      }
    }
  }
  for (int64_t row = 0; row < int64_t(B) * T; ++row) {
    for (int64_t c = 0; c < CQ; ++c) r.dqkv.f32()[row * W + c] = round_to(act, dq[size_t(row * CQ + c)]);
    for (int64_t c = 0; c < 2 * CKV; ++c) r.dqkv.f32()[row * W + CQ + c] = round_to(act, dkv[size_t(row * 2 * CKV + c)]);
  }
  return r;
}

double normwise_error(const Tensor& got, const Tensor& want) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    diff = std::max(diff, std::fabs(double(got.f32()[i]) - double(want.f32()[i])));
    scale = std::max(scale, std::fabs(double(want.f32()[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// The GPU against the same-precision reference, normwise within the dtype's tolerance (not elementwise:
// the kernels' f32 scores differ from the reference's double ones in the last bits, so now and then a
// probability rounds the other way, which moves its row by a unit of P's last place), and against the
// fp32 oracle, no worse than twice the reference's error.
void expect_lowp(const std::string& what, DType act, const Tensor& got, const Tensor& lowp, const Tensor& fp32) {
  const double to_ref = normwise_error(got, lowp);
  CHECK_MESSAGE(to_ref <= tolerance(act), what << " [" << std::string(dtype_name(act)) << "] normwise error against the "
                                                  << "same-precision reference " << to_ref);
  const double err = normwise_error(got, fp32), ref = normwise_error(lowp, fp32);
  MESSAGE(what << " [" << std::string(dtype_name(act)) << "]: against the reference " << to_ref << "; against fp32 " << err
               << ", the reference's " << ref);
  CHECK_MESSAGE(err <= 2.0 * ref, what << " [" << std::string(dtype_name(act)) << "] normwise error against fp32 " << err
                                       << ", the same-precision reference's " << ref);
}

TEST_CASE("cuda attention: causal and bidirectional, padding, grouped KV, sliding window, forward, backward, dropout") {
  struct Case {
    int B, T, NH, NKV, HS;
    bool causal;
    std::vector<int32_t> lengths;  // empty: no padding
    int window = 0;
  };
  // The windowed cases: T = 200 spans four 64-row tiles of the tensor-core kernels (HS 64; the fp32
  // kernels' 16-row blocks and 32-wide tiles in f32), so blocks skip whole key tiles and cut others, and
  // one on the fp32 kernels (HS 16) in every dtype. The windows put tile bounds where an error of one
  // shows: with 66 (2 mod 64 and mod 32) a block's first visible key opens a key tile (tensor-core and
  // fp32 kernels) and a key block's last viewer opens a query tile (tensor cores); with 18, a key block's
  // last viewer opens a query tile of the fp32 dk/dv kernel (16 + 18 - 2 = 32). Skipping one tile too
  // many at either end then changes the result (checked by breaking key_begin and query_end by one).
  const Case cases[] = {
      {2, 37, 4, 2, 16, true, {37, 20}},  {2, 33, 2, 2, 64, false, {25, 33}}, {1, 70, 3, 1, 48, true, {}},
      {1, 40, 2, 1, 128, true, {}},       {1, 20, 1, 1, 256, false, {13}},
      {2, 200, 4, 2, 64, true, {200, 137}, 66}, {2, 37, 4, 2, 16, true, {37, 20}, 18},
  };
  // Without dropout, and with dropout on the probabilities: the GPU regenerates the CPU's mask from the
  // same (seed, offset, b, h, i, j), so the comparison and its tolerance are the same.
  const AttentionDropout drops[] = {{}, {0.2f, 31, 1000}};
  FOR_EACH_ACTIVATION(6) {
    for (const Case& c : cases)
    for (const AttentionDropout& drop : drops) {
      INFO("B=" << c.B << " T=" << c.T << " NH=" << c.NH << " NKV=" << c.NKV << " HS=" << c.HS
                << " causal=" << c.causal << " window=" << c.window << " dropout=" << drop.p);
      AttentionShape s;
      s.B = c.B; s.T = c.T; s.NH = c.NH; s.NKV = c.NKV; s.HS = c.HS; s.causal = c.causal; s.window = c.window;
      const int64_t N = int64_t(c.B) * c.T, CQ = int64_t(c.NH) * c.HS, CKV = int64_t(c.NKV) * c.HS;
      auto qkv = P.random({N, CQ + 2 * CKV}, P.act, -2.0f, 2.0f);  // fused, as GPT-2's c_attn
      Pair::Both lengths;
      if (!c.lengths.empty()) lengths = P.ints({c.B}, c.lengths);
      auto out = P.poisoned({N, CQ}, P.act);
      auto views = [&](const Tensor& t) {
        return std::vector<MatRef>{mat_cols(t, 0, CQ), mat_cols(t, CQ, CKV), mat_cols(t, CQ + CKV, CKV)};
      };
      auto vc = views(qkv.cpu), vg = views(qkv.gpu);
      Tensor saved_cpu = P.cpu->attention_forward(mat(out.cpu), vc[0], vc[1], vc[2], s, lengths.cpu, drop);
      Tensor saved_gpu = P.gpu->attention_forward(mat(out.gpu), vg[0], vg[1], vg[2], s, lengths.gpu, drop);
      const bool tc = attention_on_tensor_cores(P.act, c.HS);
      // In f32 the comparison is normwise: each output element is a sum of terms of either sign (p v in
      // the forward, dS k and dS q in the backward), and where they cancel, an element far below the
      // terms' size carries their rounding, so its own relative error has no bound; the tensor's scale
      // does: normwise errors were at most 9.8e-7 over 16 seeds, while elementwise about one run in four
      // failed by a hair (max_rel 1.04e-5 against 1e-5, at elements far below the row's scale). In
      // bf16 and f16 the output's own rounding dominates and the check stays elementwise.
      auto expect_attention = [&](const std::string& what, const Pair::Both& b) {
        if (P.act != DType::f32) return P.expect(what, b);
        const double err = normwise_error(P.gpu->download(b.gpu), b.cpu);
        CHECK_MESSAGE(err <= P.tol, what << " [f32]: normwise error " << err << " > " << P.tol);
      };
      if (!tc) expect_attention("attention out", out);

      auto dout = P.random({N, CQ});
      auto dqkv = P.poisoned({N, CQ + 2 * CKV}, P.act);
      auto dc = views(dqkv.cpu), dg = views(dqkv.gpu);
      // The GPU's backward reads out for D = rowsum(dout * out), as FlashAttention does; the CPU oracle
      // computes D = sum_j P dP from its probabilities, which equals it for the exact out. Both get the
      // CPU's f32 out here, so that this compares arithmetic: with the rounded out the GPU's D moves by
      // out's rounding, amplified by the cancellation in dP - D, an effect of the dtype that
      // test_cuda_train measures end to end.
      Tensor out_exact = P.to_gpu(out.cpu, DType::f32);
      P.cpu->attention_backward(dc[0], dc[1], dc[2], mat(dout.cpu), vc[0], vc[1], vc[2], mat(out.cpu), saved_cpu, s,
                                lengths.cpu, drop);
      P.gpu->attention_backward(dg[0], dg[1], dg[2], mat(dout.gpu), vg[0], vg[1], vg[2], mat(out_exact), saved_gpu, s,
                                lengths.gpu, drop);
      if (!tc) {
        expect_attention("attention dq|dk|dv", dqkv);
        continue;
      }
      // The tensor-core path takes dout in q's dtype; give it the same rounded dout as the reference.
      AttentionLowp lowp = attention_lowp_reference(P.act, s, c.lengths, qkv.cpu, dout.cpu, out.cpu, drop);
      expect_lowp("attention out (tensor cores)", P.act, P.gpu->download(out.gpu), lowp.out, out.cpu);
      expect_lowp("attention dq|dk|dv (tensor cores)", P.act, P.gpu->download(dqkv.gpu), lowp.dqkv, dqkv.cpu);
    }
  }
}

TEST_CASE("cuda attention_decode: left padding, reordered rows, grouped KV, with and without a sliding window") {
  // Three rows left-padded to start at slots 0, 5 and 20; a prefill of 40 slots, then 3 more with the
  // rows reordered through slot_rows as beam search does (rows 1 and 2 both continue row 0). Windows: none,
  // 24 (the prefill's late queries lose their first slots) and 5 (a few slots each).
  const int R = 3, RC = 4, NH = 4, NKV = 2, S = 50;
  const std::vector<int32_t> start = {0, 5, 20}, perm = {2, 0, 0};
  FOR_EACH_ACTIVATION(12) {
    for (int HS : {16, 64})
    for (int window : {0, 24, 5}) {
      INFO("HS=" << HS << " window=" << window);
      const int64_t CQ = int64_t(NH) * HS, CKV = int64_t(NKV) * HS;
      AttentionShape s;
      s.B = R; s.NH = NH; s.NKV = NKV; s.HS = HS; s.causal = true; s.window = window;
      Pair::Both kc{tensor_host({S, RC, CKV}), P.gpu->alloc({S, RC, CKV}, P.act)};
      Pair::Both vc{tensor_host({S, RC, CKV}), P.gpu->alloc({S, RC, CKV}, P.act)};
      for (int chunk = 0; chunk < 2; ++chunk) {
        const int slot0 = chunk == 0 ? 0 : 40, T = chunk == 0 ? 40 : 3;
        INFO("slots " << slot0 << ".." << slot0 + T - 1);
        s.T = T;
        std::vector<int32_t> st(start), table;
        if (chunk == 1) {
          for (int r = 0; r < R; ++r) st[size_t(r)] = start[size_t(perm[size_t(r)])];
          for (int j = 0; j < slot0; ++j) table.insert(table.end(), perm.begin(), perm.end());
        }
        auto st_both = P.ints({R}, st);
        Pair::Both rows;
        if (!table.empty()) rows = P.ints({slot0, R}, table);
        auto q = P.random({int64_t(R) * T, CQ}), k = P.random({int64_t(R) * T, CKV}), v = P.random({int64_t(R) * T, CKV});
        auto out = P.poisoned({int64_t(R) * T, CQ}, P.act);
        P.cpu->attention_decode(mat(out.cpu), mat(q.cpu), mat(k.cpu), mat(v.cpu), kc.cpu, vc.cpu, st_both.cpu, rows.cpu,
                                slot0, s);
        P.gpu->attention_decode(mat(out.gpu), mat(q.gpu), mat(k.gpu), mat(v.gpu), kc.gpu, vc.gpu, st_both.gpu, rows.gpu,
                                slot0, s);
        // f32 normwise, as the attention test above explains; bf16 and f16 elementwise.
        if (P.act == DType::f32) {
          const double err = normwise_error(P.gpu->download(out.gpu), out.cpu);
          CHECK_MESSAGE(err <= P.tol, "attention_decode out [f32]: normwise error " << err << " > " << P.tol);
        } else {
          P.expect("attention_decode out", out);
        }
      }
    }
  }
}

TEST_CASE("cuda embedding, forward and backward") {
  FOR_EACH_ACTIVATION(7) {
    const int B = 3, T = 7, V = 50, C = 24;
    std::vector<int32_t> toks;
    std::uniform_int_distribution<int> pick(0, 9);  // a small range, so tokens repeat
    for (int i = 0; i < B * T; ++i) toks.push_back(pick(P.rng) * 5);
    auto tokens = P.ints({B, T}, toks);
    auto wte = P.random({V, C});
    auto wpe = P.random({T + 3, C});
    auto out = P.poisoned({B, T, C}, P.act);
    P.cpu->embedding_forward(out.cpu, tokens.cpu, wte.cpu, wpe.cpu);
    P.gpu->embedding_forward(out.gpu, tokens.gpu, wte.gpu, wpe.gpu);
    P.expect("embedding out", out);
    auto dout = P.random({B, T, C});
    auto dwte = P.random({V, C}, DType::f32);
    auto dwpe = P.random({T + 3, C}, DType::f32);
    P.cpu->embedding_backward(dwte.cpu, dwpe.cpu, dout.cpu, tokens.cpu);
    P.gpu->embedding_backward(dwte.gpu, dwpe.gpu, dout.gpu, tokens.gpu);
    P.expect("embedding dwte", dwte);
    P.expect("embedding dwpe", dwpe);
  }
}

TEST_CASE("cuda cross_entropy: ignore index, label smoothing, gradient in place, argmax") {
  FOR_EACH_ACTIVATION(8) {
    const int64_t N = 9, V = 1000;
    std::vector<int32_t> t;
    std::uniform_int_distribution<int> pick(0, int(V) - 1);
    for (int64_t i = 0; i < N; ++i) t.push_back(i % 4 == 2 ? -100 : pick(P.rng));
    auto targets = P.ints({N}, t);
    for (float eps : {0.0f, 0.1f}) {
      auto logits = P.random({N, V + 3}, P.act, -6.0f, 6.0f);  // a column block: ld = V + 3
      auto losses = P.poisoned({N}, DType::f32);
      Pair::Both argmax{tensor_host({N}, DType::i32), P.gpu->alloc({N}, DType::i32)};
      P.cpu->cross_entropy(mat_cols(logits.cpu, 0, V), losses.cpu, argmax.cpu, targets.cpu, eps, 0.37f);
      P.gpu->cross_entropy(mat_cols(logits.gpu, 0, V), losses.gpu, argmax.gpu, targets.gpu, eps, 0.37f);
      const std::string tag = " eps=" + std::to_string(eps);
      P.expect("cross_entropy losses" + tag, losses, 1e-5);  // fp32 math on identical inputs
      P.expect("cross_entropy dlogits" + tag, logits);
      Tensor am = P.gpu->download(argmax.gpu);
      for (int64_t i = 0; i < N; ++i) CHECK_MESSAGE(am.i32()[i] == argmax.cpu.i32()[i], "argmax row " << i);
    }
  }
}

TEST_CASE("cuda dropout matches the CPU mask") {
  FOR_EACH_ACTIVATION(9) {
    auto x = P.random({4099});
    P.cpu->dropout_forward(x.cpu, x.cpu, 0.3f, 1234, 5678);
    P.gpu->dropout_forward(x.gpu, x.gpu, 0.3f, 1234, 5678);
    P.expect("dropout forward (aliased)", x);
    auto d = P.random({4099});
    auto dinp = P.poisoned({4099}, P.act);
    P.cpu->dropout_backward(dinp.cpu, d.cpu, 0.3f, 99, 7);
    P.gpu->dropout_backward(dinp.gpu, d.gpu, 0.3f, 99, 7);
    P.expect("dropout backward", dinp);
  }
}

TEST_CASE("cuda sum_squares and all_finite") {
  FOR_EACH_ACTIVATION(10) {
    auto x = P.random({100003});
    const double want = P.cpu->sum_squares(x.cpu), got = P.gpu->sum_squares(x.gpu);
    CHECK_MESSAGE(std::fabs(got - want) <= 1e-6 * want, "sum_squares " << got << " vs " << want);
    CHECK(P.gpu->all_finite(x.gpu));
    Tensor host = P.gpu->download(x.gpu);
    host.f32()[77777] = INFINITY;
    P.gpu->upload(x.gpu, host);
    CHECK_FALSE(P.gpu->all_finite(x.gpu));
    host.f32()[77777] = NAN;
    P.gpu->upload(x.gpu, host);
    CHECK_FALSE(P.gpu->all_finite(x.gpu));
  }
}

TEST_CASE("cuda adamw over several slots, with shadows") {
  FOR_EACH_ACTIVATION(11) {
    const int64_t sizes[] = {5000, 7, 300};  // 5000 spans several blocks
    std::vector<Pair::Both> param, grad, m, v, shadow;
    for (int64_t n : sizes) {
      param.push_back(P.random({n}, DType::f32));
      grad.push_back(P.random({n}, DType::f32));
      m.push_back(P.random({n}, DType::f32, -0.1f, 0.1f));
      v.push_back(P.random({n}, DType::f32, 0.0f, 0.01f));
      shadow.push_back(P.poisoned({n}, P.act));
    }
    std::vector<AdamWSlot> cpu_slots, gpu_slots;
    for (size_t i = 0; i < param.size(); ++i) {
      const bool decay = i != 1;
      cpu_slots.push_back({&param[i].cpu, &grad[i].cpu, &m[i].cpu, &v[i].cpu, &shadow[i].cpu, decay});
      gpu_slots.push_back({&param[i].gpu, &grad[i].gpu, &m[i].gpu, &v[i].gpu, &shadow[i].gpu, decay});
    }
    AdamWParams p;
    p.lr = 1e-2f;
    p.weight_decay = 0.1f;
    p.step = 3;
    p.grad_scale = 0.5f;
    P.cpu->adamw_update(cpu_slots, p);
    P.gpu->adamw_update(gpu_slots, p);
    for (size_t i = 0; i < param.size(); ++i) {
      const std::string slot = " slot " + std::to_string(i);
      P.expect("adamw param" + slot, param[i], 1e-5);  // fp32 state: the f32 tolerance whatever the activations
      P.expect("adamw m" + slot, m[i], 1e-5);
      P.expect("adamw v" + slot, v[i], 1e-5);
      P.expect("adamw shadow" + slot, shadow[i]);
    }
  }
}

TEST_CASE("cuda op profile (LORA_PROFILE): calls and times per op, sorted, with the total") {
  Pair P(DType::f32, 10);
  OpProfiler prof(nullptr, true);
  auto x = P.random({64, 64});
  auto y = P.random({64, 64});
  for (int i = 0; i < 3; ++i) {
    OpProfiler::Scope scope(prof, "matmul 64x64x64");
    P.gpu->matmul(mat(y.gpu), mat(x.gpu), mat(x.gpu), false, false, 1.0f, 0.0f);
  }
  {
    OpProfiler::Scope scope(prof, "fill");
    P.gpu->fill(x.gpu, 0.5f);
  }
  const std::string r = prof.report();
  INFO(r);
  CHECK(r.find("CUDA op profile") != std::string::npos);
  CHECK(r.find("2 kinds") != std::string::npos);
  auto row = [&](const std::string& op) {
    const size_t at = r.find("  " + op + " ");
    REQUIRE(at != std::string::npos);
    return r.substr(at, r.find('\n', at) - at);
  };
  std::istringstream m(row("matmul 64x64x64").substr(2 + std::string("matmul 64x64x64").size()));
  int64_t calls = 0;
  double total_ms = -1;
  m >> calls >> total_ms;
  CHECK(calls == 3);
  CHECK(total_ms >= 0.0);
  std::istringstream f(row("fill").substr(2 + 4));
  f >> calls;
  CHECK(calls == 1);
  CHECK(r.find("  total") != std::string::npos);
  OpProfiler off(nullptr, false);
  { OpProfiler::Scope scope(off, "fill"); }
  CHECK(off.report().find("0 kinds") != std::string::npos);
}

bool cuda_present(std::string* why) {
  if (!cuda_device_available(why)) {
    *why = "no CUDA device (" + *why + ")";
    return false;
  }
  std::printf("test_cuda_ops: LORA_TEST_SEED=%llu\n", static_cast<unsigned long long>(test_seed()));
  return true;
}
LORA_TEST_REQUIRES(cuda_present);

}  // namespace
