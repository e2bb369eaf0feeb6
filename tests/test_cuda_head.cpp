// The classification head's CUDA ops (cuda/head.cu: tanh forward and backward, mse_loss, mat_copy)
// against the CPU oracle, for f32, bf16 and f16 activations, on fresh random inputs (seeded from
// std::random_device; LORA_TEST_SEED replays). Inputs are rounded to the activation dtype on the device
// and the CPU sees those rounded values; overwritten device outputs are poisoned with NaN first.
// Tolerances and the comparison: tests/cuda_test_util.h, shared with tests/test_cuda_ops.cpp.
//
// With no usable CUDA device the suite prints "skipped: ..." and exits 77 (ctest: skipped). The `emu`
// build of this file runs the same kernels on the CPU emulation of CUDA (tests/emu/).
#include <doctest/doctest.h>

#include "tests/test_suite.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/adapter.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/fsutil.h"
#include "core/model.h"
#include "cuda/backend_cuda.h"
#include "tests/cuda_test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using lora_test::check_close;
using lora_test::test_seed;
using lora_test::tolerance;

namespace {

// The CPU oracle beside a CUDA backend with activations in `act`; tensors come in (cpu, gpu) pairs.
struct Pair {
  std::unique_ptr<Backend> cpu = backend_cpu_create(), gpu;
  DType act;
  std::mt19937_64 rng;
  struct Both {
    Tensor cpu, gpu;
  };
  Pair(DType a, uint64_t salt) : act(a), rng(test_seed() ^ salt) {
    std::string why;
    gpu = backend_cuda_create(&why, a);
    REQUIRE_MESSAGE(gpu != nullptr, "CUDA backend: " << why);
  }
  Both random(const std::vector<int64_t>& shape, DType dtype, float lo = -1.0f, float hi = 1.0f) {
    Tensor h = tensor_host(shape);
    std::uniform_real_distribution<float> dist(lo, hi);
    for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = dist(rng);
    Both b;
    b.gpu = gpu->alloc(shape, dtype);
    gpu->upload(b.gpu, h);
    b.cpu = gpu->download(b.gpu);
    return b;
  }
  Both poisoned(const std::vector<int64_t>& shape, DType dtype) {
    Both b{tensor_host(shape), gpu->alloc(shape, dtype)};
    gpu->fill(b.gpu, NAN);
    return b;
  }
  void expect(const std::string& what, const Both& b, double tol = 0) {
    check_close(what + " [" + dtype_name(act) + "]", gpu->download(b.gpu), b.cpu, tol ? tol : tolerance(act));
  }
};

const std::vector<DType> kActivations = lora_test::test_activations();

}  // namespace

TEST_CASE("cuda tanh forward and backward (from the output, aliased)") {
  for (DType act : kActivations) {
    Pair P(act, 21);
    INFO("activations " << std::string(dtype_name(act)) << ", LORA_TEST_SEED=" << test_seed());
    auto inp = P.random({13, 70}, act, -3.0f, 3.0f);
    auto out = P.poisoned({13, 70}, act);
    P.cpu->tanh_forward(out.cpu, inp.cpu);
    P.gpu->tanh_forward(out.gpu, inp.gpu);
    P.expect("tanh forward", out);
    // The backward reads the forward's output: give both sides the device's rounded output.
    Tensor y = P.gpu->download(out.gpu);
    auto dout = P.random({13, 70}, act);
    P.cpu->tanh_backward(dout.cpu, dout.cpu, y);
    P.gpu->tanh_backward(dout.gpu, dout.gpu, out.gpu);
    P.expect("tanh backward", dout);
  }
}

TEST_CASE("cuda mse_loss on a column of a wider buffer: losses and the gradient in place") {
  for (DType act : kActivations) {
    Pair P(act, 22);
    INFO("activations " << std::string(dtype_name(act)) << ", LORA_TEST_SEED=" << test_seed());
    const int64_t N = 37;
    auto preds = P.random({N, 3}, act, -4.0f, 4.0f);  // predictions in column 1, ld 3
    auto targets = P.random({N}, DType::f32, -4.0f, 4.0f);
    auto losses = P.poisoned({N}, DType::f32);
    P.cpu->mse_loss(mat_cols(preds.cpu, 1, 1), losses.cpu, targets.cpu, 0.25f);
    P.gpu->mse_loss(mat_cols(preds.gpu, 1, 1), losses.gpu, targets.gpu, 0.25f);
    P.expect("mse losses", losses, 1e-5);  // fp32 math on identical inputs
    P.expect("mse dpreds (columns 0 and 2 untouched)", preds);
  }
}

TEST_CASE("cuda mat_copy: the first token of each sequence, gathered and scattered back") {
  for (DType act : kActivations) {
    Pair P(act, 23);
    INFO("activations " << std::string(dtype_name(act)) << ", LORA_TEST_SEED=" << test_seed());
    const int64_t B = 5, T = 7, C = 24;
    auto hidden = P.random({B * T, C}, act);
    auto first = P.poisoned({B, C}, act);
    auto strided = [&](const Tensor& t) {
      MatRef m = mat(t);
      m.rows = B;
      m.ld = T * C;
      return m;
    };
    P.cpu->mat_copy(mat(first.cpu), strided(hidden.cpu));
    P.gpu->mat_copy(mat(first.gpu), strided(hidden.gpu));
    P.expect("mat_copy gather", first, 1e-30);  // a copy is exact
    auto back = P.random({B * T, C}, act);
    P.cpu->mat_copy(strided(back.cpu), mat(first.cpu));
    P.gpu->mat_copy(strided(back.gpu), mat(first.gpu));
    P.expect("mat_copy scatter (other rows untouched)", back, 1e-30);
  }
}

// The whole classification step of the golden RoBERTa (tests/fixtures/golden-roberta: LoRA on q and v
// plus the saved head, a padded batch with sentence pairs) on the CUDA backend against the CPU model:
// logits, loss and every trainable gradient. With f32 activations the two compute the same function and
// agree to fp32 rounding (1e-5 normwise; measured on the emulation: 6e-7 logits, 2e-6 gradients). With
// bf16 and f16 the GPU model also holds its frozen weights rounded to that dtype, so it is not the same
// function; there is no same-precision reference here (the op tests hold each op to its dtype), and the
// check is only a guard against gross errors (a wrong op or layout gives O(1) differences): 0.1 normwise.
// Measured on the emulation: bf16 logits 2.5e-2, gradients 7e-2; f16 logits 6e-3, gradients 7e-3.
// With the encoder's hidden and attention dropout on (0.1 each, one dropout key), both backends draw the
// same masks, so the same comparison holds.
TEST_CASE("cuda roberta classify_step: logits, loss and gradients equal the CPU model's, with and without dropout") {
  const std::string dir = std::string(LORA_FIXTURES) + "/golden-roberta";
  auto j = json_read_file(dir + "/batch.json");
  const int B = int(j["input_ids"].size()), T = int(j["input_ids"][0].size());
  for (std::string head : {"cls", "reg"})
    for (DType act : kActivations)
    for (bool dropout : {false, true}) {
      INFO(head << ", activations " << std::string(dtype_name(act)) << std::string(dropout ? ", dropout 0.1" : ""));
      Tensor tokens = tensor_host({B, T}, DType::i32), lengths = tensor_host({B}, DType::i32), labels = tensor_host({B});
      for (int b = 0; b < B; ++b) {
        lengths.i32()[b] = j["lengths"][b].get<int>();
        labels.f32()[b] = j["labels_" + head][b].get<float>();
        for (int t = 0; t < T; ++t) tokens.i32()[b * T + t] = j["input_ids"][b][t].get<int>();
      }
      Checkpoint ck = Checkpoint::open(dir + "/roberta-" + head);
      std::string why;
      auto cpu = backend_cpu_create();
      auto gpu = backend_cuda_create(&why, act);
      REQUIRE(gpu != nullptr);
      Model mc(*cpu, ck.config()), mg(*gpu, ck.config());
      double loss[2];
      Tensor logits[2];
      std::vector<Tensor> grads[2];
      Model* models[2] = {&mc, &mg};
      for (int k = 0; k < 2; ++k) {
        models[k]->load_base(ck);
        adapter_load(*models[k], dir + "/adapter-" + head);
        if (dropout) models[k]->set_dropout(0.1f, 0.1f);
        models[k]->zero_grads();
        const uint64_t key = dropout ? 99 : 0;
        LossStats s = models[k]->classify_step(tokens, lengths, labels, 1.0f / float(B), key, true, &logits[k]);
        loss[k] = s.loss_sum / B;
        for (auto& p : models[k]->trainable()) grads[k].push_back(models[k]->backend().download(*p.grad));
      }
      // Normwise: max |gpu - cpu| / max |cpu|, so entries near zero do not dominate.
      auto normwise = [](const Tensor& g, const Tensor& c) {
        double md = 0, mr = 0;
        for (int64_t i = 0; i < c.numel(); ++i) {
          md = std::max(md, double(std::fabs(g.f32()[i] - c.f32()[i])));
          mr = std::max(mr, double(std::fabs(c.f32()[i])));
        }
        return md / std::max(mr, 1e-30);
      };
      const double tol = act == DType::f32 ? 1e-5 : 0.1;
      CHECK(normwise(logits[1], logits[0]) < tol);
      CHECK(std::fabs(loss[1] - loss[0]) / loss[0] < tol);
      REQUIRE(grads[0].size() == grads[1].size());
      double worst = 0;
      for (size_t i = 0; i < grads[0].size(); ++i) worst = std::max(worst, normwise(grads[1][i], grads[0][i]));
      MESSAGE(head << " " << std::string(dtype_name(act)) << std::string(dropout ? " dropout" : "") << ": logits "
                   << normwise(logits[1], logits[0]) << ", worst gradient " << worst);
      CHECK(worst < tol);
    }
}

bool cuda_present(std::string* why) {
  if (!cuda_device_available(why)) {
    *why = "no CUDA device (" + *why + ")";
    return false;
  }
  std::printf("test_cuda_head: LORA_TEST_SEED=%llu\n", static_cast<unsigned long long>(test_seed()));
  return true;
}
LORA_TEST_REQUIRES(cuda_present);

}  // namespace
