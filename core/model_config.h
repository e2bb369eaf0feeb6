// The architecture of a model as data (DESIGN.md section 4): one struct filled from HF config.json by
// one small mapper per family. The model code reads only this struct, never the family name.
#pragma once
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace lora {

enum class NormKind { layernorm, rmsnorm };
enum class PosKind { learned, rotary };
enum class ActKind { gelu_tanh, gelu_erf, swiglu };

struct ModelConfig {
  std::string family;       // "gpt2", "llama", "roberta": for messages and file layouts only
  int n_layer = 0;          // transformer blocks
  int n_head = 0;           // query heads
  int n_kv_head = 0;        // key/value heads (grouped-query attention); == n_head otherwise
  int d_model = 0;          // C
  int d_ff = 0;             // MLP hidden size
  int vocab_size = 0;       // V
  int max_positions = 0;    // longest sequence the position table or rope setting allows
  float norm_eps = 1e-5f;
  NormKind norm = NormKind::layernorm;
  PosKind pos = PosKind::learned;
  ActKind act = ActKind::gelu_tanh;
  float rope_theta = 10000.0f;
  bool bias = true;         // linear layers carry biases
  bool causal = true;       // decoder (causal) or encoder (bidirectional)
  bool tied_head = true;    // LM head shares the token embedding
  bool conv1d_weights = false;  // weights stored (in, out) as GPT-2's Conv1D, not (out, in)
  int eos_token_id = -1;
  int bos_token_id = -1;
  int pad_token_id = -1;
};

// Maps a parsed config.json; `path` is used in error messages. Unknown model_type: lora::Error (usage).
ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& path);
// Reads <model_dir>/config.json.
ModelConfig model_config_load(const std::string& model_dir);
// config.json content for a config (the inverse mapping), for merged and pretrained outputs.
nlohmann::json model_config_to_json(const ModelConfig& c);

}  // namespace lora
