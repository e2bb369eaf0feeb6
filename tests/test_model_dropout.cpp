// The model's own dropout (Model::set_dropout: hidden dropout after the embeddings and on the attention
// and MLP outputs, attention-probability dropout) on the CPU, on the tiny golden GPT-2 (pre-norm, LM head)
// and RoBERTa (post-norm, classification head): with a fixed dropout key the masks are fixed, so every
// trainable gradient must match central finite differences of the loss; in a full fine-tune that
// includes the embeddings (the embedding dropout's backward). The masks are a function of the key only
// (activation recomputation redraws the same ones), evaluation never drops, and p = 0 is no dropout.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/adapter.h"
#include "core/checkpoint.h"
#include "core/fsutil.h"
#include "core/model.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;

namespace {

// One of the golden models with a batch and a loss: GPT-2 (LM loss over the golden batch) or RoBERTa
// (3-label classification over its batch).
struct DropoutFixture {
  std::unique_ptr<Backend> be = backend_cpu_create();
  Checkpoint ck;
  Model model;
  bool roberta;
  GoldenBatch g;                   // GPT-2's batch
  Tensor tokens, lengths, labels;  // RoBERTa's batch

  explicit DropoutFixture(bool is_roberta)
      : ck(Checkpoint::open(is_roberta ? std::string(LORA_FIXTURES) + "/golden-roberta/roberta-cls"
                                       : std::string(LORA_FIXTURES) + "/golden/gpt2-tiny")),
        model(*be, ck.config()),
        roberta(is_roberta) {
    model.load_base(ck);
    if (!roberta) {
      g = golden_batch();
      return;
    }
    auto j = json_read_file(std::string(LORA_FIXTURES) + "/golden-roberta/batch.json");
    const int B = int(j["input_ids"].size()), T = int(j["input_ids"][0].size());
    tokens = tensor_host({B, T}, DType::i32);
    lengths = tensor_host({B}, DType::i32);
    labels = tensor_host({B}, DType::f32);
    for (int b = 0; b < B; ++b) {
      lengths.i32()[b] = j["lengths"][b].get<int>();
      labels.f32()[b] = j["labels_cls"][b].get<float>();
      for (int t = 0; t < T; ++t) tokens.i32()[b * T + t] = j["input_ids"][b][t].get<int>();
    }
  }
  // The summed loss; with backward, gradients of it accumulate into the trainables.
  double loss(bool backward, uint64_t key, bool train = true) {
    const float dscale = backward ? 1.0f : 0.0f;
    LossStats s = roberta ? model.classify_step(tokens, lengths, labels, dscale, key, train)
                          : model.step(g.tokens, g.targets, g.lengths, dscale, 0.0f, key, train);
    return s.loss_sum;
  }
  std::vector<Tensor> grads() {
    std::vector<Tensor> out;
    for (auto& p : model.trainable()) out.push_back(be->download(*p.grad));
    return out;
  }
};

LoraSpec spec_of(bool full) {
  LoraSpec spec;
  spec.full = full;
  spec.r = 4;
  spec.alpha = 8;
  spec.targets = {"q", "v", "o", "down"};  // o and down: adapters right before a hidden dropout
  spec.init_seed = 3;
  return spec;
}

}  // namespace

TEST_CASE("model dropout: every gradient matches finite differences with hidden and attention dropout on") {
  for (bool roberta : {false, true})
    for (bool full : {false, true}) {
      CAPTURE(roberta);
      CAPTURE(full);
      DropoutFixture f(roberta);
      f.model.lora_init(spec_of(full));
      trainables_perturb(f.model, 0.37f);  // B off zero, so that every adapter gradient is non-zero
      f.model.set_dropout(0.2f, 0.3f);
      const uint64_t key = 12345;
      f.model.zero_grads();
      f.loss(true, key);
      std::vector<Tensor> grads = f.grads();
      // Central differences in fp32 on the two entries of each tensor with the largest gradients: the
      // loss is a float sum, so the step is large (1e-2) and the tolerance 0.5% of the tensor's largest
      // gradient (measured: below 0.05%); a wrong mask or a missed 1/(1-p) is an error of order p.
      std::vector<TrainableParam> params = f.model.trainable();
      int checked = 0;
      double worst = 0;
      for (size_t i = 0; i < params.size(); ++i) {
        Tensor host = f.be->download(*params[i].master);
        const Tensor& gr = grads[i];
        std::vector<int64_t> order(size_t(gr.numel()));
        for (int64_t k = 0; k < gr.numel(); ++k) order[size_t(k)] = k;
        const size_t n = std::min<size_t>(2, order.size());
        std::partial_sort(order.begin(), order.begin() + long(n), order.end(),
                          [&](int64_t a, int64_t b) { return std::fabs(gr.f32()[a]) > std::fabs(gr.f32()[b]); });
        const double gmax = std::fabs(gr.f32()[order[0]]);
        // Gradients that are zero in exact arithmetic (the key bias: the softmax does not see a constant
        // added to a query's scores) are rounding noise, below what a float loss can resolve.
        if (gmax < 1e-5) continue;
        for (size_t j = 0; j < n; ++j) {
          const int64_t idx = order[j];
          const float h = 1e-2f, x0 = host.f32()[idx];
          auto at = [&](float x) {
            host.f32()[idx] = x;
            f.be->upload(*params[i].master, host);
            f.model.sync_values();
            return f.loss(false, key);
          };
          const double numeric = (at(x0 + h) - at(x0 - h)) / (2.0 * double(h));
          at(x0);
          INFO(params[i].name << "[" << idx << "]: analytic " << gr.f32()[idx] << ", numeric " << numeric);
          const double err = std::fabs(numeric - gr.f32()[idx]) / gmax;
          CHECK(err <= 5e-3);
          worst = std::max(worst, err);
          ++checked;
        }
      }
      MESSAGE(std::string(roberta ? "roberta" : "gpt2") << (full ? " full" : " lora") << ": " << checked
                                             << " entries, worst error " << worst << " of the tensor's largest gradient");
      CHECK(checked >= 8);
    }
}

TEST_CASE("model dropout: masks follow the key, recomputation redraws them, eval and p = 0 drop nothing") {
  for (bool roberta : {false, true}) {
    CAPTURE(roberta);
    DropoutFixture f(roberta);
    f.model.lora_init(spec_of(false));
    trainables_perturb(f.model, 0.53f);
    f.model.zero_grads();
    const double plain = f.loss(true, 77);
    const std::vector<Tensor> g_plain = f.grads();
    const double eval_plain = f.loss(false, 77, false);

    // p = 0 (with a key) is exactly no dropout.
    f.model.set_dropout(0.0f, 0.0f);
    f.model.zero_grads();
    CHECK(f.loss(true, 77) == plain);
    std::vector<Tensor> g = f.grads();
    for (size_t i = 0; i < g.size(); ++i) CHECK(rel_error(g[i], g_plain[i]) == 0.0);

    // Each dropout alone changes the training loss; the same key gives the same masks, another key others.
    f.model.set_dropout(0.1f, 0.0f);
    const double hidden_only = f.loss(false, 77);
    f.model.set_dropout(0.0f, 0.1f);
    const double attention_only = f.loss(false, 77);
    CHECK(hidden_only != plain);
    CHECK(attention_only != plain);
    f.model.set_dropout(0.1f, 0.1f);
    f.model.zero_grads();
    const double both = f.loss(true, 77);
    const std::vector<Tensor> g_both = f.grads();
    CHECK(f.loss(false, 77) == both);
    CHECK(f.loss(false, 78) != both);

    // Activation recomputation rebuilds each block with the same masks: the same loss and gradients.
    f.model.set_recompute(true);
    f.model.zero_grads();
    CHECK(f.loss(true, 77) == both);
    g = f.grads();
    for (size_t i = 0; i < g.size(); ++i) CHECK(rel_error(g[i], g_both[i]) == 0.0);
    f.model.set_recompute(false);

    // Evaluation (train = false) never drops, whatever the key.
    CHECK(f.loss(false, 77, false) == eval_plain);
    CHECK_THROWS(f.model.set_dropout(1.0f, 0.0f));
  }
}

}  // namespace
