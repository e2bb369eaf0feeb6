// A model family: everything that differs between the HF checkpoints of one architecture besides the
// arithmetic (which ModelConfig's fields describe): config.json's keys both ways, the tensor names, the
// names lora.targets accepts, PEFT's and llama.cpp's conventions. One file per family holds its Family
// (core/formats/family_<name>.cpp) and families() lists them; every other file asks the family by
// feature (family_of(cfg).prefix, ...) and never compares family names.
// A new family: docs/ARCHITECTURE.md, "A new model family".
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/formats/model_config.h"

namespace lora {

// The linear layers a block may hold, numbered as Block::slot numbers them (core/model/model.h).
enum class LinearSlot { qkv, attn_out, fc, fc_out, q, k, v, gate };
constexpr int kLinearSlots = 8;

// The HF names of one block's tensors, without the checkpoint prefix and without ".weight"/".bias";
// "" for a linear layer the block does not have.
struct BlockNames {
  std::string ln1, ln2;              // the norm before attention and before the MLP (after, when post-norm)
  std::string linear[kLinearSlots];  // by LinearSlot
};

// One name lora.targets accepts, and the adapter it places (a name may place several: GPT-2's c_proj).
struct TargetAlias {
  const char* name;     // "q", "q_proj", "c_attn", ...
  LinearSlot slot;
  const char* role;     // the adapter's role, kept in training state ("q", "qkv", "o", ...)
  int col_block = 0;    // first output column, in units of d_model (q, k, v inside a fused qkv)
  int ncol_blocks = 0;  // output columns in units of d_model; 0: the whole layer
};

// A llama.cpp architecture a family exports LoRA files to.
struct GgufArch {
  const char* name;     // general.architecture
  bool rotary_permute;  // llama.cpp stores q and k rows interleaved per rotary pair (gguf_rotary_permute_rows)
};

struct Family {
  const char* name;                      // ModelConfig::family
  std::vector<std::string> model_types;  // the config.json model_type values this family reads
  // config.json -> ModelConfig (the mapper; `path` for messages), and the family's keys of the inverse
  // (model_config_to_json adds the token ids).
  ModelConfig (*from_json)(const nlohmann::json& j, const std::string& path, const std::string& model_type);
  void (*to_json)(const ModelConfig& c, nlohmann::json& j);

  // ---- the checkpoint ----
  const char* prefix;      // tensor-name prefix of the base model in HF checkpoints ("transformer.")
  const char* auto_class;  // transformers Auto class that loads the checkpoint (named in hints)
  const char* embed_tokens, *embed_positions, *embed_types;  // embedding tables ("" when none)
  const char* final_norm;  // the norm after the last block (pre-norm models)
  const char* embed_norm;  // the norm after the embeddings (post-norm models)
  BlockNames (*block_names)(const ModelConfig& c, int layer);
  const char* module_pattern;  // regular expression a block's module name matches, prefixed or not
  std::vector<std::string> unsaved_suffixes;  // buffers save_pretrained leaves out (names ending so)

  // ---- LoRA, PEFT ----
  std::vector<TargetAlias> (*targets)(const ModelConfig& c);
  const char* targets_hint;         // the hint when lora.targets names something else
  const char* peft_layers_pattern;  // PEFT's layers_pattern: the module list holding the blocks
  const char* peft_task_type;       // PEFT's task_type for an adapter of this family
  bool peft_fan_in_fan_out;         // PEFT sets fan_in_fan_out for this family whatever is written

  // ---- GGUF (llama.cpp) ----
  std::vector<GgufArch> gguf_archs;              // the architectures its LoRA files may name; {} = none
  std::string (*gguf_arch)(const ModelConfig& c);  // the one for a base model; "" = none
  std::string (*gguf_tensor)(const std::string& module);  // llama.cpp name of an adapted module, "" = none
};

// Every family, in the order messages list them.
const std::vector<const Family*>& families();
// The family named `name` (ModelConfig::family), or nullptr.
const Family* family_find(const std::string& name);
// The family of a config; std::logic_error when it names none (configs come from model_config_from_json).
const Family& family_of(const ModelConfig& c);
// The family reading config.json's model_type `type`, or nullptr.
const Family* family_for_model_type(const std::string& type);
// The family exporting to llama.cpp architecture `arch` and that architecture, or nullptrs.
const Family* family_for_gguf_arch(const std::string& arch, const GgufArch** found = nullptr);
// "a, b and c".
std::string names_and(const std::vector<std::string>& names);

// The families (defined one per file, family_<name>.cpp).
const Family& family_gpt2();
const Family& family_llama();
const Family& family_roberta();

}  // namespace lora
