// `lora merge` (core/commands/merge.h): golden comparison with PEFT's merge_and_unload (tests/fixtures/golden/
// merged and "merged_logits", made by scripts/make_golden.py), our block-structured q/v adapter, older
// PEFT key layouts, sharded output, verification per dtype, and every refusal of bad input.
// Tolerances: merged weights 1e-6 normwise relative per tensor (both sides compute W0 + s B A in fp32;
// only the summation order differs), logits 1e-5 as the other golden tests.
#include <doctest/doctest.h>

#include <limits>

#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/model/adapter.h"
#include "core/formats/checkpoint.h"
#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/commands/merge.h"
#include "core/model/model.h"
#include "core/formats/safetensors.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {
const std::string kGolden = std::string(LORA_FIXTURES) + "/golden";


Tensor model_logits(const std::string& dir, const GoldenBatch& g, const std::string& adapter = "") {
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(dir);
  Model m(*be, ck.config());
  m.load_base(ck);
  if (!adapter.empty()) adapter_load(m, adapter);
  return m.logits(g.tokens, g.lengths);
}

MergeOptions golden_options(const std::string& out) {
  MergeOptions o;
  o.base_dir = kGolden + "/gpt2-tiny";
  o.adapter_dir = kGolden + "/adapter";
  o.out_dir = out;
  return o;
}

// A copy of the golden adapter with its tensors renamed and/or its config edited.
std::string adapter_variant(const std::function<std::string(const std::string&)>& rename,
                            const std::function<void(json&)>& edit) {
  std::string dir = temp_dir() + "/adapter";
  fs::create_directories(dir);
  SafetensorsFile st = SafetensorsFile::open(kGolden + "/adapter/adapter_model.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& e : st.entries()) {
    std::string name = rename(e.name);
    if (!name.empty()) tensors.push_back({name, st.to_f32(e)});
  }
  safetensors_write(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  json cfg = json_read_file(kGolden + "/adapter/adapter_config.json");
  edit(cfg);
  file_write_atomic(dir + "/adapter_config.json", cfg.dump(2));
  return dir;
}

std::string same_name(const std::string& n) { return n; }
void no_edit(json&) {}
}  // namespace

TEST_CASE("golden: merging PEFT's adapter reproduces PEFT's merge_and_unload") {
  const std::string out = temp_dir() + "/merged";
  MergeReport rep = merge_run(golden_options(out));
  CHECK(rep.modules_merged == 8);
  CHECK(rep.tensors_written == 28);
  CHECK(fs::exists(out + "/model.safetensors"));
  CHECK_FALSE(fs::exists(out + "/model.safetensors.index.json"));
  CHECK_FALSE(fs::exists(out + ".lora-tmp"));
  SafetensorsFile ours = SafetensorsFile::open(out + "/model.safetensors");
  SafetensorsFile ref = SafetensorsFile::open(kGolden + "/merged/model.safetensors");
  CHECK(ours.metadata().at("format") == "pt");
  std::set<std::string> our_names, ref_names;
  for (const auto& e : ours.entries()) our_names.insert(e.name);
  for (const auto& e : ref.entries()) ref_names.insert(e.name);
  CHECK(our_names == ref_names);  // "transformer.h.0.attn.c_attn.weight", ... as save_pretrained writes
  double worst = 0;
  for (const auto& e : ref.entries()) {
    const SafetensorsEntry* o = ours.find(e.name);
    REQUIRE_MESSAGE(o != nullptr, e.name);
    CHECK(o->shape == e.shape);
    CHECK(o->dtype == StDType::F32);
    double err = rel_error(ours.to_f32(*o), ref.to_f32(e));
    INFO(e.name << " normwise relative error " << err);
    CHECK(err < 1e-6);
    worst = std::max(worst, err);
  }
  MESSAGE("merged weights vs PEFT merge_and_unload: worst normwise relative error " << worst);
  // The merged model's logits (our CPU model) equal PEFT's merged model's.
  GoldenBatch g = golden_batch();
  SafetensorsFile reference = SafetensorsFile::open(kGolden + "/reference.safetensors");
  double err = logits_rel_error(model_logits(out, g), reference.to_f32(*reference.find("merged_logits")), g);
  MESSAGE("merged logits vs PEFT merged_logits: normwise relative error " << err);
  CHECK(err < 1e-5);
  // config.json is the base's, so transformers sees the same architecture.
  json cfg = json_read_file(out + "/config.json");
  CHECK(cfg["architectures"][0] == "GPT2LMHeadModel");
  CHECK(cfg["n_embd"] == 32);
  CHECK(fs::exists(out + "/generation_config.json"));
}

TEST_CASE("merge --verify passes per dtype and reports the errors") {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.dtype = dt;
    o.verify = true;
    MergeReport rep = merge_run(o);
    REQUIRE(rep.verified);
    MESSAGE(std::string(dtype_name(dt)) << ": verify max abs " << rep.verify.max_abs << ", max rel " << rep.verify.max_rel
                           << " (threshold " << rep.verify.threshold << ")");
    CHECK(rep.verify.passed);
    CHECK(rep.verify.max_rel <= merge_verify_threshold(dt));
    SafetensorsFile st = SafetensorsFile::open(o.out_dir + "/model.safetensors");
    CHECK(st.entries()[0].dtype == (dt == DType::f32 ? StDType::F32 : dt == DType::bf16 ? StDType::BF16 : StDType::F16));
    json cfg = json_read_file(o.out_dir + "/config.json");
    CHECK(cfg["dtype"] == (dt == DType::f32 ? "float32" : dt == DType::bf16 ? "bfloat16" : "float16"));
  }
  // fp32 is far inside its threshold; the half-precision ones are rounding, not a wrong merge.
  MergeOptions o = golden_options(temp_dir() + "/merged");
  o.verify = true;
  CHECK(merge_run(o).verify.max_rel < 1e-5);
}

TEST_CASE("merge refuses an adapter with a NaN weight, naming the tensor, and writes nothing") {
  std::string dir = temp_dir() + "/adapter-nan";
  fs::create_directories(dir);
  SafetensorsFile st = SafetensorsFile::open(kGolden + "/adapter/adapter_model.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& e : st.entries()) tensors.push_back({e.name, st.to_f32(e)});
  REQUIRE(!tensors.empty());
  tensors[0].second.f32()[0] = std::numeric_limits<float>::quiet_NaN();
  safetensors_write(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  fs::copy_file(kGolden + "/adapter/adapter_config.json", dir + "/adapter_config.json");
  MergeOptions o = golden_options(temp_dir() + "/merged-nan");
  o.adapter_dir = dir;
  o.verify = true;
  lora::Error e = error_of([&] { merge_run(o); });
  CHECK(contains(e.what(), "tensor '" + tensors[0].first + "' holds 1 NaN or infinite value(s)"));
  CHECK(contains(e.what(), "refusing to merge it"));
  CHECK(!fs::exists(o.out_dir));
  // Without --verify too: the merged weights would all be NaN.
  o.verify = false;
  CHECK(contains(error_of([&] { merge_run(o); }).what(), "tensor '" + tensors[0].first + "'"));
  CHECK(!fs::exists(o.out_dir));
}

TEST_CASE("merge --verify on the LLaMA family: PEFT's golden llama adapter") {
  const std::string dir = std::string(LORA_FIXTURES) + "/golden-llama";
  MergeOptions o;
  o.base_dir = dir + "/llama-tiny";
  o.adapter_dir = dir + "/adapter";
  o.out_dir = temp_dir() + "/merged";
  o.verify = true;
  MergeReport rep = merge_run(o);
  REQUIRE(rep.verified);
  MESSAGE("llama: verify max rel " << rep.verify.max_rel);
  CHECK(rep.verify.passed);
  CHECK(rep.verify.max_rel < 1e-5);
  // The merged model's logits equal PEFT's base + adapter logits on the golden batch.
  GoldenBatch g = golden_batch();
  SafetensorsFile reference = SafetensorsFile::open(dir + "/reference.safetensors");
  double err = logits_rel_error(model_logits(o.out_dir, g), reference.to_f32(*reference.find("logits")), g);
  MESSAGE("llama merged logits vs PEFT base + adapter: normwise relative error " << err);
  CHECK(err < 1e-5);
}

TEST_CASE("merge --verify on Qwen2 with a per-layer sliding window: its window keys are kept") {
  const std::string dir = std::string(LORA_FIXTURES) + "/golden-qwen2-swa";
  MergeOptions o;
  o.base_dir = dir + "/qwen2-swa-tiny";
  o.adapter_dir = dir + "/adapter";
  o.out_dir = temp_dir() + "/merged";
  o.verify = true;
  MergeReport rep = merge_run(o);
  REQUIRE(rep.verified);
  CHECK(rep.verify.passed);
  CHECK(rep.verify.max_rel < 1e-5);
  // transformers reads the window from these keys: they are the base's, unchanged.
  json base = json_read_file(o.base_dir + "/config.json"), merged = json_read_file(o.out_dir + "/config.json");
  for (const char* key : {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types"}) {
    INFO(key);
    CHECK(merged.at(key) == base.at(key));
  }
  GoldenBatch g = golden_batch();
  SafetensorsFile reference = SafetensorsFile::open(dir + "/reference.safetensors");
  double err = logits_rel_error(model_logits(o.out_dir, g), reference.to_f32(*reference.find("logits")), g);
  MESSAGE("qwen2-swa merged logits vs PEFT base + adapter: normwise relative error " << err);
  CHECK(err < 1e-5);
}

TEST_CASE("merge of our block-structured q/v adapter equals the adapter's outputs") {
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(kGolden + "/gpt2-tiny");
  Model m(*be, ck.config());
  m.load_base(ck);
  LoraSpec spec;
  spec.r = 2;
  spec.alpha = 6;
  spec.targets = {"q", "v", "down"};
  spec.init_seed = 11;
  m.lora_init(spec);
  trainables_perturb(m, 0.37f);
  GoldenBatch g = golden_batch();
  Tensor with_adapters = m.logits(g.tokens, g.lengths);
  const std::string adapter = temp_dir() + "/qv";
  adapter_save(m, adapter, kGolden + "/gpt2-tiny");
  MergeOptions o;
  o.base_dir = kGolden + "/gpt2-tiny";
  o.adapter_dir = adapter;
  o.out_dir = temp_dir() + "/merged";
  o.verify = true;
  MergeReport rep = merge_run(o);
  CHECK(rep.modules_merged == 4);  // c_attn (q and v as one block-structured LoRA) and mlp.c_proj, 2 layers
  double err = rel_error(model_logits(o.out_dir, g), with_adapters);
  MESSAGE("q/v adapter merged: logits normwise relative error " << err);
  CHECK(err < 1e-5);
  // k's columns of c_attn are untouched by a q/v adapter.
  SafetensorsFile base = SafetensorsFile::open(kGolden + "/gpt2-tiny/model.safetensors");
  SafetensorsFile merged = SafetensorsFile::open(o.out_dir + "/model.safetensors");
  const std::string w = "transformer.h.1.attn.c_attn.weight";
  Tensor w0 = base.to_f32(*base.find(w)), w1 = merged.to_f32(*merged.find(w));
  const int64_t C = 32;
  bool k_same = true, q_changed = false;
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < 3 * C; ++j) {
      bool same = w0.f32()[i * 3 * C + j] == w1.f32()[i * 3 * C + j];
      if (j >= C && j < 2 * C) k_same = k_same && same;
      if (j < C) q_changed = q_changed || !same;
    }
  CHECK(k_same);
  CHECK(q_changed);
}

TEST_CASE("merge accepts older PEFT key layouts") {
  // "...c_attn.lora_A.default.weight" (adapter name in the key) and keys without "base_model.model."
  for (int variant = 0; variant < 2; ++variant) {
    std::string dir = adapter_variant(
        [&](const std::string& n) {
          if (variant == 0) return n.substr(0, n.size() - 7) + ".default.weight";
          return n.substr(std::string("base_model.model.transformer.").size());
        },
        no_edit);
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.adapter_dir = dir;
    merge_run(o);
    SafetensorsFile ours = SafetensorsFile::open(o.out_dir + "/model.safetensors");
    SafetensorsFile ref = SafetensorsFile::open(kGolden + "/merged/model.safetensors");
    for (const auto& e : ref.entries()) {
      const SafetensorsEntry* x = ours.find(e.name);
      REQUIRE_MESSAGE(x != nullptr, e.name);
      CHECK(rel_error(ours.to_f32(*x), ref.to_f32(e)) < 1e-6);
    }
  }
}

TEST_CASE("merge shards its output above the threshold, with an index transformers reads") {
  MergeOptions o = golden_options(temp_dir() + "/merged");
  o.shard_bytes = 20000;  // the tiny model is about 60 kB in fp32
  merge_run(o);
  CHECK(fs::exists(o.out_dir + "/model.safetensors.index.json"));
  CHECK_FALSE(fs::exists(o.out_dir + "/model.safetensors"));
  json idx = json_read_file(o.out_dir + "/model.safetensors.index.json");
  CHECK(idx["weight_map"].size() == 28);
  CHECK(idx["weight_map"].contains("transformer.h.0.attn.c_attn.weight"));
  GoldenBatch g = golden_batch();
  SafetensorsFile reference = SafetensorsFile::open(kGolden + "/reference.safetensors");
  CHECK(logits_rel_error(model_logits(o.out_dir, g), reference.to_f32(*reference.find("merged_logits")), g) < 1e-5);
  CHECK(kMergeShardBytes == 5000000000ull);
}

TEST_CASE("base_model_name_or_path comparison") {
  const std::string base = kGolden + "/gpt2-tiny";
  CHECK(base_name_matches("", base, kGolden + "/adapter"));
  CHECK(base_name_matches(base, base, kGolden + "/adapter"));
  CHECK(base_name_matches(base + "/", base, kGolden + "/adapter"));
  CHECK(base_name_matches("tests/fixtures/golden/gpt2-tiny", base, kGolden + "/adapter"));
  CHECK(base_name_matches("someone/gpt2-tiny", base, kGolden + "/adapter"));
  CHECK(base_name_matches("../gpt2-tiny", base, kGolden + "/adapter"));
  CHECK_FALSE(base_name_matches("gpt2-medium", base, kGolden + "/adapter"));
  CHECK_FALSE(base_name_matches("openai-community/gpt2", base, kGolden + "/adapter"));
}

TEST_CASE("merge refuses bad input with one clear message each") {
  SUBCASE("adapter trained on another base, unless --force") {
    std::string dir = adapter_variant(same_name, [](json& c) { c["base_model_name_or_path"] = "openai-community/gpt2-medium"; });
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.adapter_dir = dir;
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "openai-community/gpt2-medium"));
    CHECK(contains(e.hint(), "--force"));
    CHECK_FALSE(fs::exists(o.out_dir));
    o.force = true;
    MergeReport rep = merge_run(o);
    CHECK(fs::exists(o.out_dir + "/model.safetensors"));
    REQUIRE(!rep.notes.empty());
    CHECK(contains(rep.notes[0], "--force"));
  }
  SUBCASE("output exists, unless --overwrite; never a foreign directory; never an input") {
    MergeOptions o = golden_options(temp_dir() + "/merged");
    merge_run(o);
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "already exists"));
    CHECK(contains(e.hint(), "--overwrite"));
    o.overwrite = true;
    merge_run(o);
    CHECK(fs::exists(o.out_dir + "/model.safetensors"));
    o.out_dir = temp_dir();
    std::ofstream(o.out_dir + "/notes.txt") << "mine";
    Error f = error_of([&] { merge_run(o); });
    CHECK(contains(f.what(), "will not delete"));
    CHECK(fs::exists(o.out_dir + "/notes.txt"));
    o.out_dir = o.base_dir;
    Error g = error_of([&] { merge_run(o); });
    CHECK(contains(g.what(), "is one of the inputs"));
  }
  SUBCASE("tensors that fit no base module are listed") {
    std::string dir = adapter_variant(
        [](const std::string& n) {
          std::string m = n;
          size_t p = m.find("h.1.");
          if (p != std::string::npos) m.replace(p, 4, "h.7.");
          return m;
        },
        no_edit);
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.adapter_dir = dir;
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "4 module(s)"));
    CHECK(contains(e.what(), "transformer.h.7.attn.c_attn.weight"));
    CHECK(contains(e.what(), "transformer.h.7.mlp.c_proj.weight"));
  }
  SUBCASE("unknown tensors (e.g. DoRA magnitudes) and unpaired A/B are listed") {
    std::string dir = adapter_variant(
        [](const std::string& n) {
          if (contains(n, "h.0.mlp.c_fc.lora_B")) return std::string();  // drop one B
          if (contains(n, "h.1.mlp.c_fc.lora_B")) return std::string("base_model.model.transformer.h.1.mlp.c_fc.lora_magnitude_vector");
          return n;
        },
        no_edit);
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.adapter_dir = dir;
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "lora_magnitude_vector"));
    std::string dir2 = adapter_variant(
        [](const std::string& n) { return contains(n, "h.0.mlp.c_fc.lora_B") ? std::string() : n; }, no_edit);
    o.adapter_dir = dir2;
    Error e2 = error_of([&] { merge_run(o); });
    CHECK(contains(e2.what(), "transformer.h.0.mlp.c_fc: has lora_A but no lora_B"));
  }
  SUBCASE("rank that disagrees with the config") {
    std::string dir = adapter_variant(same_name, [](json& c) { c["r"] = 8; });
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.adapter_dir = dir;
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "expected rank 8"));
  }
  SUBCASE("shapes that do not fit the base (another model size)") {
    // A base of the same family but wider: the adapter's (4, 32) A does not fit a 48-wide c_attn.
    std::string base = temp_dir();
    json cfg = json_read_file(kGolden + "/gpt2-tiny/config.json");
    cfg["n_embd"] = 48;
    ModelConfig mc = model_config_from_json(cfg, "test");
    auto be = backend_cpu_create();
    Model m(*be, mc);
    m.init_random(3);
    auto tensors = m.export_base();
    for (auto& t : tensors) t.first = "transformer." + t.first;
    checkpoint_write(base, mc, tensors, DType::f32);
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.base_dir = base;
    o.force = true;
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "8 shape mismatch(es)"));
    CHECK(contains(e.what(), "transformer.h.0.attn.c_attn.weight: base (48, 144), adapter implies (32, 96)"));
  }
  SUBCASE("an adapter for another family") {
    std::string dir = adapter_variant(
        [](const std::string& n) {
          std::string m = n;
          m.replace(m.find("transformer.h."), 14, "model.layers.");
          return m;
        },
        no_edit);
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.adapter_dir = dir;
    Error e = error_of([&] { merge_run(o); });
    CHECK(contains(e.what(), "8 module(s) that the gpt2 base model"));
    CHECK(contains(e.what(), "model.layers.0.attn.c_attn"));
  }
  SUBCASE("missing adapter directory and a pickled adapter") {
    MergeOptions o = golden_options(temp_dir() + "/merged");
    o.adapter_dir = temp_dir() + "/nope";
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_RUNTIME);
    CHECK(contains(e.what(), "does not exist"));
    o.adapter_dir = temp_dir();
    std::ofstream(o.adapter_dir + "/adapter_model.bin") << "pickle";
    Error p = error_of([&] { merge_run(o); });
    CHECK(contains(p.what(), "never unpickles"));
  }
  SUBCASE("unknown dtype") {
    Error e = error_of([] { merge_dtype_parse("fp8"); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.hint(), "fp32, bf16, fp16"));
  }
}

}  // namespace
