// The architecture of a model as data: one struct filled from HF config.json by
// one small mapper per family (core/formats/family.h). The model code reads only this struct and asks
// the family for names, never comparing family names.
// Supported model_type values: gpt2; llama, mistral, qwen2 (one family: same tensor layout);
// roberta. Settings we cannot honour (rope_scaling, other activations, ...) are refused, never ignored.
// Sliding-window attention: Mistral's applies to every layer, Qwen2's to the layers its layer_types
// (or max_window_layers) marks sliding; the model asks window_of(layer) either way.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lora {

enum class NormKind { layernorm, rmsnorm };
enum class PosKind { learned, rotary };
enum class ActKind { gelu_tanh, gelu_erf, swiglu };
// lm: next-token logits from the LM head (decoders). classifier: HF RobertaClassificationHead on the
// first token (<s>): dense (C,C), tanh, out_proj (num_labels,C); num_labels 1 is regression (MSE).
enum class HeadKind { lm, classifier };

struct ModelConfig {
  std::string family;       // Family::name (family.h): for messages and the family's file layouts only
  std::string model_type;   // HF model_type as read ("mistral", "qwen2", ...); written back by to_json
  int n_layer = 0;          // transformer blocks
  int n_head = 0;           // query heads
  int n_kv_head = 0;        // key/value heads (grouped-query attention); == n_head otherwise
  int d_model = 0;          // C
  int d_ff = 0;             // MLP hidden size
  int head_dim = 0;         // HS; d_model / n_head unless config.json says otherwise (some LLaMA-family)
  int vocab_size = 0;       // V
  int max_positions = 0;    // longest sequence the position table or rope setting allows
  float norm_eps = 1e-5f;
  NormKind norm = NormKind::layernorm;
  PosKind pos = PosKind::learned;
  ActKind act = ActKind::gelu_tanh;
  float rope_theta = 10000.0f;
  bool bias = true;         // every linear layer carries a bias (then the three flags below are true)
  bool qkv_bias = true;     // q, k, v projections carry biases (Qwen2 and LLaMA attention_bias: only these)
  bool o_bias = true;       // attention output projection carries a bias
  bool mlp_bias = true;     // MLP projections carry biases
  bool post_norm = false;   // norm after each residual add (BERT/RoBERTa), not before each sub-layer
  int position_offset = 0;  // learned positions start at this row (RoBERTa: pad_token_id + 1)
  int type_vocab_size = 0;  // token-type embedding rows (RoBERTa); 0 = none
  int sliding_window = 0;   // attention window W: query i sees keys i-W+1..i; 0 = full attention everywhere
  std::vector<bool> sliding_layers;  // (n_layer) the layers that use the window (Qwen2's layer_types);
                                     // empty = every layer (Mistral)
  bool causal = true;       // decoder (causal) or encoder (bidirectional)
  bool tied_head = true;    // LM head shares the token embedding
  bool conv1d_weights = false;  // weights stored (in, out) as GPT-2's Conv1D, not (out, in)
  HeadKind head = HeadKind::lm;
  int num_labels = 0;       // classifier outputs (config.json num_labels or id2label; 1 = regression)
  float head_dropout = 0;   // classifier dropout (classifier_dropout, else hidden_dropout_prob)
  float init_std = 0.02f;   // initializer_range: std of a classifier head initialised from scratch
  int eos_token_id = -1;
  int bos_token_id = -1;
  int pad_token_id = -1;

  // The attention window of block `layer` (AttentionShape::window): sliding_window on a sliding layer,
  // 0 (full attention) on the others.
  int window_of(int layer) const {
    return sliding_layers.empty() || sliding_layers[size_t(layer)] ? sliding_window : 0;
  }
  bool has_window() const {  // some layer attends through a window
    for (int l = 0; l < n_layer; ++l)
      if (window_of(l) > 0) return true;
    return false;
  }
};

// Maps a parsed config.json; `path` is used in error messages. Unknown model_type: lora::Error (usage).
ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& path);
// Reads <model_dir>/config.json.
ModelConfig model_config_load(const std::string& model_dir);
// config.json content for a config (the inverse mapping), for merged and pretrained outputs.
nlohmann::json model_config_to_json(const ModelConfig& c);

}  // namespace lora
