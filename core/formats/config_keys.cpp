// config.json key readers shared by the family mappers. See config_keys.h.
#include "core/formats/config_keys.h"

#include <climits>
#include <cstdio>
#include <cstdlib>

#include "core/base/error.h"

namespace lora {
namespace config_keys {

std::string where_of(const std::string& path, const std::string& key) {
  return "config '" + path + "': key '" + key + "'";
}

// A present, non-null key; absent and null mean "use the default".
const json* key_find(const json& j, const std::string& key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int key_int(const json& j, const std::string& key, const std::string& path, const int* fallback) {
  const json* v = key_find(j, key);
  if (!v) {
    if (fallback) return *fallback;
    fail_runtime(where_of(path, key) + " is missing (required for this model_type)",
                 "the config.json is incomplete; re-save the model with transformers' save_pretrained");
  }
  if (!v->is_number_integer() || v->get<int64_t>() < INT32_MIN || v->get<int64_t>() > INT32_MAX)
    fail_runtime(where_of(path, key) + " must be an integer, found " + v->dump());
  return v->get<int>();
}

int key_int_or(const json& j, const std::string& key, const std::string& path, int fallback) {
  return key_int(j, key, path, &fallback);
}

// A required size: a positive integer.
int key_size(const json& j, const std::string& key, const std::string& path) {
  int v = key_int(j, key, path);
  if (v <= 0) fail_runtime(where_of(path, key) + " must be positive, found " + std::to_string(v));
  return v;
}

float key_float_or(const json& j, const std::string& key, const std::string& path, float fallback) {
  const json* v = key_find(j, key);
  if (!v) return fallback;
  if (!v->is_number()) fail_runtime(where_of(path, key) + " must be a number, found " + v->dump());
  return v->get<float>();
}

bool key_bool_or(const json& j, const std::string& key, const std::string& path, bool fallback) {
  const json* v = key_find(j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail_runtime(where_of(path, key) + " must be true or false, found " + v->dump());
  return v->get<bool>();
}

std::string key_string_or(const json& j, const std::string& key, const std::string& path, const std::string& fallback) {
  const json* v = key_find(j, key);
  if (!v) return fallback;
  if (!v->is_string()) fail_runtime(where_of(path, key) + " must be a string, found " + v->dump());
  return v->get<std::string>();
}

// A token id, or the first of a list (LLaMA 3 lists several eos ids); -1 when absent.
int key_token_id(const json& j, const std::string& key, const std::string& path, int fallback) {
  const json* v = key_find(j, key);
  if (v && v->is_array()) {
    if (v->empty() || !(*v)[0].is_number_integer())
      fail_runtime(where_of(path, key) + " must be an integer or a list of integers, found " + v->dump());
    return (*v)[0].get<int>();
  }
  return key_int_or(j, key, path, fallback);
}

[[noreturn]] void refuse(const std::string& path, const std::string& key, const std::string& found,
                         const std::string& expected) {
  fail_usage(where_of(path, key) + " is " + found + "; only " + expected + " is supported",
             "this architecture variant is not implemented; use a checkpoint without it");
}

ActKind act_parse(const std::string& name, const std::string& path, const std::string& key) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return ActKind::gelu_tanh;
  if (name == "gelu") return ActKind::gelu_erf;
  refuse(path, key, "'" + name + "'", "gelu (erf) or gelu_new / gelu_pytorch_tanh (tanh)");
}

const char* act_name(ActKind a) { return a == ActKind::gelu_erf ? "gelu" : "gelu_new"; }

// Query heads and head size, checked; kv heads must divide the query heads.
void heads_check(ModelConfig& c, const std::string& path) {
  if (c.head_dim == 0) {
    if (c.d_model % c.n_head != 0)
      fail_runtime("config '" + path + "': hidden size " + std::to_string(c.d_model) +
                   " is not divisible by the number of heads " + std::to_string(c.n_head));
    c.head_dim = c.d_model / c.n_head;
  }
  if (c.n_kv_head <= 0 || c.n_head % c.n_kv_head != 0)
    fail_runtime("config '" + path + "': " + std::to_string(c.n_head) + " attention heads are not a multiple of " +
                 std::to_string(c.n_kv_head) + " key/value heads");
}

// The shortest decimal that reads back as the same float, so 1e-5f is written 1e-05, not 9.99999974e-06.
double float_for_json(float f) {
  char buf[32];
  for (int prec = 6; prec <= 9; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, double(f));
    if (std::strtof(buf, nullptr) == f) break;
  }
  return std::strtod(buf, nullptr);
}

}  // namespace config_keys
}  // namespace lora
