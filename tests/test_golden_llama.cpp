// Golden tests for the LLaMA family: our CPU model against transformers + PEFT on the tiny random
// LlamaForCausalLM and PEFT adapter in tests/fixtures/golden-llama (made by scripts/make_golden_llama.py;
// RMSNorm, rotary positions, SwiGLU, 4 query / 2 key-value heads, untied LM head), and on a
// MistralForCausalLM of the same shapes whose sliding window (5) is shorter than the batch, in
// tests/fixtures/golden-mistral (--family mistral), with transformers' generate past the window; and on
// a Qwen2ForCausalLM of the same shapes whose window (5) applies to layer 0 only (layer_types), in
// tests/fixtures/golden-qwen2-swa (--family qwen2-swa), with generate and a 10-step AdamW trajectory.
// The batch is the GPT-2 golden batch (tests/fixtures/golden/batch.json). Tolerances as
// test_golden.cpp: logits and loss 1e-5 normwise relative, LoRA gradients 1e-4, the trajectory 1e-4.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

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
const std::string kDir = std::string(LORA_FIXTURES) + "/golden-llama";
const std::string kMistralDir = std::string(LORA_FIXTURES) + "/golden-mistral";

struct Fixture : GoldenModel {
  Fixture() : GoldenModel(kDir, "llama-tiny") {}
};
struct MistralFixture : GoldenModel {
  MistralFixture() : GoldenModel(kMistralDir, "mistral-tiny") {}
};
const std::string kQwen2Dir = std::string(LORA_FIXTURES) + "/golden-qwen2-swa";
struct Qwen2Fixture : GoldenModel {
  Qwen2Fixture() : GoldenModel(kQwen2Dir, "qwen2-swa-tiny") {}
};

void check_base_logits(GoldenModel& f, const std::string& what) {
  Tensor ours = f.model.logits(f.g.tokens, f.g.lengths);
  double err = logits_rel_error(ours, f.ref_tensor("base_logits"), f.g);
  MESSAGE(what << " base logits normwise relative error " << err);
  CHECK(err < 1e-5);
}

// Base + the fixture's PEFT adapter (already loaded): logits and mean loss.
void check_adapter_logits_and_loss(GoldenModel& f, const std::string& what) {
  Tensor ours = f.model.logits(f.g.tokens, f.g.lengths);
  double err = logits_rel_error(ours, f.ref_tensor("logits"), f.g);
  MESSAGE(what << " adapter logits normwise relative error " << err);
  CHECK(err < 1e-5);
  LossStats s = f.loss(0);
  double loss = s.loss_sum / double(s.tokens), ref = f.ref_tensor("loss").f32()[0];
  MESSAGE(what << " loss " << loss << " vs PEFT " << ref << ", relative error " << std::fabs(loss - ref) / ref);
  CHECK(s.tokens == 15);
  CHECK(std::fabs(loss - ref) / ref < 1e-5);
}

// Every LoRA gradient of the mean loss against PEFT's (adapter already loaded).
void check_lora_grads(GoldenModel& f, const std::string& what) {
  f.model.zero_grads();
  LossStats s = f.loss(0);
  f.model.zero_grads();
  f.loss(1.0f / float(s.tokens));
  auto grads = f.model.trainable().size();
  auto named = peft_named_grads(f.model, "base_model.model.model.");
  CHECK(grads == 28);
  CHECK(named.size() == 28);
  double worst = 0;
  for (auto& entry : named) {  // no structured binding: INFO captures it (clang 14 cannot)
    const auto& name = entry.first;
    auto& grad = entry.second;
    double err = rel_error(*grad, f.ref_tensor("grad/" + name));
    worst = std::max(worst, err);
    INFO(name << " normwise relative error " << err);
    CHECK(err < 1e-4);
  }
  MESSAGE(what << " worst LoRA gradient normwise relative error " << worst);
}

// Activation recomputation gives the same loss and gradients, bit for bit (adapter already loaded).
void check_recompute(GoldenModel& f) {
  f.model.zero_grads();
  LossStats plain = f.loss(1.0f / 15.0f);
  std::vector<Tensor> g_plain;
  for (auto& p : f.model.trainable()) g_plain.push_back(f.be->download(*p.grad));
  f.model.set_recompute(true);
  f.model.zero_grads();
  LossStats re = f.loss(1.0f / 15.0f);
  CHECK(re.loss_sum == plain.loss_sum);
  size_t i = 0;
  for (auto& p : f.model.trainable()) CHECK(rel_error(f.be->download(*p.grad), g_plain[i++]) == 0.0);
}

// decode_step's logits against the full forward pass. Row 0: the first 12 tokens of example 0; row 1:
// example 1's 9 tokens, left-padded by 3 slots. Prefill 5 slots, then one slot at a time.
void check_decode_matches_forward(GoldenModel& f, const std::string& what) {
  const int T = f.g.T;
  Tensor full = f.model.logits(f.g.tokens, f.g.lengths);  // (2,T,V)
  const int64_t V = full.dim(2);
  KvCache cache = f.model.kv_cache_create({0, 3}, T + 2);
  auto feed = [&](int s0, int n) {
    Tensor tok = tensor_host({2, n}, DType::i32);
    for (int t = 0; t < n; ++t) {
      const int s = s0 + t;
      tok.i32()[t] = f.g.tokens.i32()[s];
      tok.i32()[n + t] = s >= 3 ? f.g.tokens.i32()[T + s - 3] : 0;
    }
    return f.model.decode_step(cache, tok);
  };
  double worst = 0;
  auto compare = [&](const Tensor& lg, int s) {
    for (int r = 0; r < 2; ++r) {
      const int t = r == 0 ? s : s - 3;
      if (t < 0) continue;
      double md = 0, mr = 0;
      for (int64_t v = 0; v < V; ++v) {
        const float ref = full.f32()[(int64_t(r) * T + t) * V + v];
        md = std::max(md, double(std::fabs(lg.f32()[r * V + v] - ref)));
        mr = std::max(mr, double(std::fabs(ref)));
      }
      worst = std::max(worst, md / mr);
    }
  };
  compare(feed(0, 5), 4);
  for (int s = 5; s < T; ++s) compare(feed(s, 1), s);
  MESSAGE(what << " decode vs full forward worst normwise relative error " << worst);
  CHECK(worst < 1e-5);
}
}  // namespace

TEST_CASE("golden llama: the config maps to RMSNorm, rotary, SwiGLU, grouped KV heads, untied head") {
  Fixture f;
  const ModelConfig& c = f.ck.config();
  CHECK(c.family == "llama");
  CHECK(c.norm == NormKind::rmsnorm);
  CHECK(c.pos == PosKind::rotary);
  CHECK(c.act == ActKind::swiglu);
  CHECK(c.n_kv_head == 2);
  CHECK(!c.tied_head);
  CHECK(f.model.wpe().empty());
}

TEST_CASE("golden llama: base model logits equal transformers'") {
  Fixture f;
  check_base_logits(f, "llama");
}

TEST_CASE("golden llama: PEFT adapter logits and loss") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  check_adapter_logits_and_loss(f, "llama");
}

TEST_CASE("golden llama: every LoRA gradient equals PEFT's") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  check_lora_grads(f, "llama");
}

TEST_CASE("golden llama: activation recomputation gives the same loss and gradients") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  check_recompute(f);
}

TEST_CASE("golden llama: lora_init on roles and HF names; adapter_save -> adapter_load round trip") {
  Fixture f;
  LoraSpec spec;
  spec.r = 2;
  spec.alpha = 6;
  spec.targets = {"q", "k_proj", "v", "o", "gate", "up_proj", "down"};
  spec.init_seed = 7;
  f.model.lora_init(spec);
  CHECK(f.model.trainable().size() == 2 * 7 * 2);
  trainables_perturb(f.model, 0.37f);
  Tensor before = f.model.logits(f.g.tokens, f.g.lengths);
  CHECK(rel_error(before, f.ref_tensor("base_logits")) > 1e-3);  // the adapters do change the output
  const std::string dir = temp_dir() + "/adapter";
  adapter_save(f.model, dir, "llama-tiny");
  auto cfg = json_read_file(dir + "/adapter_config.json");
  CHECK(cfg["fan_in_fan_out"] == false);
  CHECK(cfg["target_modules"].size() == 7);
  SafetensorsFile st = SafetensorsFile::open(dir + "/adapter_model.safetensors");
  CHECK(st.find("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight") != nullptr);
  CHECK(st.find("base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight") != nullptr);
  Model fresh(*f.be, f.ck.config());
  fresh.load_base(f.ck);
  adapter_load(fresh, dir);
  double err = rel_error(fresh.logits(f.g.tokens, f.g.lengths), before);
  MESSAGE("llama round-trip logits normwise relative error " << err);
  CHECK(err < 1e-6);
}

TEST_CASE("golden llama: decode_step logits equal the full forward pass (rope at absolute positions)") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  check_decode_matches_forward(f, "llama");
}

TEST_CASE("golden llama: AdamW steps lower the loss, with LoRA dropout and in a full fine-tune") {
  for (bool full : {false, true}) {
    Fixture f;
    LoraSpec spec;
    spec.full = full;
    spec.r = 4;
    spec.alpha = 8;
    spec.dropout = full ? 0.0f : 0.1f;
    spec.targets = {"q", "k", "v", "o", "gate", "up", "down"};
    spec.init_seed = 11;
    f.model.lora_init(spec);
    AdamWConfig c;
    AdamW opt(*f.be, f.model.trainable(), c);
    double first = 0, last = 0;
    for (int i = 0; i < 8; ++i) {
      f.model.zero_grads();
      LossStats s = f.model.step(f.g.tokens, f.g.targets, f.g.lengths, 1.0f / 15.0f, 0, 1000 + i, true);
      REQUIRE(std::isfinite(s.loss_sum));
      (i == 0 ? first : last) = s.loss_sum / double(s.tokens);
      opt.step(1e-2f, 1.0f);
      f.model.sync_values();
    }
    MESSAGE(std::string(full ? "full" : "lora") << " fine-tune loss " << first << " -> " << last);
    CHECK(last < first);
  }
}

TEST_CASE("golden mistral: sliding_window 5 maps into the config; without it the model does not match") {
  MistralFixture f;
  const ModelConfig& c = f.ck.config();
  CHECK(c.family == "llama");
  CHECK(c.model_type == "mistral");
  CHECK(c.sliding_window == 5);
  CHECK(f.g.T > c.sliding_window);
  // The fixture tests the window: full attention gives other logits past the first 5 positions.
  ModelConfig full = c;
  full.sliding_window = 0;
  Model m(*f.be, full);
  m.load_base(f.ck);
  double err = logits_rel_error(m.logits(f.g.tokens, f.g.lengths), f.ref_tensor("base_logits"), f.g);
  MESSAGE("mistral base logits with full attention: normwise relative error " << err);
  CHECK(err > 1e-2);
}

TEST_CASE("golden mistral: base model logits equal transformers' with the sliding window") {
  MistralFixture f;
  check_base_logits(f, "mistral");
}

TEST_CASE("golden mistral: PEFT adapter logits, loss and every LoRA gradient") {
  MistralFixture f;
  adapter_load(f.model, kMistralDir + "/adapter");
  check_adapter_logits_and_loss(f, "mistral");
  check_lora_grads(f, "mistral");
}

TEST_CASE("golden mistral: activation recomputation gives the same loss and gradients") {
  MistralFixture f;
  adapter_load(f.model, kMistralDir + "/adapter");
  check_recompute(f);
}

TEST_CASE("golden mistral: decode_step past the window equals the full forward pass, with left padding") {
  MistralFixture f;
  adapter_load(f.model, kMistralDir + "/adapter");
  check_decode_matches_forward(f, "mistral");
}

TEST_CASE("golden mistral: generate past the window reproduces transformers' generate token for token") {
  MistralFixture base, with_adapter;
  adapter_load(with_adapter.model, kMistralDir + "/adapter");
  CHECK(generate_fixture_check(json_read_file(kMistralDir + "/generate.json"), base.model, with_adapter.model) == 3);
}

TEST_CASE("golden qwen2-swa: layer_types puts the window (5) on layer 0 only; other placements do not match") {
  Qwen2Fixture f;
  const ModelConfig& c = f.ck.config();
  CHECK(c.model_type == "qwen2");
  CHECK(c.qkv_bias);
  CHECK(c.sliding_window == 5);
  CHECK(c.window_of(0) == 5);
  CHECK(c.window_of(1) == 0);
  CHECK(f.g.T > c.sliding_window);
  // The fixture tests the placement: full attention, the window on both layers, or on layer 1 only
  // (max_window_layers 1, the rule without layer_types) all give other logits past the first 5 positions.
  const std::vector<std::pair<std::string, std::vector<bool>>> others = {
      {"full attention", {false, false}},
      {"window on both layers", {true, true}},
      {"window on layer 1", {false, true}}};
  for (const auto& [what, sliding] : others) {
    ModelConfig other = c;
    other.sliding_layers = sliding;
    Model m(*f.be, other);
    m.load_base(f.ck);
    double err = logits_rel_error(m.logits(f.g.tokens, f.g.lengths), f.ref_tensor("base_logits"), f.g);
    MESSAGE("qwen2-swa base logits with " << what << ": normwise relative error " << err);
    CHECK(err > 1e-2);
  }
}

TEST_CASE("golden qwen2-swa: base model logits equal transformers' with the window on layer 0") {
  Qwen2Fixture f;
  check_base_logits(f, "qwen2-swa");
}

TEST_CASE("golden qwen2-swa: PEFT adapter logits, loss and every LoRA gradient") {
  Qwen2Fixture f;
  adapter_load(f.model, kQwen2Dir + "/adapter");
  check_adapter_logits_and_loss(f, "qwen2-swa");
  check_lora_grads(f, "qwen2-swa");
}

TEST_CASE("golden qwen2-swa: activation recomputation gives the same loss and gradients") {
  Qwen2Fixture f;
  adapter_load(f.model, kQwen2Dir + "/adapter");
  check_recompute(f);
}

TEST_CASE("golden qwen2-swa: 10 AdamW steps follow PEFT's loss trajectory") {
  Qwen2Fixture f;
  adapter_load(f.model, kQwen2Dir + "/adapter");
  const double worst = check_adamw_trajectory(f.model, *f.be, kQwen2Dir + "/trajectory.json",
                                              [&](float scale) { return f.loss(scale); });
  MESSAGE("qwen2-swa AdamW trajectory worst relative loss error " << worst);
}

TEST_CASE("golden qwen2-swa: decode_step past the window equals the full forward pass, with left padding") {
  Qwen2Fixture f;
  adapter_load(f.model, kQwen2Dir + "/adapter");
  check_decode_matches_forward(f, "qwen2-swa");
}

TEST_CASE("golden qwen2-swa: generate past the window reproduces transformers' generate token for token") {
  Qwen2Fixture base, with_adapter;
  adapter_load(with_adapter.model, kQwen2Dir + "/adapter");
  CHECK(generate_fixture_check(json_read_file(kQwen2Dir + "/generate.json"), base.model, with_adapter.model) == 3);
}

}  // namespace
