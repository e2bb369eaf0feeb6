// The RoBERTa family (model_type roberta): transformers' RobertaConfig and
// RobertaForSequenceClassification. A post-norm encoder with BERT's module names under
// "roberta.encoder.layer.N.", learned positions numbered from padding_idx + 1, token-type embeddings and
// the sequence-classification head (classifier.dense, classifier.out_proj). llama.cpp has no LoRA
// architecture for it. Sources: transformers' configuration_roberta.py and modeling_roberta.py.
#include "core/base/error.h"
#include "core/formats/config_keys.h"
#include "core/formats/family.h"

namespace lora {

using namespace config_keys;

namespace {

ModelConfig from_json(const json& j, const std::string& path, const std::string& /*model_type*/) {
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

void to_json(const ModelConfig& c, json& j) {
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
}

// Post-norm: ln1 is attention.output.LayerNorm (after the attention's residual add), ln2 is
// output.LayerNorm (after the MLP's).
BlockNames block_names(const ModelConfig&, int layer) {
  const std::string p = "encoder.layer." + std::to_string(layer) + ".";
  BlockNames n;
  n.ln1 = p + "attention.output.LayerNorm";
  n.ln2 = p + "output.LayerNorm";
  n.linear[int(LinearSlot::q)] = p + "attention.self.query";
  n.linear[int(LinearSlot::k)] = p + "attention.self.key";
  n.linear[int(LinearSlot::v)] = p + "attention.self.value";
  n.linear[int(LinearSlot::attn_out)] = p + "attention.output.dense";
  n.linear[int(LinearSlot::fc)] = p + "intermediate.dense";
  n.linear[int(LinearSlot::fc_out)] = p + "output.dense";
  return n;
}

// The roles, BERT's module names for q, k and v, and the LLaMA spellings accepted with them. The three
// "dense" layers are reached by role (o, up, down): as a name, "dense" would match all three.
std::vector<TargetAlias> targets(const ModelConfig&) {
  using S = LinearSlot;
  return {{"q", S::q, "q"},       {"query", S::q, "q"},    {"q_proj", S::q, "q"},         {"k", S::k, "k"},
          {"key", S::k, "k"},     {"k_proj", S::k, "k"},   {"v", S::v, "v"},              {"value", S::v, "v"},
          {"v_proj", S::v, "v"},  {"o", S::attn_out, "o"}, {"o_proj", S::attn_out, "o"}, {"up", S::fc, "up"},
          {"down", S::fc_out, "down"}};
}

std::string gguf_arch(const ModelConfig&) { return ""; }
std::string gguf_tensor(const std::string&) { return ""; }

}  // namespace

const Family& family_roberta() {
  static const Family f = [] {
    Family f;
    f.name = "roberta";
    f.model_types = {"roberta"};
    f.from_json = from_json;
    f.to_json = to_json;
    f.prefix = "roberta.";
    f.auto_class = "AutoModelForMaskedLM";  // roberta-base is published as RobertaForMaskedLM
    f.embed_tokens = "embeddings.word_embeddings.weight";
    f.embed_positions = "embeddings.position_embeddings.weight";
    f.embed_types = "embeddings.token_type_embeddings.weight";
    f.final_norm = "";
    f.embed_norm = "embeddings.LayerNorm";
    f.block_names = block_names;
    f.module_pattern = R"(^(roberta\.)?encoder\.layer\.\d+\..+)";
    f.unsaved_suffixes = {};
    f.targets = targets;
    f.targets_hint = "use roles q k v o up down, or module names query key value";
    f.peft_layers_pattern = "layer";
    f.peft_task_type = "SEQ_CLS";
    f.peft_fan_in_fan_out = false;
    f.gguf_archs = {};
    f.gguf_arch = gguf_arch;
    f.gguf_tensor = gguf_tensor;
    return f;
  }();
  return f;
}

}  // namespace lora
