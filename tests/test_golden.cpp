// Golden tests: our CPU model against the reference implementation (PyTorch + transformers + PEFT) on
// the tiny GPT-2 and PEFT adapters in tests/fixtures/golden (made by scripts/make_golden.py).
// Tolerances (fp32): logits and loss 1e-5 relative, LoRA gradients 1e-4, the 10-step AdamW
// trajectory 1e-4. "Relative" for tensors is normwise: max |ours - ref| / max |ref| over compared entries,
// so that entries near zero do not dominate.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/model/adapter.h"
#include "core/formats/checkpoint.h"
#include "core/base/fsutil.h"
#include "core/model/model.h"
#include "core/formats/safetensors.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {
const std::string kDir = std::string(LORA_FIXTURES) + "/golden";

struct Fixture : GoldenModel {
  Fixture() : GoldenModel(kDir, "gpt2-tiny") {}
};
}  // namespace

TEST_CASE("golden: base model logits equal transformers'") {
  Fixture f;
  Tensor ours = f.model.logits(f.g.tokens, f.g.lengths);
  double err = logits_rel_error(ours, f.ref_tensor("base_logits"), f.g);
  MESSAGE("base logits normwise relative error " << err);
  CHECK(err < 1e-5);
}

TEST_CASE("golden: PEFT adapter logits, loss and label-smoothed loss") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  Tensor ours = f.model.logits(f.g.tokens, f.g.lengths);
  double err = logits_rel_error(ours, f.ref_tensor("logits"), f.g);
  MESSAGE("adapter logits normwise relative error " << err);
  CHECK(err < 1e-5);
  LossStats s = f.loss(0);
  double loss = s.loss_sum / double(s.tokens), ref = f.ref_tensor("loss").f32()[0];
  CHECK(s.tokens == 15);
  CHECK(std::fabs(loss - ref) / ref < 1e-5);
  LossStats ls = f.loss(0, 0.1f);
  double ref_ls = f.ref_tensor("loss_ls01").f32()[0];
  CHECK(std::fabs(ls.loss_sum / double(ls.tokens) - ref_ls) / ref_ls < 1e-5);
}

TEST_CASE("golden: rsLoRA adapter scale") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter-rslora");
  double err = logits_rel_error(f.model.logits(f.g.tokens, f.g.lengths), f.ref_tensor("rslora_logits"), f.g);
  MESSAGE("rslora logits normwise relative error " << err);
  CHECK(err < 1e-5);
}

TEST_CASE("golden: every LoRA gradient equals PEFT's") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  f.model.zero_grads();
  LossStats s = f.loss(0);
  f.model.zero_grads();
  f.loss(1.0f / float(s.tokens));
  auto grads = peft_named_grads(f.model, "base_model.model.transformer.");
  CHECK(grads.size() == 16);
  for (auto& entry : grads) {  // not a structured binding: INFO captures name in a lambda (clang 14)
    const auto& name = entry.first;
    double err = rel_error(*entry.second, f.ref_tensor("grad/" + name));
    INFO(name << " normwise relative error " << err);
    CHECK(err < 1e-4);
  }
}

TEST_CASE("golden: 10 AdamW steps follow PEFT's loss trajectory") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  check_adamw_trajectory(f.model, *f.be, kDir + "/trajectory.json", [&](float scale) { return f.loss(scale); });
}

TEST_CASE("adapter_save writes q and v as one block-structured PEFT adapter with the same outputs") {
  Fixture f;
  LoraSpec spec;
  spec.r = 2;
  spec.alpha = 6;
  spec.targets = {"q", "v", "down"};
  spec.init_seed = 7;
  f.model.lora_init(spec);
  // Give B non-zero values so the adapters change the output.
  trainables_perturb(f.model, 0.37f);
  Tensor before = f.model.logits(f.g.tokens, f.g.lengths);
  const std::string dir = (fs::temp_directory_path() / "lora-test-adapter-roundtrip").string();
  fs::remove_all(dir);
  adapter_save(f.model, dir, "tiny");
  auto cfg = json_read_file(dir + "/adapter_config.json");
  CHECK(cfg["r"] == 2);
  CHECK(cfg["rank_pattern"]["c_attn"] == 4);
  CHECK(cfg["alpha_pattern"]["c_attn"].get<double>() == doctest::Approx(12.0));
  CHECK(cfg["fan_in_fan_out"] == true);
  Model fresh(*f.be, f.ck.config());
  fresh.load_base(f.ck);
  adapter_load(fresh, dir);
  double err = rel_error(fresh.logits(f.g.tokens, f.g.lengths), before);
  MESSAGE("round-trip logits normwise relative error " << err);
  CHECK(err < 1e-6);
  fs::remove_all(dir);
}

TEST_CASE("activation recomputation gives exactly the same loss and gradients") {
  Fixture f;
  adapter_load(f.model, kDir + "/adapter");
  f.model.zero_grads();
  LossStats plain = f.loss(1.0f / 15.0f);
  std::vector<Tensor> g_plain;
  for (auto& p : f.model.trainable()) g_plain.push_back(f.be->download(*p.grad));
  f.model.set_recompute(true);
  f.model.zero_grads();
  LossStats re = f.loss(1.0f / 15.0f);
  CHECK(re.loss_sum == plain.loss_sum);
  size_t i = 0;
  for (auto& p : f.model.trainable()) {
    Tensor g = f.be->download(*p.grad);
    CHECK(std::equal(g.f32(), g.f32() + g.numel(), g_plain[i++].f32()));
  }
}

}  // namespace
