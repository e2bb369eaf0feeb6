// Golden tests for RoBERTa sequence classification: our CPU model against transformers + PEFT on the
// tiny random RobertaForSequenceClassification models and PEFT adapters in tests/fixtures/golden-roberta
// (made by scripts/make_golden_roberta.py): post-norm encoder blocks, bidirectional attention with a
// padding mask, positions numbered from padding_idx + 1, token-type embedding 0, embedding LayerNorm,
// erf GELU, and RobertaClassificationHead trained in full (modules_to_save), for a 3-label
// classification head (cross-entropy) and a 1-label regression head (MSE). The batch has right padding
// and sentence pairs. Tolerances as the other golden tests: logits and loss 1e-5 normwise relative,
// gradients 1e-4.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "core/model/adapter.h"
#include "core/formats/checkpoint.h"
#include "core/base/fsutil.h"
#include "core/model/model.h"
#include "core/train/optimizer.h"
#include "core/formats/safetensors.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {
const std::string kDir = std::string(LORA_FIXTURES) + "/golden-roberta";

ModelConfig with_dropout(ModelConfig c, float head_dropout) {
  if (head_dropout >= 0) c.head_dropout = head_dropout;
  return c;
}

// The model of one head ("cls" or "reg"), the reference tensors and the batch of batch.json.
struct Fixture {
  std::string head;
  std::unique_ptr<Backend> be = backend_cpu_create();
  Checkpoint ck;
  Model model;
  SafetensorsFile ref;
  Tensor tokens, lengths, labels;
  int B = 0, T = 0;

  // head_dropout >= 0 replaces the config's classifier dropout (0 in the fixtures).
  explicit Fixture(const std::string& h, float head_dropout = -1)
      : head(h),
        ck(Checkpoint::open(kDir + "/roberta-" + h)),
        model(*be, with_dropout(ck.config(), head_dropout)),
        ref(SafetensorsFile::open(kDir + "/reference.safetensors")) {
    model.load_base(ck);
    auto j = json_read_file(kDir + "/batch.json");
    B = int(j["input_ids"].size());
    T = int(j["input_ids"][0].size());
    tokens = tensor_host({B, T}, DType::i32);
    lengths = tensor_host({B}, DType::i32);
    labels = tensor_host({B}, DType::f32);
    for (int b = 0; b < B; ++b) {
      lengths.i32()[b] = j["lengths"][b].get<int>();
      labels.f32()[b] = j["labels_" + h][b].get<float>();
      for (int t = 0; t < T; ++t) tokens.i32()[b * T + t] = j["input_ids"][b][t].get<int>();
    }
  }
  Tensor ref_tensor(const std::string& name) {
    const SafetensorsEntry* e = ref.find(head + "/" + name);
    REQUIRE_MESSAGE(e != nullptr, std::string(head + "/" + name));
    return ref.to_f32(*e);
  }
  // The mean loss over the batch, as HF reports it; with backward, gradients of that mean.
  double loss(bool backward, Tensor* logits = nullptr, uint64_t key = 0) {
    LossStats s = model.classify_step(tokens, lengths, labels, backward ? 1.0f / float(B) : 0.0f, key, true, logits);
    REQUIRE(s.tokens == B);
    return s.loss_sum / double(B);
  }
};

// The trainable tensors' gradients under PEFT's saved names.
std::map<std::string, Tensor*> named_grads(Model& m) {
  std::map<std::string, Tensor*> out = peft_named_grads(m, "base_model.model.roberta.");
  ClassifierHead& h = m.classifier();
  out["base_model.model.classifier.dense.weight"] = &h.ddense_w;
  out["base_model.model.classifier.dense.bias"] = &h.ddense_b;
  out["base_model.model.classifier.out_proj.weight"] = &h.dout_w;
  out["base_model.model.classifier.out_proj.bias"] = &h.dout_b;
  return out;
}
}  // namespace

TEST_CASE("golden roberta: the config maps to a post-norm encoder with a classification head") {
  for (std::string head : {"cls", "reg"}) {
    Fixture f(head);
    const ModelConfig& c = f.ck.config();
    CHECK(c.family == "roberta");
    CHECK(c.post_norm);
    CHECK(!c.causal);
    CHECK(c.act == ActKind::gelu_erf);
    CHECK(c.head == HeadKind::classifier);
    CHECK(c.num_labels == (f.head == "cls" ? 3 : 1));
    CHECK(c.position_offset == 2);
    CHECK(c.max_positions == 38);
    CHECK(f.model.classifier().loaded);  // the checkpoint carries its head
  }
}

TEST_CASE("golden roberta: base model logits equal transformers' (classification and regression)") {
  for (std::string head : {"cls", "reg"}) {
    Fixture f(head);
    Tensor ours;
    f.loss(false, &ours);
    double err = rel_error(ours, f.ref_tensor("base_logits"));
    MESSAGE("roberta " << head << " base logits normwise relative error " << err);
    CHECK(err < 1e-5);
  }
}

TEST_CASE("golden roberta: PEFT adapter (LoRA + saved head) logits and loss") {
  for (std::string head : {"cls", "reg"}) {
    Fixture f(head);
    adapter_load(f.model, kDir + "/adapter-" + head);
    Tensor ours;
    double loss = f.loss(false, &ours);
    double err = rel_error(ours, f.ref_tensor("logits"));
    MESSAGE("roberta " << head << " adapter logits normwise relative error " << err);
    CHECK(err < 1e-5);
    CHECK(rel_error(ours, f.ref_tensor("base_logits")) > 1e-3);  // the adapter does change the outputs
    double ref = f.ref_tensor("loss").f32()[0];
    MESSAGE("roberta " << head << " loss " << loss << " vs PEFT " << ref << ", relative error " << std::fabs(loss - ref) / ref);
    CHECK(std::fabs(loss - ref) / ref < 1e-5);
  }
}

TEST_CASE("golden roberta: every LoRA and classifier gradient equals PEFT's") {
  for (std::string head : {"cls", "reg"}) {
    Fixture f(head);
    adapter_load(f.model, kDir + "/adapter-" + head);
    f.model.zero_grads();
    f.loss(true);
    auto named = named_grads(f.model);
    CHECK(f.model.trainable().size() == 2 * 2 * 2 + 4);  // A, B on q and v in 2 layers; 4 head tensors
    CHECK(named.size() == 12);
    double worst = 0;
    for (auto& entry : named) {  // no structured binding: INFO captures it (clang 14 cannot)
      const auto& name = entry.first;
      auto& grad = entry.second;
      double err = rel_error(*grad, f.ref_tensor("grad/" + name));
      worst = std::max(worst, err);
      INFO(name << " normwise relative error " << err);
      CHECK(err < 1e-4);
    }
    MESSAGE("roberta " << head << " worst gradient normwise relative error " << worst);
  }
}

TEST_CASE("golden roberta: activation recomputation gives the same loss and gradients") {
  Fixture f("cls");
  adapter_load(f.model, kDir + "/adapter-cls");
  f.model.zero_grads();
  double plain = f.loss(true);
  std::vector<Tensor> g_plain;
  for (auto& p : f.model.trainable()) g_plain.push_back(f.be->download(*p.grad));
  f.model.set_recompute(true);
  f.model.zero_grads();
  CHECK(f.loss(true) == plain);
  size_t i = 0;
  for (auto& p : f.model.trainable()) CHECK(rel_error(f.be->download(*p.grad), g_plain[i++]) == 0.0);
}

TEST_CASE("golden roberta: adapter_save writes PEFT's layout (modules_to_save classifier); load round trip") {
  Fixture f("cls");
  LoraSpec spec;
  spec.r = 2;
  spec.alpha = 6;
  spec.targets = {"query", "k", "value", "o", "up", "down"};
  spec.init_seed = 7;
  f.model.lora_init(spec);
  CHECK(f.model.trainable().size() == 2 * 6 * 2 + 4);
  trainables_perturb(f.model, 0.37f);
  Tensor before;
  f.loss(false, &before);
  CHECK(rel_error(before, f.ref_tensor("base_logits")) > 1e-3);
  const std::string dir = temp_dir() + "/adapter";
  adapter_save(f.model, dir, "roberta-cls");
  auto cfg = json_read_file(dir + "/adapter_config.json");
  CHECK(cfg["task_type"] == "SEQ_CLS");
  CHECK(cfg["modules_to_save"] == nlohmann::json({"classifier"}));
  CHECK(cfg["fan_in_fan_out"] == false);
  // query, key and value are unambiguous suffixes; the three "dense" layers are named in full.
  auto targets = cfg["target_modules"].get<std::vector<std::string>>();
  CHECK(std::count(targets.begin(), targets.end(), "query") == 1);
  CHECK(std::count(targets.begin(), targets.end(), "roberta.encoder.layer.1.output.dense") == 1);
  CHECK(std::count(targets.begin(), targets.end(), "dense") == 0);
  SafetensorsFile st = SafetensorsFile::open(dir + "/adapter_model.safetensors");
  CHECK(st.find("base_model.model.roberta.encoder.layer.1.attention.self.query.lora_A.weight") != nullptr);
  CHECK(st.find("base_model.model.roberta.encoder.layer.0.intermediate.dense.lora_B.weight") != nullptr);
  for (const char* name : {"dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias"})
    CHECK(st.find(std::string("base_model.model.classifier.") + name) != nullptr);
  Model fresh(*f.be, f.ck.config());
  fresh.load_base(f.ck);
  adapter_load(fresh, dir);
  Tensor after;
  fresh.classify_step(f.tokens, f.lengths, f.labels, 0.0f, 0, false, &after);
  double err = rel_error(after, before);
  MESSAGE("roberta round-trip logits normwise relative error " << err);
  CHECK(err < 1e-6);
  // The reader that merge and export use finds the same head.
  std::vector<Tensor> head = adapter_classifier_head(adapter_file_read(dir));
  REQUIRE(head.size() == 4);
  CHECK(rel_error(head[2], f.be->download(f.model.classifier().out_w)) == 0);
}

TEST_CASE("golden roberta: AdamW steps lower the loss with head and LoRA dropout, and in a full fine-tune") {
  for (std::string head : {"cls", "reg"})
    for (bool full : {false, true}) {
      Fixture f(head, full ? 0.0f : 0.1f);
      CAPTURE(head);
      CAPTURE(full);
      LoraSpec spec;
      spec.full = full;
      spec.r = 4;
      spec.alpha = 8;
      spec.dropout = full ? 0.0f : 0.1f;
      spec.targets = {"q", "v"};
      spec.init_seed = 11;
      f.model.lora_init(spec);
      if (!full) {  // dropout masks are a function of the key: the same key gives the same loss
        double a = f.loss(false, nullptr, 77), b = f.loss(false, nullptr, 77), c = f.loss(false, nullptr, 78);
        CHECK(a == b);
        CHECK(a != c);
      }
      AdamWConfig c;
      AdamW opt(*f.be, f.model.trainable(), c);
      double first = 0, last = 0;
      for (int i = 0; i < 8; ++i) {
        f.model.zero_grads();
        double l = f.loss(true, nullptr, 1000 + i);
        REQUIRE(std::isfinite(l));
        (i == 0 ? first : last) = l;
        opt.step(1e-2f, 1.0f);
        f.model.sync_values();
      }
      MESSAGE(head << std::string(full ? " full" : " lora") << " fine-tune loss " << first << " -> " << last);
      CHECK(last < first);
    }
}

TEST_CASE("golden roberta: a classification model refuses LM steps and generation; labels are checked") {
  Fixture f("cls");
  Tensor targets = tensor_host({f.B, f.T}, DType::i32);
  CHECK(contains(error_of([&] { f.model.step(f.tokens, targets, f.lengths, 0, 0, 0, false); }).what(),
                 "classification head"));
  CHECK(contains(error_of([&] { f.model.kv_cache_create({0}, 4); }).what(), "does not generate"));
  f.labels.f32()[1] = 3;  // a 3-label head has classes 0..2
  CHECK(contains(error_of([&] { f.loss(false); }).what(), "not a class id"));
}

}  // namespace
