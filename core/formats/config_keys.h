// Reading config.json keys for the family mappers (core/formats/family_*.cpp): typed lookups that name
// the file and key in their errors, HF's defaults where a key is optional, and the few parsers the
// families share. A malformed value is a runtime error (exit 1); a setting the model code cannot
// honour is refused as a usage error (exit 2) naming the key, never ignored.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "core/formats/model_config.h"

namespace lora {
namespace config_keys {

using nlohmann::json;

std::string where_of(const std::string& path, const std::string& key);  // "config 'p': key 'k'"
// A present, non-null key; absent and null mean "use the default".
const json* key_find(const json& j, const std::string& key);
// An integer key; required (missing: error) unless a fallback is given.
int key_int(const json& j, const std::string& key, const std::string& path, const int* fallback = nullptr);
int key_int_or(const json& j, const std::string& key, const std::string& path, int fallback);
int key_size(const json& j, const std::string& key, const std::string& path);  // required and positive
float key_float_or(const json& j, const std::string& key, const std::string& path, float fallback);
bool key_bool_or(const json& j, const std::string& key, const std::string& path, bool fallback);
std::string key_string_or(const json& j, const std::string& key, const std::string& path, const std::string& fallback);
// A token id, or the first of a list (LLaMA 3 lists several eos ids); fallback when absent.
int key_token_id(const json& j, const std::string& key, const std::string& path, int fallback);

// Refuses an architecture variant: "key is <found>; only <expected> is supported" (usage error).
[[noreturn]] void refuse(const std::string& path, const std::string& key, const std::string& found,
                         const std::string& expected);
// GELU spellings: gelu (erf), gelu_new / gelu_pytorch_tanh / gelu_fast (tanh); others refused.
ActKind act_parse(const std::string& name, const std::string& path, const std::string& key);
const char* act_name(ActKind a);  // the inverse, for config.json
// Query heads and head size, checked; kv heads must divide the query heads.
void heads_check(ModelConfig& c, const std::string& path);
// The shortest decimal that reads back as the same float, so 1e-5f is written 1e-05.
double float_for_json(float f);

}  // namespace config_keys
}  // namespace lora
