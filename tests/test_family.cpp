// The model-family table (core/formats/family.h): every family is reachable by its name, its
// model_types and its GGUF architectures; its names describe a model the Model class builds (each
// target on a layer the block has, each block module recognised as the family's own and no other's);
// and the fixtures' configs map to the family their model_type belongs to.
#include <doctest/doctest.h>

#include <regex>
#include <set>

#include "core/formats/family.h"
#include "core/model/model.h"
#include "tests/test_util.h"

namespace {

using namespace lora;

// A small config of each family, from the golden fixtures (written by transformers).
std::vector<ModelConfig> fixture_configs() {
  const std::string dir = LORA_FIXTURES;
  return {model_config_load(dir + "/golden/gpt2-tiny"), model_config_load(dir + "/golden-llama/llama-tiny"),
          model_config_load(dir + "/golden-roberta/roberta-cls")};
}

}  // namespace

TEST_CASE("family: every family is found by its name, model types and GGUF architectures") {
  std::set<std::string> names, types, archs;
  for (const Family* f : families()) {
    CHECK(names.insert(f->name).second);
    CHECK(family_find(f->name) == f);
    CHECK(!f->model_types.empty());
    for (const auto& t : f->model_types) {
      CHECK_MESSAGE(types.insert(t).second, "model_type " << t << " read by two families");
      CHECK(family_for_model_type(t) == f);
    }
    for (const GgufArch& a : f->gguf_archs) {
      CHECK(archs.insert(a.name).second);
      const GgufArch* found = nullptr;
      CHECK(family_for_gguf_arch(a.name, &found) == f);
      CHECK(found == &a);
    }
  }
  CHECK(family_find("no-such-family") == nullptr);
  CHECK(family_for_model_type("bert") == nullptr);
  CHECK(family_for_gguf_arch("bert") == nullptr);
  ModelConfig unknown;
  unknown.family = "no-such-family";
  CHECK_THROWS_AS(family_of(unknown), std::logic_error);
}

TEST_CASE("family: the fixtures' configs map to their family, and back to the same model_type") {
  for (const ModelConfig& c : fixture_configs()) {
    CAPTURE(c.family);
    const Family& f = family_of(c);
    CHECK(family_for_model_type(c.model_type) == &f);
    const nlohmann::json j = model_config_to_json(c);
    CHECK(j["model_type"] == c.model_type);
    const ModelConfig back = model_config_from_json(j, "written");
    CHECK(back.family == c.family);
    CHECK(back.n_layer == c.n_layer);
    CHECK(back.d_model == c.d_model);
  }
}

TEST_CASE("family: each block module matches its own family's pattern only, with or without the prefix") {
  for (const ModelConfig& c : fixture_configs()) {
    const Family& f = family_of(c);
    const BlockNames n = f.block_names(c, 1);
    int linears = 0;
    for (const std::string& module : n.linear) {
      if (module.empty()) continue;
      ++linears;
      for (const std::string& name : {module, f.prefix + module}) {
        CAPTURE(name);
        for (const Family* other : families())
          CHECK(std::regex_match(name, std::regex(other->module_pattern)) == (other == &f));
        // Where the family has a llama.cpp architecture, every linear layer of a block has a GGUF name
        // in that block; where it has none, no name at all.
        const std::string g = f.gguf_tensor(name);
        if (f.gguf_archs.empty())
          CHECK(g == "");
        else
          CHECK(g.rfind("blk.1.", 0) == 0);
      }
    }
    CHECK(linears >= 4);
    CHECK(!n.ln1.empty());
    CHECK(!n.ln2.empty());
    CHECK(std::string(c.post_norm ? f.embed_norm : f.final_norm) != "");
  }
}

TEST_CASE("family: every target names a layer the block has, and unknown targets name the family") {
  for (const ModelConfig& c : fixture_configs()) {
    CAPTURE(c.family);
    const Family& f = family_of(c);
    const BlockNames n = f.block_names(c, 0);
    for (const TargetAlias& a : f.targets(c)) {
      CAPTURE(a.name);
      CHECK(!n.linear[int(a.slot)].empty());
      CHECK(!lora_target_slots(a.name, c).empty());
    }
    Error e = error_of([&] { lora_target_slots("no_such_module", c); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "for a " + c.family + " model"));
    CHECK(e.hint() == f.targets_hint);
  }
}

TEST_CASE("family: names_and") {
  CHECK(names_and({}) == "");
  CHECK(names_and({"a"}) == "a");
  CHECK(names_and({"a", "b"}) == "a and b");
  CHECK(names_and({"a", "b", "c"}) == "a, b and c");
}
