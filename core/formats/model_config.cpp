// HF config.json -> ModelConfig and back: model_type picks the family, whose mapper
// (core/formats/family_<name>.cpp) reads the keys. Malformed files are runtime errors (exit 1); a
// model_type or setting we do not support is a usage error (exit 2).
#include "core/formats/model_config.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/formats/config_keys.h"
#include "core/formats/family.h"

namespace lora {

using nlohmann::json;
using config_keys::key_find;
using config_keys::where_of;

namespace {

// "gpt2, llama, mistral, qwen2, roberta": every model_type a family reads.
std::string supported_types() {
  std::string out;
  for (const Family* f : families())
    for (const auto& t : f->model_types) out += (out.empty() ? "" : ", ") + t;
  return out;
}

}  // namespace

ModelConfig model_config_from_json(const json& j, const std::string& path) {
  if (!j.is_object())
    fail_runtime("config '" + path + "' is " + std::string(j.type_name()) + ", expected a JSON object");
  const json* mt = key_find(j, "model_type");
  if (!mt)
    fail_runtime("config '" + path + "': key 'model_type' is missing",
                 "add \"model_type\" (one of " + supported_types() + "), or re-save with save_pretrained");
  if (!mt->is_string()) fail_runtime(where_of(path, "model_type") + " must be a string, found " + mt->dump());
  std::string type = mt->get<std::string>();
  if (const Family* f = family_for_model_type(type)) return f->from_json(j, path, type);
  fail_usage("config '" + path + "': model_type '" + type + "' is not supported (supported: " + supported_types() + ")",
             "use a checkpoint of a supported family");
}

ModelConfig model_config_load(const std::string& model_dir) {
  struct stat st{};
  if (stat(model_dir.c_str(), &st) != 0)
    fail_runtime("model directory '" + model_dir + "' does not exist",
                 "point model.path at a HF checkpoint directory (config.json + model.safetensors)");
  if (!S_ISDIR(st.st_mode))
    fail_runtime("model path '" + model_dir + "' is not a directory",
                 "point model.path at the directory holding config.json, not at a file");
  std::string path = model_dir + "/config.json";
  if (stat(path.c_str(), &st) != 0)
    fail_runtime("model directory '" + model_dir + "' has no config.json",
                 "a HF checkpoint directory holds config.json next to the weights; save it with save_pretrained");
  return model_config_from_json(json_parse_strict(file_read(path), "'" + path + "'"), path);
}

json model_config_to_json(const ModelConfig& c) {
  json j;
  auto put_id = [&](const char* key, int id) { if (id >= 0) j[key] = id; };
  family_of(c).to_json(c, j);
  put_id("bos_token_id", c.bos_token_id);
  put_id("eos_token_id", c.eos_token_id);
  put_id("pad_token_id", c.pad_token_id);
  return j;
}

}  // namespace lora
