// HF config.json -> ModelConfig, one small mapper per family, and the inverse for the files we write.
// Source of the key names and defaults: transformers' GPT2Config, LlamaConfig, MistralConfig,
// Qwen2Config and RobertaConfig. Keys that fix the architecture's size are required (no silent
// default); the rest take HF's defaults. Settings the model code cannot honour are refused with a
// message naming the key, never ignored. Malformed files are runtime errors (exit 1); a model_type or
// setting we do not support is a usage error (exit 2).
#include "core/formats/model_config.h"

#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"

namespace lora {

using nlohmann::json;

namespace {

const char* kSupported = "gpt2, llama, mistral, qwen2, roberta";

std::string where_of(const std::string& path, const std::string& key) {
  return "config '" + path + "': key '" + key + "'";
}

// A present, non-null key; absent and null mean "use the default".
const json* key_find(const json& j, const std::string& key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int key_int(const json& j, const std::string& key, const std::string& path, const int* fallback = nullptr) {
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

// rope_theta: top-level (transformers 4) or inside rope_parameters (transformers 5). Scaled variants
// (rope_type linear, dynamic, yarn, llama3, ...) change the frequencies and are refused.
float rope_theta_parse(const json& j, const std::string& path) {
  float theta = key_float_or(j, "rope_theta", path, 10000.0f);
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const json* r = key_find(j, key);
    if (!r) continue;
    if (!r->is_object()) fail_runtime(where_of(path, key) + " must be an object, found " + r->dump());
    std::string type = key_string_or(*r, "rope_type", path, key_string_or(*r, "type", path, "default"));
    if (type != "default") refuse(path, std::string(key) + ".rope_type", "'" + type + "'", "'default' (unscaled rotary)");
    theta = key_float_or(*r, "rope_theta", path, theta);
  }
  return theta;
}

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

ModelConfig gpt2_from_json(const json& j, const std::string& path) {
  ModelConfig c;
  c.family = "gpt2";
  c.model_type = "gpt2";
  c.n_layer = key_size(j, "n_layer", path);
  c.n_head = key_size(j, "n_head", path);
  c.n_kv_head = c.n_head;
  c.d_model = key_size(j, "n_embd", path);
  c.d_ff = key_int_or(j, "n_inner", path, 4 * c.d_model);  // null -> 4 * n_embd, as GPT2MLP does
  if (c.d_ff <= 0) fail_runtime(where_of(path, "n_inner") + " must be positive");
  c.vocab_size = key_size(j, "vocab_size", path);
  c.max_positions = key_size(j, "n_positions", path);
  c.norm_eps = key_float_or(j, "layer_norm_epsilon", path, 1e-5f);
  c.norm = NormKind::layernorm;
  c.pos = PosKind::learned;
  c.act = act_parse(key_string_or(j, "activation_function", path, "gelu_new"), path, "activation_function");
  c.bias = c.qkv_bias = c.o_bias = c.mlp_bias = true;
  c.causal = true;
  c.tied_head = key_bool_or(j, "tie_word_embeddings", path, true);
  c.conv1d_weights = true;
  c.bos_token_id = key_token_id(j, "bos_token_id", path, 50256);
  c.eos_token_id = key_token_id(j, "eos_token_id", path, 50256);
  c.pad_token_id = key_token_id(j, "pad_token_id", path, -1);
  if (key_bool_or(j, "scale_attn_by_inverse_layer_idx", path, false))
    refuse(path, "scale_attn_by_inverse_layer_idx", "true", "false");
  if (!key_bool_or(j, "scale_attn_weights", path, true)) refuse(path, "scale_attn_weights", "false", "true");
  heads_check(c, path);
  return c;
}

// config.json's layer_types, checked as transformers' PreTrainedConfig.validate_layer_type checks it for
// every model_type: a list of strings, one per layer. {} when absent or null.
std::vector<std::string> layer_types_read(const json& j, const std::string& path, int n_layer) {
  const json* v = key_find(j, "layer_types");
  if (!v) return {};
  if (!v->is_array())
    fail_runtime(where_of(path, "layer_types") + " must be a list of strings, found " + v->dump());
  if (int64_t(v->size()) != n_layer)
    fail_runtime(where_of(path, "layer_types") + " has " + std::to_string(v->size()) + " entries, expected " +
                     std::to_string(n_layer) + " (one per layer, num_hidden_layers)",
                 "give each layer \"full_attention\" or \"sliding_attention\", or drop the key");
  std::vector<std::string> types;
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_string())
      fail_runtime(where_of(path, "layer_types") + " entry " + std::to_string(i) + " must be a string, found " +
                   (*v)[i].dump());
    types.push_back((*v)[i].get<std::string>());
  }
  return types;
}

// Sliding-window attention, as transformers 5.23 configures it.
// Mistral (MistralConfig, modeling_mistral.py): sliding_window on every layer; null = full attention
//   (Mistral v0.2 on), absent = MistralConfig's default 4096. MistralConfig only warns about a
//   layer_types key and MistralModel never reads it, so we follow transformers: the list is checked as
//   above and otherwise ignored. LLaMA has no window; its layer_types is treated the same way.
// Qwen2 (Qwen2Config.__post_init__, Qwen2Attention, Qwen2Model.forward): sliding_window (default 4096)
//   counts only when use_sliding_window is true (otherwise transformers sets it to null). The sliding
//   layers are those layer_types marks "sliding_attention" ("attention" is transformers' legacy
//   spelling of "full_attention", remap_legacy_layer_types); without layer_types, the layers
//   i >= max_window_layers (default 28) when the window is not null. Refused: other attention kinds
//   (chunked_attention, ...: Qwen2Model builds no mask for them), and a layer marked sliding with no
//   window, on which transformers itself fails (create_sliding_window_causal_mask with a null window).
void window_parse(ModelConfig& c, const json& j, const std::string& path) {
  const std::vector<std::string> types = layer_types_read(j, path, c.n_layer);
  // sliding_window as both config classes read it: absent = their default 4096, null = no window.
  auto window_read = [&]() {
    auto it = j.find("sliding_window");
    if (it == j.end()) return 4096;
    if (it->is_null()) return 0;
    int w = key_int(j, "sliding_window", path);
    if (w <= 0)
      fail_runtime(where_of(path, "sliding_window") + " must be a positive integer or null, found " + std::to_string(w),
                   "the window counts the keys a query sees, itself included; null means full attention");
    return w;
  };
  if (c.model_type == "mistral") c.sliding_window = window_read();
  if (c.model_type != "qwen2") return;
  const bool use = key_bool_or(j, "use_sliding_window", path, false);
  const int max_window_layers = key_int_or(j, "max_window_layers", path, 28);
  c.sliding_window = use ? window_read() : 0;
  c.sliding_layers.assign(size_t(c.n_layer), false);
  for (int i = 0; i < c.n_layer; ++i) {
    if (types.empty()) {
      c.sliding_layers[size_t(i)] = c.sliding_window > 0 && i >= max_window_layers;
      continue;
    }
    const std::string& t = types[size_t(i)];
    if (t != "full_attention" && t != "attention" && t != "sliding_attention")
      fail_usage(where_of(path, "layer_types") + " entry " + std::to_string(i) + " is '" + t +
                     "'; only 'full_attention' and 'sliding_attention' are supported for qwen2",
                 "this attention kind is not implemented; use a checkpoint without it");
    if (t == "sliding_attention" && c.sliding_window == 0)
      fail_runtime(where_of(path, "layer_types") + " marks layer " + std::to_string(i) +
                       " 'sliding_attention' but the config has no window (" +
                       (use ? "sliding_window is null" : "use_sliding_window is false") + ")",
                   "set use_sliding_window to true and sliding_window to the window, or mark the layer "
                   "'full_attention'; transformers cannot run this config either");
    c.sliding_layers[size_t(i)] = t == "sliding_attention";
  }
}

// LLaMA, Mistral and Qwen2 share one layout: RMSNorm, rotary positions, SwiGLU, grouped K/V heads.
ModelConfig llama_from_json(const json& j, const std::string& path, const std::string& type) {
  ModelConfig c;
  c.family = "llama";
  c.model_type = type;
  c.n_layer = key_size(j, "num_hidden_layers", path);
  c.n_head = key_size(j, "num_attention_heads", path);
  c.n_kv_head = key_int_or(j, "num_key_value_heads", path, c.n_head);
  c.d_model = key_size(j, "hidden_size", path);
  c.d_ff = key_size(j, "intermediate_size", path);
  c.head_dim = key_int_or(j, "head_dim", path, 0);
  if (c.head_dim < 0) fail_runtime(where_of(path, "head_dim") + " must be positive");
  c.vocab_size = key_size(j, "vocab_size", path);
  c.max_positions = key_size(j, "max_position_embeddings", path);
  c.norm_eps = key_float_or(j, "rms_norm_eps", path, 1e-6f);
  c.norm = NormKind::rmsnorm;
  c.pos = PosKind::rotary;
  c.rope_theta = rope_theta_parse(j, path);
  std::string act = key_string_or(j, "hidden_act", path, "silu");
  if (act != "silu") refuse(path, "hidden_act", "'" + act + "'", "silu (SwiGLU)");
  c.act = ActKind::swiglu;
  c.bias = false;
  if (type == "qwen2") {
    c.qkv_bias = true;  // Qwen2Attention: q/k/v Linear with bias=True, o_proj without
    c.o_bias = c.mlp_bias = false;
  } else {
    c.qkv_bias = c.o_bias = key_bool_or(j, "attention_bias", path, false);
    c.mlp_bias = key_bool_or(j, "mlp_bias", path, false);
  }
  window_parse(c, j, path);
  c.causal = true;
  c.tied_head = key_bool_or(j, "tie_word_embeddings", path, false);
  c.conv1d_weights = false;
  c.bos_token_id = key_token_id(j, "bos_token_id", path, -1);
  c.eos_token_id = key_token_id(j, "eos_token_id", path, -1);
  c.pad_token_id = key_token_id(j, "pad_token_id", path, -1);
  heads_check(c, path);
  return c;
}

ModelConfig roberta_from_json(const json& j, const std::string& path) {
  ModelConfig c;
  c.family = "roberta";
  c.model_type = "roberta";
  c.n_layer = key_size(j, "num_hidden_layers", path);
  c.n_head = key_size(j, "num_attention_heads", path);
  c.n_kv_head = c.n_head;
  c.d_model = key_size(j, "hidden_size", path);
  c.d_ff = key_size(j, "intermediate_size", path);
  c.vocab_size = key_size(j, "vocab_size", path);
  c.norm_eps = key_float_or(j, "layer_norm_eps", path, 1e-12f);
  c.norm = NormKind::layernorm;
  c.post_norm = true;
  c.pos = PosKind::learned;
  c.act = act_parse(key_string_or(j, "hidden_act", path, "gelu"), path, "hidden_act");
  c.bias = c.qkv_bias = c.o_bias = c.mlp_bias = true;
  c.causal = false;
  c.tied_head = key_bool_or(j, "tie_word_embeddings", path, true);
  c.conv1d_weights = false;
  c.type_vocab_size = key_int_or(j, "type_vocab_size", path, 2);
  if (c.type_vocab_size <= 0) fail_runtime(where_of(path, "type_vocab_size") + " must be positive");
  // The sequence-classification head (RobertaForSequenceClassification): num_labels from the key itself
  // or the size of id2label (PretrainedConfig's default 2); problem_type as HF picks it from num_labels.
  c.head = HeadKind::classifier;
  const json* id2label = key_find(j, "id2label");
  if (id2label && !id2label->is_object())
    fail_runtime(where_of(path, "id2label") + " must be an object, found " + id2label->dump());
  c.num_labels = key_int_or(j, "num_labels", path, id2label ? int(id2label->size()) : 2);
  if (c.num_labels <= 0) fail_runtime(where_of(path, "num_labels") + " must be positive");
  std::string problem = key_string_or(j, "problem_type", path, c.num_labels == 1 ? "regression" : "single_label_classification");
  if (problem == "multi_label_classification")
    refuse(path, "problem_type", "'multi_label_classification'", "single-label classification or regression");
  if ((problem == "regression") != (c.num_labels == 1))
    refuse(path, "problem_type", "'" + problem + "' with " + std::to_string(c.num_labels) + " labels",
           "regression with 1 label or single_label_classification with 2 or more");
  c.head_dropout = key_float_or(j, "classifier_dropout", path, key_float_or(j, "hidden_dropout_prob", path, 0.1f));
  if (!(c.head_dropout >= 0 && c.head_dropout < 1))
    fail_runtime(where_of(path, "classifier_dropout") + " must be in [0, 1), found " + std::to_string(c.head_dropout));
  c.init_std = key_float_or(j, "initializer_range", path, 0.02f);
  c.bos_token_id = key_token_id(j, "bos_token_id", path, 0);
  c.eos_token_id = key_token_id(j, "eos_token_id", path, 2);
  c.pad_token_id = key_token_id(j, "pad_token_id", path, 1);
  // RobertaEmbeddings numbers positions from padding_idx + 1, so the table has that many extra rows.
  c.position_offset = c.pad_token_id + 1;
  int table = key_size(j, "max_position_embeddings", path);
  c.max_positions = table - c.position_offset;
  if (c.pad_token_id < 0 || c.max_positions <= 0)
    fail_runtime("config '" + path + "': max_position_embeddings " + std::to_string(table) +
                 " leaves no positions after the padding offset " + std::to_string(c.position_offset));
  std::string pos = key_string_or(j, "position_embedding_type", path, "absolute");
  if (pos != "absolute") refuse(path, "position_embedding_type", "'" + pos + "'", "'absolute'");
  if (key_bool_or(j, "is_decoder", path, false)) refuse(path, "is_decoder", "true", "false");
  if (key_bool_or(j, "add_cross_attention", path, false)) refuse(path, "add_cross_attention", "true", "false");
  heads_check(c, path);
  return c;
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

}  // namespace

ModelConfig model_config_from_json(const json& j, const std::string& path) {
  if (!j.is_object())
    fail_runtime("config '" + path + "' is " + std::string(j.type_name()) + ", expected a JSON object");
  const json* mt = key_find(j, "model_type");
  if (!mt)
    fail_runtime("config '" + path + "': key 'model_type' is missing",
                 std::string("add \"model_type\" (one of ") + kSupported + "), or re-save with save_pretrained");
  if (!mt->is_string()) fail_runtime(where_of(path, "model_type") + " must be a string, found " + mt->dump());
  std::string type = mt->get<std::string>();
  if (type == "gpt2") return gpt2_from_json(j, path);
  if (type == "llama" || type == "mistral" || type == "qwen2") return llama_from_json(j, path, type);
  if (type == "roberta") return roberta_from_json(j, path);
  fail_usage("config '" + path + "': model_type '" + type + "' is not supported (supported: " + kSupported + ")",
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
  if (c.family == "gpt2") {
    j["model_type"] = "gpt2";
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_layer"] = c.n_layer;
    j["n_head"] = c.n_head;
    j["n_embd"] = c.d_model;
    j["n_inner"] = c.d_ff;
    j["vocab_size"] = c.vocab_size;
    j["n_positions"] = c.max_positions;
    j["n_ctx"] = c.max_positions;
    j["layer_norm_epsilon"] = float_for_json(c.norm_eps);
    j["activation_function"] = act_name(c.act);
    j["tie_word_embeddings"] = c.tied_head;
  } else if (c.family == "llama") {
    std::string type = c.model_type.empty() ? "llama" : c.model_type;
    j["model_type"] = type;
    j["architectures"] = {type == "mistral" ? "MistralForCausalLM"
                          : type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
    j["num_hidden_layers"] = c.n_layer;
    j["num_attention_heads"] = c.n_head;
    j["num_key_value_heads"] = c.n_kv_head;
    j["hidden_size"] = c.d_model;
    j["intermediate_size"] = c.d_ff;
    if (c.head_dim && c.head_dim * c.n_head != c.d_model) j["head_dim"] = c.head_dim;
    j["vocab_size"] = c.vocab_size;
    j["max_position_embeddings"] = c.max_positions;
    j["rms_norm_eps"] = float_for_json(c.norm_eps);
    j["rope_theta"] = float_for_json(c.rope_theta);
    j["hidden_act"] = "silu";
    j["tie_word_embeddings"] = c.tied_head;
    if (type == "llama") {
      j["attention_bias"] = c.qkv_bias;
      j["mlp_bias"] = c.mlp_bias;
    }
    if (type == "mistral") j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    if (type == "qwen2" && c.sliding_window > 0) {
      // As Qwen2Config saves them: layer_types names every layer's kind; max_window_layers (which older
      // readers use instead) is written where it says the same, i.e. the sliding layers are i >= it.
      j["use_sliding_window"] = true;
      j["sliding_window"] = c.sliding_window;
      json types = json::array();
      int first = c.n_layer;
      bool suffix = true;
      for (int l = 0; l < c.n_layer; ++l) {
        const bool sliding = c.window_of(l) > 0;
        types.push_back(sliding ? "sliding_attention" : "full_attention");
        if (sliding) first = std::min(first, l);
        else if (first < l) suffix = false;
      }
      j["layer_types"] = types;
      if (suffix) j["max_window_layers"] = first;
    }
  } else if (c.family == "roberta") {
    j["model_type"] = "roberta";
    j["architectures"] = {"RobertaForSequenceClassification"};
    j["num_hidden_layers"] = c.n_layer;
    j["num_attention_heads"] = c.n_head;
    j["hidden_size"] = c.d_model;
    j["intermediate_size"] = c.d_ff;
    j["vocab_size"] = c.vocab_size;
    j["max_position_embeddings"] = c.max_positions + c.position_offset;
    j["type_vocab_size"] = c.type_vocab_size;
    j["layer_norm_eps"] = float_for_json(c.norm_eps);
    j["hidden_act"] = act_name(c.act);
    j["position_embedding_type"] = "absolute";
    j["tie_word_embeddings"] = c.tied_head;
    json id2label = json::object(), label2id = json::object();
    for (int i = 0; i < c.num_labels; ++i) {
      id2label[std::to_string(i)] = "LABEL_" + std::to_string(i);
      label2id["LABEL_" + std::to_string(i)] = i;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
    j["problem_type"] = c.num_labels == 1 ? "regression" : "single_label_classification";
    j["classifier_dropout"] = float_for_json(c.head_dropout);
    j["initializer_range"] = float_for_json(c.init_std);
  } else {
    throw std::logic_error("model_config_to_json: unknown family '" + c.family + "'");
  }
  put_id("bos_token_id", c.bos_token_id);
  put_id("eos_token_id", c.eos_token_id);
  put_id("pad_token_id", c.pad_token_id);
  return j;
}

}  // namespace lora
