// The LLaMA family: model_type llama, mistral and qwen2 (transformers' LlamaConfig, MistralConfig,
// Qwen2Config and their *ForCausalLM), one tensor layout: RMSNorm, rotary positions, SwiGLU, separate
// q/k/v projections with grouped K/V heads, blocks under "model.layers.N.". Qwen2 differs in its biases
// (q, k, v only) and its sliding-window layers, Mistral in its window; llama.cpp names the Qwen2 graph
// qwen2 and converts the others to llama. Sources: transformers' configuration_*.py and modeling_*.py
// for these model types; llama.cpp's convert_hf_to_gguf.py and gguf-py's tensor map.
#include <algorithm>
#include <map>
#include <regex>

#include "core/base/error.h"
#include "core/formats/config_keys.h"
#include "core/formats/family.h"

namespace lora {

using namespace config_keys;

namespace {

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
ModelConfig from_json(const json& j, const std::string& path, const std::string& type) {
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

void to_json(const ModelConfig& c, json& j) {
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
}

BlockNames block_names(const ModelConfig& c, int layer) {
  const std::string p = "layers." + std::to_string(layer) + ".";
  BlockNames n;
  n.ln1 = p + "input_layernorm";
  n.ln2 = p + "post_attention_layernorm";
  n.linear[int(LinearSlot::q)] = p + "self_attn.q_proj";
  n.linear[int(LinearSlot::k)] = p + "self_attn.k_proj";
  n.linear[int(LinearSlot::v)] = p + "self_attn.v_proj";
  n.linear[int(LinearSlot::attn_out)] = p + "self_attn.o_proj";
  if (c.act == ActKind::swiglu) {
    n.linear[int(LinearSlot::gate)] = p + "mlp.gate_proj";
    n.linear[int(LinearSlot::fc)] = p + "mlp.up_proj";
    n.linear[int(LinearSlot::fc_out)] = p + "mlp.down_proj";
  } else {
    n.linear[int(LinearSlot::fc)] = p + "mlp.fc1";
    n.linear[int(LinearSlot::fc_out)] = p + "mlp.fc2";
  }
  return n;
}

std::vector<TargetAlias> targets(const ModelConfig& c) {
  using S = LinearSlot;
  std::vector<TargetAlias> t = {{"q", S::q, "q"},     {"query", S::q, "q"}, {"q_proj", S::q, "q"},
                                {"k", S::k, "k"},     {"key", S::k, "k"},   {"k_proj", S::k, "k"},
                                {"v", S::v, "v"},     {"value", S::v, "v"}, {"v_proj", S::v, "v"},
                                {"o", S::attn_out, "o"}, {"o_proj", S::attn_out, "o"}};
  if (c.act == ActKind::swiglu) {
    t.insert(t.end(), {{"gate", S::gate, "gate"}, {"gate_proj", S::gate, "gate"}, {"up", S::fc, "up"},
                       {"up_proj", S::fc, "up"}, {"down", S::fc_out, "down"}, {"down_proj", S::fc_out, "down"}});
  } else {
    t.insert(t.end(), {{"up", S::fc, "up"}, {"down", S::fc_out, "down"}});
  }
  return t;
}

// llama.cpp converts Mistral checkpoints to its llama arch (convert_hf_to_gguf.py), Qwen2 to qwen2.
std::string gguf_arch(const ModelConfig& c) {
  if (c.model_type == "qwen2") return "qwen2";
  if (c.model_type.empty() || c.model_type == "llama" || c.model_type == "mistral") return "llama";
  return "";
}

std::string gguf_tensor(const std::string& module) {
  static const std::regex re(R"(^(?:model\.)?layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)$)");
  static const std::map<std::string, std::string> kind = {
      {"self_attn.q_proj", "attn_q"},   {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"}};
  std::smatch m;
  if (!std::regex_match(module, m, re)) return "";
  return "blk." + std::string(m[1]) + "." + kind.at(m[2]) + ".weight";
}

}  // namespace

const Family& family_llama() {
  static const Family f = [] {
    Family f;
    f.name = "llama";
    f.model_types = {"llama", "mistral", "qwen2"};
    f.from_json = from_json;
    f.to_json = to_json;
    f.prefix = "model.";
    f.auto_class = "AutoModelForCausalLM";
    f.embed_tokens = "embed_tokens.weight";
    f.embed_positions = "";
    f.embed_types = "";
    f.final_norm = "norm";
    f.embed_norm = "";
    f.block_names = block_names;
    f.module_pattern = R"(^(model\.)?layers\.\d+\.(self_attn|mlp)\..+)";
    f.unsaved_suffixes = {};
    f.targets = targets;
    f.targets_hint = "use roles q k v o gate up down, or module names q_proj k_proj v_proj o_proj gate_proj up_proj down_proj";
    f.peft_layers_pattern = "layers";
    f.peft_task_type = "CAUSAL_LM";
    f.peft_fan_in_fan_out = false;
    f.gguf_archs = {{"llama", true}, {"qwen2", false}};  // llama.cpp permutes q/k rows for llama only
    f.gguf_arch = gguf_arch;
    f.gguf_tensor = gguf_tensor;
    return f;
  }();
  return f;
}

}  // namespace lora
