// The GPT-2 family (model_type gpt2): transformers' GPT2Config and GPT2LMHeadModel. Conv1D weights
// stored (in, out), q, k and v fused in c_attn, blocks under "transformer.h.N.". Sources: transformers'
// configuration_gpt2.py and modeling_gpt2.py; PEFT's fan_in_fan_out; llama.cpp's convert_lora_to_gguf.py
// and gguf-py's tensor map for the GGUF names.
#include <map>
#include <regex>

#include "core/base/error.h"
#include "core/formats/config_keys.h"
#include "core/formats/family.h"

namespace lora {

using namespace config_keys;

namespace {

ModelConfig from_json(const json& j, const std::string& path, const std::string& /*model_type*/) {
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

void to_json(const ModelConfig& c, json& j) {
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
}

BlockNames block_names(const ModelConfig&, int layer) {
  const std::string p = "h." + std::to_string(layer) + ".";
  BlockNames n;
  n.ln1 = p + "ln_1";
  n.ln2 = p + "ln_2";
  n.linear[int(LinearSlot::qkv)] = p + "attn.c_attn";
  n.linear[int(LinearSlot::attn_out)] = p + "attn.c_proj";
  n.linear[int(LinearSlot::fc)] = p + "mlp.c_fc";
  n.linear[int(LinearSlot::fc_out)] = p + "mlp.c_proj";
  return n;
}

// Roles place adapters on column blocks of the fused c_attn (q, k, v: [0,C), [C,2C), [2C,3C)); the bare
// "c_proj" is both projections of that name, as PEFT's suffix match takes it.
std::vector<TargetAlias> targets(const ModelConfig&) {
  using S = LinearSlot;
  return {{"q", S::qkv, "q", 0, 1},          {"query", S::qkv, "q", 0, 1},   {"k", S::qkv, "k", 1, 1},
          {"key", S::qkv, "k", 1, 1},        {"v", S::qkv, "v", 2, 1},       {"value", S::qkv, "v", 2, 1},
          {"c_attn", S::qkv, "qkv"},         {"qkv", S::qkv, "qkv"},         {"o", S::attn_out, "o"},
          {"attn.c_proj", S::attn_out, "o"}, {"up", S::fc, "up"},            {"fc", S::fc, "up"},
          {"c_fc", S::fc, "up"},             {"mlp.c_fc", S::fc, "up"},      {"down", S::fc_out, "down"},
          {"mlp.c_proj", S::fc_out, "down"}, {"c_proj", S::attn_out, "o"},   {"c_proj", S::fc_out, "down"}};
}

std::string gguf_arch(const ModelConfig&) { return "gpt2"; }

std::string gguf_tensor(const std::string& module) {
  static const std::regex re(R"(^(?:transformer\.)?h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$)");
  static const std::map<std::string, std::string> kind = {
      {"attn.c_attn", "attn_qkv"}, {"attn.c_proj", "attn_output"}, {"mlp.c_fc", "ffn_up"}, {"mlp.c_proj", "ffn_down"}};
  std::smatch m;
  if (!std::regex_match(module, m, re)) return "";
  return "blk." + std::string(m[1]) + "." + kind.at(m[2]) + ".weight";
}

}  // namespace

const Family& family_gpt2() {
  static const Family f = [] {
    Family f;
    f.name = "gpt2";
    f.model_types = {"gpt2"};
    f.from_json = from_json;
    f.to_json = to_json;
    f.prefix = "transformer.";
    f.auto_class = "AutoModelForCausalLM";
    f.embed_tokens = "wte.weight";
    f.embed_positions = "wpe.weight";
    f.embed_types = "";
    f.final_norm = "ln_f";
    f.embed_norm = "";
    f.block_names = block_names;
    f.module_pattern = R"(^(transformer\.)?h\.\d+\.(attn|mlp)\..+)";
    f.unsaved_suffixes = {".attn.bias", ".attn.masked_bias"};  // GPT2Attention's causal-mask buffers
    f.targets = targets;
    f.targets_hint = "use roles q k v o up down, or GPT-2 module names c_attn c_proj c_fc attn.c_proj mlp.c_proj";
    f.peft_layers_pattern = "h";
    f.peft_task_type = "CAUSAL_LM";
    f.peft_fan_in_fan_out = true;  // Conv1D: PEFT sets it for GPT-2 whatever is written
    f.gguf_archs = {{"gpt2", false}};
    f.gguf_arch = gguf_arch;
    f.gguf_tensor = gguf_tensor;
    return f;
  }();
  return f;
}

}  // namespace lora
