// Folding a LoRA adapter into its base model (`lora merge`, `lora export --to merged`), and reading an
// adapter directory as plain data (also used by the exporters in core/commands/export_gguf.h).
//
// The merge follows PEFT's merge_and_unload (peft/tuners/lora/layer.py, get_delta_weight): for every
// adapted linear layer W = W0 + scale * B A, with scale = alpha / r (alpha / sqrt(r) with rsLoRA),
// A (r, in) and B (out, r) in nn.Linear orientation whatever the storage of W0; for GPT-2's Conv1D
// weights, stored (in, out), the update is transposed: W0 += scale * (B A)^T. The sum is computed in
// fp32 from the base weights as stored (bf16/fp16 bases are widened exactly), and rounded once to the
// output dtype when the file is written.
//
// The output is a HF directory as transformers' save_pretrained writes it for the base's architecture:
// config.json (the base's own, dtype updated), generation_config.json and tokenizer files copied,
// model.safetensors, or shards plus model.safetensors.index.json above kMergeShardBytes. Tensor names
// carry the family prefix ("transformer.h.0.attn.c_attn.weight" for GPT2LMHeadModel) whether or not
// the base stored it; GPT-2's causal-mask buffers (attn.bias, attn.masked_bias) and a tied lm_head
// copy are not written, as save_pretrained does not write them.
//
// A classification head the adapter saves (RoBERTa GLUE runs: PEFT's modules_to_save ["classifier"],
// trained in full) is written as RobertaForSequenceClassification holds it: classifier.dense.* and
// classifier.out_proj.* from the adapter, replacing any head of the base; the base's masked-LM head
// (lm_head.*) and pooler (roberta.pooler.*), which that class does not have, are left out. config.json
// then names architectures ["RobertaForSequenceClassification"], id2label / label2id for the head's
// num_labels as transformers writes them (names from --labels, else the base's own when it has as
// many, else "LABEL_i"), and problem_type (regression for one label, single_label_classification
// otherwise). Real names matter beyond display: llama.cpp's convert_hf_to_gguf.py takes two labels
// named LABEL_0 / LABEL_1 for transformers' placeholder and gives the model one output.
//
// Contract: every check (adapter against base, names recorded in the adapter, output path) runs before
// anything is written; the output is built in a sibling temporary directory and renamed into place
// only after it is complete (and verified, with --verify), so a failed merge leaves no partial output
// and never touches an existing directory without --overwrite.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/tensor.h"
#include "core/formats/checkpoint.h"
#include "core/model/adapter.h"

namespace lora {

// Output above this many bytes is sharded, as transformers' save_pretrained does with its historical
// default max_shard_size="5GB" (10^9-byte gigabytes): GPT-2 XL in fp32 (6.2 GB) gets two shards.
constexpr size_t kMergeShardBytes = 5000000000ull;

// ---- adapter module names ----

// The model family (Family::name) whose block-module pattern every adapted module matches, or "" if
// none or several.
std::string adapter_family_guess(const AdapterFile& ad);

// A module name with the family's HF prefix ("h.0.attn.c_attn" -> "transformer.h.0.attn.c_attn" for
// gpt2); names already prefixed and task heads (lm_head, score, classifier) are returned unchanged.
std::string module_name_canonical(const std::string& module, const std::string& family);

// ---- the merge ----

struct MergeOptions {
  std::string base_dir, adapter_dir, out_dir;
  DType dtype = DType::f32;          // output dtype: f32, bf16 or f16
  std::vector<std::string> labels;   // id2label names of a saved classification head, in id order
                                     // (empty: the base's when it has as many, else "LABEL_i")
  bool verify = false;               // compare logits of base + adapter and merged on a probe batch
  bool force = false;                // merge although the adapter names another base model
  bool overwrite = false;            // replace an existing output directory
  size_t shard_bytes = kMergeShardBytes;
};

struct MergeVerifyResult {
  double max_abs = 0;      // max |merged - adapter| over the probe batch's logits
  double max_rel = 0;      // max_abs / max |adapter logits| (normwise, so near-zero logits do not dominate)
  double threshold = 0;    // merge_verify_threshold(dtype)
  int64_t nonfinite = 0;   // logits that are NaN or infinite, in either model: never a pass
  bool passed = false;
};

struct MergeReport {
  int modules_merged = 0;
  int head_labels = 0;             // outputs of the classification head taken from the adapter (0: none)
  size_t tensors_written = 0;
  std::vector<std::string> notes;  // lines worth showing (base-name mismatch forced, skipped buffers)
  bool verified = false;
  MergeVerifyResult verify;
};

// The whole command: checks, merge, write, optional verification, rename into place.
MergeReport merge_run(const MergeOptions& o);

// The merged tensors under the names save_pretrained writes (see the top of this file), as host f32.
// Errors list every adapter module the base lacks and every shape that disagrees.
std::vector<std::pair<std::string, Tensor>> merge_weights(const Checkpoint& base, const AdapterFile& ad,
                                                          std::vector<std::string>* notes = nullptr);

// W += scale * B A (w_in_out = false, W (out, in)) or W += scale * (B A)^T (w_in_out = true, W (in, out)).
void merge_delta_add(Tensor& w, const AdapterModule& m, bool w_in_out);

// Whether the name an adapter records (base_model_name_or_path) designates base_dir: equal resolved
// paths (as given, or relative to the adapter directory), or the same last path component
// ("openai-community/gpt2" names "/models/gpt2"). An empty recorded name matches anything.
bool base_name_matches(const std::string& recorded, const std::string& base_dir, const std::string& adapter_dir);

// Logits of base + adapter (the adapter, and its classification head if it saves one, applied by the
// CPU model) against the merged directory's, on a fixed probe batch of 2 x 16 tokens: next-token logits
// for decoders, the classification head's logits (B, num_labels) for RoBERTa.
MergeVerifyResult merge_verify(const std::string& base_dir, const std::string& adapter_dir,
                               const std::string& merged_dir, DType dtype);
// Largest normwise relative logit error accepted for a merged model written in dtype (see merge.cpp).
double merge_verify_threshold(DType dtype);

// "fp32" / "bf16" / "fp16" (also "f32", "float32", ...) -> DType; other names: exit 2 listing them.
DType merge_dtype_parse(const std::string& name);

}  // namespace lora
