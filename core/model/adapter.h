// LoRA adapters on disk in HuggingFace PEFT's layout, so PEFT loads ours unchanged
// and we load PEFT's: adapter_config.json + adapter_model.safetensors with tensor names
// "base_model.model.transformer.h.N.attn.c_attn.lora_A.weight" (r, in) and "...lora_B.weight" (out, r).
//
// Several adapters on one fused layer (q and v inside GPT-2's c_attn) are written as one exactly
// equivalent block-structured adapter: A' = [A_q; A_v] (2r, in) and B' (3C, 2r) holding B_q in rows
// [0,C) x columns [0,r) and B_v in rows [2C,3C) x columns [r,2r), zero elsewhere. PEFT reads its rank
// from rank_pattern and its alpha from alpha_pattern, chosen so that alpha'/r' (or alpha'/sqrt(r') with
// rsLoRA) equals our alpha/r: B' A' x then equals the sum of the separate updates.
//
// A classification head (RoBERTa) trains in full and is saved as PEFT saves modules_to_save:
// "base_model.model.classifier.dense.weight", ".dense.bias", ".out_proj.weight", ".out_proj.bias", with
// "modules_to_save": ["classifier"] and "task_type": "SEQ_CLS" in adapter_config.json.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/tensor.h"
#include "core/model/model.h"

namespace lora {

// One adapted module. A and B are host f32 copies in PEFT's orientation.
struct AdapterModule {
  std::string module;  // as the keys name it after "base_model.model.": "transformer.h.0.attn.c_attn"
  std::string key_a, key_b;  // the safetensors keys read (for messages)
  Tensor a, b;         // A (r, in), B (out, r)
  int r = 0;           // from adapter_config.json (r, rank_pattern); equals the tensors' rank
  float alpha = 0;     // lora_alpha, or alpha_pattern's value for this module
  float scale = 0;     // alpha / r, or alpha / sqrt(r) with use_rslora
};

struct AdapterFile {
  std::string dir, config_path, weights_path;
  nlohmann::json config;   // adapter_config.json as read
  std::string base_name;   // base_model_name_or_path ("" when absent)
  int r = 8;               // the config's default rank and alpha (PEFT's defaults when absent)
  float alpha = 8;
  bool rslora = false;
  std::vector<AdapterModule> modules;  // in file order
  // The classification head saved as modules_to_save ["classifier"]: name after "base_model.model." ->
  // tensor, e.g. "classifier.dense.weight". PEFT's in-memory names
  // ("classifier.modules_to_save.default.dense.weight") are accepted and stored under the saved name.
  std::vector<std::pair<std::string, Tensor>> saved;
};

// The four tensors of HF RobertaClassificationHead, as transformers names them in a checkpoint and
// PEFT after "base_model.model.": dense (C,C) and (C), out_proj (NL,C) and (NL).
extern const char* const kClassifierNames[4];

// Reads adapter_config.json + adapter_model.safetensors in any PEFT layout we know: ours, PEFT's own,
// older ones with an adapter name in the keys ("...lora_A.default.weight") or without
// "base_model.model.". A classification head in modules_to_save ["classifier"] is read into `saved`.
// Refuses (lora::Error, exit 2) what a LoRA merge cannot honour: another peft_type, DoRA, LoRA biases,
// other modules_to_save, embedding LoRA, unpaired or unknown tensors (all listed), and tensors whose
// rank disagrees with the config.
AdapterFile adapter_file_read(const std::string& dir);

// Refuses (lora::Error, runtime) an adapter holding a NaN or infinite value, naming the first such tensor,
// the element and the count: merged weights, evaluation and generation from it would all be NaN. `use`
// says what was to be done ("evaluate", "merge", ...). `lora info` reads such an adapter without this.
void adapter_check_finite(const AdapterFile& ad, const std::string& use);

// The adapter's saved classification head in kClassifierNames order (dense.weight, dense.bias,
// out_proj.weight, out_proj.bias), or an empty vector when it saves none. An incomplete head, or one
// whose four shapes do not fit together, is refused (exit 2) naming the tensors.
std::vector<Tensor> adapter_classifier_head(const AdapterFile& ad);

// Writes <dir>/adapter_config.json and <dir>/adapter_model.safetensors (crash-safe, fp32).
void adapter_save(Model& model, const std::string& dir, const std::string& base_model_name);
// Loads a PEFT-layout adapter (ours or PEFT's own, read by adapter_file_read) into a model that has no
// adapters yet. Each module's adapter covers the whole layer. Errors name the tensor and list mismatches.
void adapter_load(Model& model, const std::string& dir);
// The base_model_name_or_path recorded in an adapter directory ("" if absent).
std::string adapter_base_name(const std::string& dir);

}  // namespace lora
