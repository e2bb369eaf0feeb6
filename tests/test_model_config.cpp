// config.json's sliding-window keys, mapped as transformers 5.23 reads them (core/model_config.cpp,
// window_parse): Qwen2's use_sliding_window, sliding_window, max_window_layers and layer_types, Mistral's
// sliding_window, layer_types in any LLaMA-family config, the inverse mapping, and one message per bad
// value naming the file and the key. The other mapper tests are in test_checkpoint.cpp.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model_config.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using nlohmann::json;

namespace {

const char* kPath = "/m/config.json";

json llama_family(const std::string& type, int layers) {
  return {{"model_type", type},         {"hidden_size", 32},           {"intermediate_size", 64},
          {"num_hidden_layers", layers}, {"num_attention_heads", 4},    {"num_key_value_heads", 2},
          {"vocab_size", 97},           {"max_position_embeddings", 64}};
}

std::vector<int> windows(const json& j) {
  ModelConfig c = model_config_from_json(j, kPath);
  std::vector<int> w;
  for (int l = 0; l < c.n_layer; ++l) w.push_back(c.window_of(l));
  return w;
}

std::vector<int> windows_of(const ModelConfig& c) {
  std::vector<int> w;
  for (int l = 0; l < c.n_layer; ++l) w.push_back(c.window_of(l));
  return w;
}

const std::string S = "sliding_attention", F = "full_attention";

}  // namespace

TEST_CASE("qwen2: no window unless use_sliding_window is true") {
  json j = llama_family("qwen2", 4);
  CHECK(windows(j) == std::vector<int>{0, 0, 0, 0});
  // Qwen2-7B's config: a window and max_window_layers, but use_sliding_window false (transformers sets
  // sliding_window to null, so no layer slides whatever the other keys say, and 0 is not an error).
  j["sliding_window"] = 131072;
  j["max_window_layers"] = 0;
  j["use_sliding_window"] = false;
  CHECK(windows(j) == std::vector<int>{0, 0, 0, 0});
  CHECK(!model_config_from_json(j, kPath).has_window());
  j["sliding_window"] = 0;
  CHECK(windows(j) == std::vector<int>{0, 0, 0, 0});
  j["layer_types"] = {F, F, F, F};
  CHECK(windows(j) == std::vector<int>{0, 0, 0, 0});
}

TEST_CASE("qwen2: without layer_types the layers i >= max_window_layers slide") {
  json j = llama_family("qwen2", 4);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 8;
  j["max_window_layers"] = 2;
  CHECK(windows(j) == std::vector<int>{0, 0, 8, 8});
  j["max_window_layers"] = 0;
  CHECK(windows(j) == std::vector<int>{8, 8, 8, 8});
  j["max_window_layers"] = -1;  // as transformers: every i >= -1
  CHECK(windows(j) == std::vector<int>{8, 8, 8, 8});
  j.erase("max_window_layers");  // Qwen2Config's default 28: no layer of 4 slides
  CHECK(windows(j) == std::vector<int>{0, 0, 0, 0});
  ModelConfig c = model_config_from_json(j, kPath);
  CHECK(c.sliding_window == 8);
  CHECK(!c.has_window());
  j["sliding_window"] = nullptr;  // null: no window, so no sliding layers
  j["max_window_layers"] = 1;
  CHECK(windows(j) == std::vector<int>{0, 0, 0, 0});

  json deep = llama_family("qwen2", 30);
  deep["use_sliding_window"] = true;  // sliding_window absent: Qwen2Config's default 4096, layers 28 and 29
  ModelConfig d = model_config_from_json(deep, kPath);
  CHECK(d.sliding_window == 4096);
  CHECK(d.window_of(27) == 0);
  CHECK(d.window_of(28) == 4096);
  CHECK(d.window_of(29) == 4096);
}

TEST_CASE("qwen2: layer_types, when present, decides and max_window_layers is not read") {
  json j = llama_family("qwen2", 4);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 8;
  j["max_window_layers"] = 2;
  j["layer_types"] = {S, F, "attention", S};  // "attention": transformers' legacy full_attention
  CHECK(windows(j) == std::vector<int>{8, 0, 0, 8});
  j["layer_types"] = {F, F, F, F};
  CHECK(windows(j) == std::vector<int>{0, 0, 0, 0});
  j["layer_types"] = nullptr;  // null: as absent
  CHECK(windows(j) == std::vector<int>{0, 0, 8, 8});
}

TEST_CASE("qwen2: config.json written back keeps the windows, as Qwen2Config saves them") {
  json j = llama_family("qwen2", 4);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 8;
  j["layer_types"] = {S, F, F, S};
  ModelConfig c = model_config_from_json(j, kPath);
  json back = model_config_to_json(c);
  CHECK(back["use_sliding_window"] == true);
  CHECK(back["sliding_window"] == 8);
  CHECK(back["layer_types"] == json{S, F, F, S});
  CHECK(!back.contains("max_window_layers"));  // no value of it gives these layers
  CHECK(windows_of(model_config_from_json(back, "back")) == windows_of(c));

  j["layer_types"] = {F, F, S, S};
  back = model_config_to_json(model_config_from_json(j, kPath));
  CHECK(back["max_window_layers"] == 2);  // the same layers by the older rule
  back.erase("layer_types");
  CHECK(windows(back) == std::vector<int>{0, 0, 8, 8});

  // No window: no window keys (transformers' defaults give full attention).
  back = model_config_to_json(model_config_from_json(llama_family("qwen2", 4), kPath));
  CHECK(!back.contains("use_sliding_window"));
  CHECK(!back.contains("layer_types"));
}

TEST_CASE("qwen2: bad window keys give one message naming the file and the key") {
  json j = llama_family("qwen2", 4);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 8;

  SUBCASE("layer_types of the wrong length") {
    j["layer_types"] = {S, F, F};
    Error e = error_of([&] { model_config_from_json(j, kPath); });
    CHECK(e.code() == EXIT_CODE_RUNTIME);
    CHECK(contains(e.what(), "config '/m/config.json': key 'layer_types' has 3 entries, expected 4"));
    CHECK(contains(e.what(), "num_hidden_layers"));
  }
  SUBCASE("layer_types not a list") {
    j["layer_types"] = "sliding_attention";
    Error e = error_of([&] { model_config_from_json(j, kPath); });
    CHECK(contains(e.what(), "key 'layer_types' must be a list of strings, found \"sliding_attention\""));
  }
  SUBCASE("an entry that is not a string") {
    j["layer_types"] = {S, 1, F, F};
    CHECK(contains(error_of([&] { model_config_from_json(j, kPath); }).what(), "entry 1 must be a string, found 1"));
  }
  SUBCASE("an unknown or unsupported entry") {
    for (const char* kind : {"chunked_attention", "sliding"}) {
      j["layer_types"] = {S, F, kind, F};
      Error e = error_of([&] { model_config_from_json(j, kPath); });
      CHECK(e.code() == EXIT_CODE_USAGE);
      CHECK(contains(e.what(), "config '/m/config.json': key 'layer_types' entry 2 is '" + std::string(kind) + "'"));
      CHECK(contains(e.what(), "only 'full_attention' and 'sliding_attention' are supported"));
    }
  }
  SUBCASE("a window that is not positive") {
    for (int w : {0, -3}) {
      j["sliding_window"] = w;
      Error e = error_of([&] { model_config_from_json(j, kPath); });
      CHECK(e.code() == EXIT_CODE_RUNTIME);
      CHECK(contains(e.what(), "key 'sliding_window' must be a positive integer or null, found " + std::to_string(w)));
    }
    j["sliding_window"] = "4096";
    CHECK(contains(error_of([&] { model_config_from_json(j, kPath); }).what(), "must be an integer"));
  }
  SUBCASE("a sliding layer without a window") {
    j["layer_types"] = {F, S, F, F};
    j["use_sliding_window"] = false;
    Error e = error_of([&] { model_config_from_json(j, kPath); });
    CHECK(contains(e.what(), "key 'layer_types' marks layer 1 'sliding_attention' but the config has no window "
                             "(use_sliding_window is false)"));
    CHECK(contains(e.hint(), "use_sliding_window"));
    j["use_sliding_window"] = true;
    j["sliding_window"] = nullptr;
    CHECK(contains(error_of([&] { model_config_from_json(j, kPath); }).what(), "(sliding_window is null)"));
  }
  SUBCASE("use_sliding_window and max_window_layers of the wrong type") {
    j["use_sliding_window"] = "yes";
    CHECK(contains(error_of([&] { model_config_from_json(j, kPath); }).what(),
                   "key 'use_sliding_window' must be true or false"));
    j["use_sliding_window"] = true;
    j["max_window_layers"] = 2.5;
    CHECK(contains(error_of([&] { model_config_from_json(j, kPath); }).what(),
                   "key 'max_window_layers' must be an integer"));
  }
}

TEST_CASE("mistral: one window on every layer; layer_types checked, then ignored as transformers does") {
  json j = llama_family("mistral", 2);
  CHECK(windows(j) == std::vector<int>{4096, 4096});  // absent: MistralConfig's default
  j["sliding_window"] = nullptr;
  CHECK(windows(j) == std::vector<int>{0, 0});
  j["sliding_window"] = 5;
  CHECK(windows(j) == std::vector<int>{5, 5});
  CHECK(model_config_from_json(j, kPath).sliding_layers.empty());
  // MistralModel never reads layer_types (MistralConfig warns about it): the window stays on every layer.
  j["layer_types"] = {F, S};
  CHECK(windows(j) == std::vector<int>{5, 5});
  j["layer_types"] = {F};
  CHECK(contains(error_of([&] { model_config_from_json(j, kPath); }).what(),
                 "key 'layer_types' has 1 entries, expected 2"));
  j.erase("layer_types");
  j["sliding_window"] = 0;
  CHECK(contains(error_of([&] { model_config_from_json(j, kPath); }).what(),
                 "key 'sliding_window' must be a positive integer or null, found 0"));

  json l = llama_family("llama", 2);
  l["sliding_window"] = 5;  // not a LLaMA key: no window
  l["layer_types"] = {S, S};
  CHECK(windows(l) == std::vector<int>{0, 0});
  l["layer_types"] = {S, S, S};
  CHECK(contains(error_of([&] { model_config_from_json(l, kPath); }).what(), "has 3 entries, expected 2"));
}

}  // namespace
