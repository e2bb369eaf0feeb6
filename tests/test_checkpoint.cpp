// HF checkpoint directories and config.json mapping: a tiny GPT-2-shaped checkpoint written with
// checkpoint_write is read back with and without the "transformer." prefix, single-file and sharded;
// bad directories (pickles only, missing, unsupported model_type, broken index) give their messages.
// The config mappers are checked against HF's documented keys and defaults for each family.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using nlohmann::json;

namespace {

void text_write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}


ModelConfig tiny_gpt2() {
  json j = {{"model_type", "gpt2"}, {"n_layer", 2},     {"n_head", 2},       {"n_embd", 8},
            {"n_inner", nullptr},   {"vocab_size", 16}, {"n_positions", 12}, {"layer_norm_epsilon", 1e-5}};
  return model_config_from_json(j, "tiny");
}

Tensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng) {
  Tensor t = tensor_host(std::move(shape));
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

// GPT-2's tensors for config c, named with `prefix`.
std::vector<std::pair<std::string, Tensor>> gpt2_tensors(const ModelConfig& c, const std::string& prefix) {
  std::mt19937 rng(1234);
  const int64_t C = c.d_model, F = c.d_ff;
  std::vector<std::pair<std::string, Tensor>> t = {{prefix + "wte.weight", random_tensor({c.vocab_size, C}, rng)},
                                                   {prefix + "wpe.weight", random_tensor({c.max_positions, C}, rng)}};
  for (int l = 0; l < c.n_layer; ++l) {
    std::string h = prefix + "h." + std::to_string(l) + ".";
    t.push_back({h + "ln_1.weight", random_tensor({C}, rng)});
    t.push_back({h + "ln_1.bias", random_tensor({C}, rng)});
    t.push_back({h + "attn.c_attn.weight", random_tensor({C, 3 * C}, rng)});  // Conv1D: (in, out)
    t.push_back({h + "attn.c_attn.bias", random_tensor({3 * C}, rng)});
    t.push_back({h + "attn.c_proj.weight", random_tensor({C, C}, rng)});
    t.push_back({h + "mlp.c_fc.weight", random_tensor({C, F}, rng)});
    t.push_back({h + "mlp.c_proj.weight", random_tensor({F, C}, rng)});
  }
  t.push_back({prefix + "ln_f.weight", random_tensor({C}, rng)});
  return t;
}

void check_same(const Tensor& got, const Tensor& want) {
  REQUIRE(got.shape == want.shape);
  int diffs = 0;
  for (int64_t i = 0; i < want.numel(); ++i) diffs += got.f32()[i] != want.f32()[i];
  CHECK(diffs == 0);
}

}  // namespace

TEST_CASE("checkpoint round trip, with and without the family prefix") {
  ModelConfig c = tiny_gpt2();
  for (std::string prefix : {"", "transformer."}) {
    CAPTURE(prefix);
    std::string dir = temp_dir() + "/model";  // checkpoint_write creates it
    auto tensors = gpt2_tensors(c, prefix);
    checkpoint_write(dir, c, tensors, DType::f32);
    CHECK(std::filesystem::exists(dir + "/model.safetensors"));
    CHECK(!std::filesystem::exists(dir + "/model.safetensors.index.json"));

    Checkpoint ck = Checkpoint::open(dir);
    CHECK(ck.config().family == "gpt2");
    CHECK(ck.config().n_layer == 2);
    CHECK(ck.config().d_ff == 32);
    CHECK(ck.names().size() == tensors.size());
    CHECK(ck.files().size() == 1);
    for (const auto& [name, t] : tensors) {
      std::string bare = name.substr(prefix.size());
      CHECK(ck.has(bare));
      CHECK(ck.has("transformer." + bare));
      check_same(ck.get(bare, t.shape), t);
      check_same(ck.get("transformer." + bare, t.shape), t);
    }
    CHECK(ck.shape("h.0.attn.c_attn.weight") == std::vector<int64_t>{8, 24});
    CHECK(!ck.has("h.9.attn.c_attn.weight"));
    CHECK(!ck.has("model.wte.weight"));  // another family's prefix is not tried
  }
}

TEST_CASE("checkpoint written as bf16 reads back rounded, config records torch_dtype") {
  ModelConfig c = tiny_gpt2();
  std::string dir = temp_dir();
  auto tensors = gpt2_tensors(c, "transformer.");
  checkpoint_write(dir, c, tensors, DType::bf16);
  json cfg = json_read_file(dir + "/config.json");
  CHECK(cfg["torch_dtype"] == "bfloat16");
  Checkpoint ck = Checkpoint::open(dir);
  Tensor got = ck.get("wte.weight", {16, 8});
  const Tensor& want = tensors[0].second;
  float worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    worst = std::max(worst, std::abs(got.f32()[i] - want.f32()[i]) / std::max(std::abs(want.f32()[i]), 1e-30f));
  CHECK(worst > 0);            // it really was rounded
  CHECK(worst <= 1.0f / 256);  // bf16: 8 significant bits, so half an ulp is at most 2^-8 relative
}

TEST_CASE("sharded checkpoint with an index") {
  ModelConfig c = tiny_gpt2();
  std::string dir = temp_dir();
  auto tensors = gpt2_tensors(c, "transformer.");
  checkpoint_write(dir, c, tensors, DType::f32, /*shard_bytes=*/2048);
  CHECK(!std::filesystem::exists(dir + "/model.safetensors"));
  json index = json_read_file(dir + "/model.safetensors.index.json");
  CHECK(index["weight_map"].size() == tensors.size());
  uint64_t total = 0;
  for (const auto& [name, t] : tensors) total += t.nbytes();
  CHECK(index["metadata"]["total_size"] == total);

  Checkpoint ck = Checkpoint::open(dir);
  CHECK(ck.files().size() > 1);
  for (const auto& f : ck.files()) CHECK(contains(f, "-of-"));
  for (const auto& [name, t] : tensors) check_same(ck.get(name.substr(12), t.shape), t);

  SUBCASE("an index naming a tensor its shard lacks") {
    std::string shard = index["weight_map"]["transformer.wte.weight"];
    index["weight_map"]["transformer.h.7.attn.c_attn.weight"] = shard;
    text_write(dir + "/model.safetensors.index.json", index.dump());
    Error e = error_of([&] { Checkpoint::open(dir); });
    CHECK(contains(e.what(), "transformer.h.7.attn.c_attn.weight"));
    CHECK(contains(e.what(), shard));
    CHECK(contains(e.what(), "does not contain it"));
  }
  SUBCASE("an index naming a missing shard") {
    index["weight_map"]["transformer.wte.weight"] = "model-00009-of-00009.safetensors";
    text_write(dir + "/model.safetensors.index.json", index.dump());
    Error e = error_of([&] { Checkpoint::open(dir); });
    CHECK(contains(e.what(), "model-00009-of-00009.safetensors"));
    CHECK(contains(e.what(), "does not exist"));
  }
  SUBCASE("an index escaping the directory") {
    index["weight_map"]["transformer.wte.weight"] = "../elsewhere.safetensors";
    text_write(dir + "/model.safetensors.index.json", index.dump());
    CHECK(contains(error_of([&] { Checkpoint::open(dir); }).what(), "expected a file name inside the directory"));
  }
  SUBCASE("rewriting unsharded removes the stale index") {
    checkpoint_write(dir, c, tensors, DType::f32, 0);
    CHECK(!std::filesystem::exists(dir + "/model.safetensors.index.json"));
    CHECK(Checkpoint::open(dir).files().size() == 1);
  }
}

TEST_CASE("checkpoint get: wrong shape and missing names") {
  ModelConfig c = tiny_gpt2();
  std::string dir = temp_dir();
  checkpoint_write(dir, c, gpt2_tensors(c, "transformer."), DType::f32);
  Checkpoint ck = Checkpoint::open(dir);

  Error shape = error_of([&] { ck.get("h.0.attn.c_attn.weight", {24, 8}); });
  CHECK(contains(shape.what(), "transformer.h.0.attn.c_attn.weight"));
  CHECK(contains(shape.what(), "(8, 24)"));
  CHECK(contains(shape.what(), "expected (24, 8)"));
  CHECK(shape.code() == EXIT_CODE_RUNTIME);

  Error missing = error_of([&] { ck.get("h.0.attn.c_atn.weight", {8, 24}); });
  CHECK(contains(missing.what(), "'h.0.attn.c_atn.weight'"));
  CHECK(contains(missing.what(), dir + "/model.safetensors"));
  CHECK(contains(missing.what(), "closest stored name: 'transformer.h.0.attn.c_attn.weight'"));
  CHECK(contains(missing.what(), "also tried 'transformer.h.0.attn.c_atn.weight'"));
}

TEST_CASE("checkpoint directories that cannot be loaded") {
  std::string dir = temp_dir();
  ModelConfig c = tiny_gpt2();
  json cfg = model_config_to_json(c);

  SUBCASE("pickled weights only") {
    text_write(dir + "/config.json", cfg.dump());
    text_write(dir + "/pytorch_model.bin", "PK\x03\x04 not really a pickle");
    Error e = error_of([&] { Checkpoint::open(dir); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "pytorch_model.bin"));
    CHECK(contains(e.what(), "never unpickles"));
    CHECK(contains(e.hint(), "safe_serialization=True"));
    CHECK(contains(e.hint(), dir));
  }
  SUBCASE("no weights at all") {
    text_write(dir + "/config.json", cfg.dump());
    CHECK(contains(error_of([&] { Checkpoint::open(dir); }).what(), "has no weights"));
  }
  SUBCASE("missing directory") {
    Error e = error_of([&] { Checkpoint::open(dir + "/absent"); });
    CHECK(contains(e.what(), dir + "/absent"));
    CHECK(contains(e.what(), "does not exist"));
  }
  SUBCASE("missing config.json") {
    Error e = error_of([&] { Checkpoint::open(dir); });
    CHECK(contains(e.what(), "has no config.json"));
  }
  SUBCASE("unsupported model_type") {
    text_write(dir + "/config.json", R"({"model_type": "t5", "d_model": 512})");
    Error e = error_of([&] { Checkpoint::open(dir); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "'t5'"));
    CHECK(contains(e.what(), dir + "/config.json"));
    CHECK(contains(e.what(), "gpt2, llama"));
  }
  SUBCASE("config.json that is not JSON") {
    text_write(dir + "/config.json", "{\"model_type\": \"gpt2\",\n \"n_layer\": 2,,}");
    Error e = error_of([&] { Checkpoint::open(dir); });
    CHECK(contains(e.what(), dir + "/config.json"));
    CHECK(contains(e.what(), "invalid JSON at byte 38"));
  }
  SUBCASE("config.json with a duplicate key") {
    text_write(dir + "/config.json", R"({"model_type": "gpt2", "n_layer": 2, "n_layer": 3})");
    CHECK(contains(error_of([&] { Checkpoint::open(dir); }).what(), "duplicate key 'n_layer'"));
  }
}

TEST_CASE("config.json mappers") {
  SUBCASE("gpt2: defaults, n_inner, activation, inverse") {
    json j = {{"model_type", "gpt2"}, {"n_layer", 12},   {"n_head", 12},        {"n_embd", 768},
              {"vocab_size", 50257},  {"n_positions", 1024}, {"activation_function", "gelu_new"}};
    ModelConfig c = model_config_from_json(j, "gpt2.json");
    CHECK(c.d_ff == 3072);
    CHECK(c.head_dim == 64);
    CHECK(c.n_kv_head == 12);
    CHECK(c.act == ActKind::gelu_tanh);
    CHECK(c.norm == NormKind::layernorm);
    CHECK(c.conv1d_weights);
    CHECK(c.tied_head);
    CHECK(c.causal);
    CHECK(c.eos_token_id == 50256);
    CHECK(c.norm_eps == 1e-5f);
    j["activation_function"] = "gelu";
    CHECK(model_config_from_json(j, "gpt2.json").act == ActKind::gelu_erf);
    j["activation_function"] = "relu";
    Error act = error_of([&] { model_config_from_json(j, "gpt2.json"); });
    CHECK(contains(act.what(), "activation_function"));
    CHECK(contains(act.what(), "'relu'"));

    json back = model_config_to_json(c);
    CHECK(back["n_embd"] == 768);
    CHECK(back["layer_norm_epsilon"].get<double>() == 1e-5);  // written as the decimal, not 9.99999974e-06
    ModelConfig again = model_config_from_json(back, "back.json");
    CHECK(again.d_ff == c.d_ff);
    CHECK(again.max_positions == c.max_positions);
    CHECK(again.act == c.act);
    CHECK(again.norm_eps == c.norm_eps);
    CHECK(again.eos_token_id == c.eos_token_id);
  }
  SUBCASE("missing and mistyped keys name the key and file") {
    json j = {{"model_type", "gpt2"}, {"n_layer", 2}, {"n_head", 2}, {"vocab_size", 16}, {"n_positions", 8}};
    Error e = error_of([&] { model_config_from_json(j, "/m/config.json"); });
    CHECK(contains(e.what(), "'n_embd'"));
    CHECK(contains(e.what(), "/m/config.json"));
    j["n_embd"] = "eight";
    CHECK(contains(error_of([&] { model_config_from_json(j, "c"); }).what(), "must be an integer"));
    j["n_embd"] = 7;  // not divisible by 2 heads
    CHECK(contains(error_of([&] { model_config_from_json(j, "c"); }).what(), "not divisible"));
    CHECK(contains(error_of([&] { model_config_from_json(json{{"n_layer", 2}}, "c"); }).what(), "'model_type'"));
  }
  SUBCASE("llama, mistral, qwen2") {
    json j = {{"model_type", "llama"},   {"hidden_size", 64},        {"intermediate_size", 172},
              {"num_hidden_layers", 2},  {"num_attention_heads", 8}, {"num_key_value_heads", 2},
              {"vocab_size", 100},       {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6},
              {"rope_theta", 500000.0},  {"hidden_act", "silu"},     {"eos_token_id", {7, 8}}};
    ModelConfig c = model_config_from_json(j, "llama.json");
    CHECK(c.family == "llama");
    CHECK(c.norm == NormKind::rmsnorm);
    CHECK(c.pos == PosKind::rotary);
    CHECK(c.act == ActKind::swiglu);
    CHECK(c.n_kv_head == 2);
    CHECK(c.head_dim == 8);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(!c.bias);
    CHECK(!c.qkv_bias);
    CHECK(!c.tied_head);
    CHECK(!c.conv1d_weights);
    CHECK(c.eos_token_id == 7);
    ModelConfig again = model_config_from_json(model_config_to_json(c), "back.json");
    CHECK(again.n_kv_head == 2);
    CHECK(again.rope_theta == c.rope_theta);
    CHECK(again.d_ff == 172);

    j["num_key_value_heads"] = 3;
    CHECK(contains(error_of([&] { model_config_from_json(j, "c"); }).what(), "not a multiple of 3"));
    j["num_key_value_heads"] = 2;
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
    Error rs = error_of([&] { model_config_from_json(j, "c"); });
    CHECK(rs.code() == EXIT_CODE_USAGE);
    CHECK(contains(rs.what(), "rope_scaling"));
    CHECK(contains(rs.what(), "'llama3'"));
    j["rope_scaling"] = {{"rope_type", "default"}};
    CHECK(model_config_from_json(j, "c").rope_theta == 500000.0f);
    j.erase("rope_scaling");
    j.erase("rope_theta");  // transformers 5 moves it into rope_parameters
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
    CHECK(model_config_from_json(j, "c").rope_theta == 1000000.0f);
    j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1000000.0}, {"factor", 4.0}};
    CHECK(contains(error_of([&] { model_config_from_json(j, "c"); }).what(), "rope_parameters.rope_type"));
    j.erase("rope_parameters");

    j["model_type"] = "qwen2";
    ModelConfig q = model_config_from_json(j, "qwen2.json");
    CHECK(q.family == "llama");
    CHECK(q.model_type == "qwen2");
    CHECK(q.qkv_bias);
    CHECK(!q.o_bias);
    CHECK(!q.mlp_bias);
    CHECK(model_config_to_json(q)["model_type"] == "qwen2");

    j["model_type"] = "mistral";
    j["sliding_window"] = 4096;
    ModelConfig m = model_config_from_json(j, "mistral.json");
    CHECK(m.sliding_window == 4096);
    CHECK(model_config_from_json(model_config_to_json(m), "back").sliding_window == 4096);
    j["sliding_window"] = nullptr;  // Mistral v0.2 on: full attention
    CHECK(model_config_from_json(j, "mistral.json").sliding_window == 0);
    j["sliding_window"] = -1;
    CHECK_THROWS_AS(model_config_from_json(j, "mistral.json"), Error);
  }
  SUBCASE("roberta") {
    json j = {{"model_type", "roberta"},  {"hidden_size", 768},   {"intermediate_size", 3072},
              {"num_hidden_layers", 12},  {"num_attention_heads", 12}, {"vocab_size", 50265},
              {"max_position_embeddings", 514}, {"type_vocab_size", 1}, {"layer_norm_eps", 1e-5},
              {"hidden_act", "gelu"},     {"pad_token_id", 1}};
    ModelConfig c = model_config_from_json(j, "roberta.json");
    CHECK(c.post_norm);
    CHECK(!c.causal);
    CHECK(c.act == ActKind::gelu_erf);
    CHECK(c.position_offset == 2);
    CHECK(c.max_positions == 512);
    CHECK(c.type_vocab_size == 1);
    json back = model_config_to_json(c);
    CHECK(back["max_position_embeddings"] == 514);
    ModelConfig again = model_config_from_json(back, "back");
    CHECK(again.max_positions == 512);
    CHECK(again.position_offset == 2);
    // The sequence-classification head: num_labels from the key, else id2label's size, else 2 (HF's
    // default); 1 label is regression; multi-label classification is refused.
    CHECK(c.head == HeadKind::classifier);
    CHECK(c.num_labels == 2);
    CHECK(c.head_dropout == doctest::Approx(0.1));  // hidden_dropout_prob's default, as classifier_dropout null
    j["id2label"] = {{"0", "entailment"}, {"1", "neutral"}, {"2", "contradiction"}};
    CHECK(model_config_from_json(j, "c").num_labels == 3);
    j["num_labels"] = 1;
    ModelConfig reg = model_config_from_json(j, "c");
    CHECK(reg.num_labels == 1);
    CHECK(model_config_to_json(reg)["problem_type"] == "regression");
    CHECK(model_config_from_json(model_config_to_json(reg), "back").num_labels == 1);
    j["problem_type"] = "multi_label_classification";
    CHECK(contains(error_of([&] { model_config_from_json(j, "c"); }).what(), "problem_type"));
    j.erase("problem_type");
    j.erase("num_labels");
    j.erase("id2label");
    j["position_embedding_type"] = "relative_key";
    CHECK(contains(error_of([&] { model_config_from_json(j, "c"); }).what(), "position_embedding_type"));
  }
}

}  // namespace
