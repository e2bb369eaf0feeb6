// `lora export`: an adapter in other ecosystems' formats.
//
// gguf: a LoRA adapter file for llama.cpp, laid out as its convert_lora_to_gguf.py writes one and as
// src/llama-adapter.cpp reads it. GGUF v3: "GGUF", version 3, tensor count, metadata count, typed
// key/value pairs, tensor infos (name, n_dims, dims in ggml order, i.e. the row-major shape reversed,
// type, offset), data aligned to general.alignment (32, the default, so not written). Metadata:
// general.architecture (llama.cpp's name for the base's arch: it refuses an adapter of another arch),
// general.type = "adapter", adapter.type = "lora", adapter.lora.alpha (f32). Tensors, f32:
// "<base tensor>.lora_a" with shape (r, in) -> ggml ne [in, r], "<base tensor>.lora_b" (out, r) -> ne
// [r, out], i.e. PEFT's A and B: llama.cpp's weights are (out, in) in row-major terms for every arch
// (the GGUF converter transposes GPT-2's Conv1D weights), and PEFT's A/B are already in that nn.Linear
// orientation, so nothing is transposed. GPT-2's fused c_attn is llama.cpp's blk.N.attn_qkv: a
// block-structured q/v adapter on it is one LoRA there too. One exception: llama.cpp's llama arch
// (LLaMA, Mistral) rotates adjacent pairs of each head, HF rotates its two halves, so
// convert_hf_to_gguf.py reorders the rows of q_proj and k_proj (LlamaModel.permute, with the key/value
// head count for k) and convert_lora_to_gguf.py reorders lora_b's rows the same way; so do we
// (gguf_rotary_permute_rows). Qwen2 (NeoX-style rotation in llama.cpp, as in HF) and GPT-2 keep HF's order.
// llama.cpp scales each pair by alpha / r with r read from that pair's tensors and one alpha per file,
// so we write alpha = scale * r of the first module (rsLoRA folds sqrt(r) in: alpha / sqrt(r) * r) and
// fold any module whose own scale differs (rank_pattern / alpha_pattern, rsLoRA with varying ranks)
// into its B: B' = B * scale_m * r_m / alpha. convert_lora_to_gguf.py ignores those patterns and rsLoRA.
//
// An adapter that saves a classification head (modules_to_save) is refused: the head replaces the
// base's dense and out_proj weights and biases in full, and a llama.cpp LoRA file holds only
// .lora_a/.lora_b pairs (src/llama-adapter.cpp rejects any other tensor). llama.cpp runs RoBERTa
// classifiers as full models (convert_hf_to_gguf.py maps RobertaForSequenceClassification to its bert
// arch with cls / cls.output tensors), so the way there is the merged model.
//
// peft: the adapter rewritten in PEFT's canonical layout (keys "base_model.model.<prefixed module>
// .lora_A.weight", no adapter name, adapter_config.json with every key PEFT needs), f32; a saved
// classification head as "base_model.model.classifier.*" with modules_to_save ["classifier"].
// merged: the same as `lora merge` (core/commands/merge.h) with the base from --base or the adapter's
// base_model_name_or_path.
#pragma once
#include <string>
#include <vector>

#include "core/commands/merge.h"
#include "core/formats/model_config.h"

namespace lora {

enum class ExportFormat { gguf, peft, merged };
// "gguf" / "peft" / "merged"; anything else: lora::Error (exit 2) listing the formats.
ExportFormat export_format_parse(const std::string& name);

struct ExportOptions {
  std::string adapter_dir, out, base_dir;  // base_dir: optional (merged, and the arch for gguf)
  ExportFormat format = ExportFormat::gguf;
  DType dtype = DType::f32;                // merged only
  std::vector<std::string> labels;         // merged only: MergeOptions::labels
  bool overwrite = false;
};

struct ExportReport {
  std::vector<std::string> notes;
  std::string arch;       // gguf: general.architecture written
  float alpha = 0;        // gguf: adapter.lora.alpha written
  int tensors = 0;        // tensors written
  int rescaled = 0;       // gguf: modules whose scale was folded into B
};

ExportReport export_run(const ExportOptions& o);

// The base model directory an adapter names (base_model_name_or_path as given, or relative to the
// adapter directory) when it is a directory with a config.json; "" otherwise.
std::string adapter_base_dir_resolve(const AdapterFile& ad);

// llama.cpp's architecture name for a model config (Family::gguf_arch: gpt2, llama or qwen2); families
// llama.cpp's LoRA loading does not cover are refused (exit 2).
std::string gguf_arch_for(const ModelConfig& cfg);
// llama.cpp's tensor name for an adapted module ("transformer.h.3.attn.c_attn" -> "blk.3.attn_qkv.weight"),
// "" when the arch has no such tensor (Family::gguf_tensor of the family exporting to arch).
std::string gguf_tensor_name(const std::string& arch, const std::string& module);

// Writes the adapter as a llama.cpp LoRA GGUF file at path (crash-safe); arch from gguf_arch_for.
// n_head, n_kv_head: the base's query and key/value heads, which the llama arch needs to reorder q's and
// k's lora_b (other archs ignore them).
ExportReport gguf_export_lora(const AdapterFile& ad, const std::string& arch, const std::string& path, int n_head,
                              int n_kv_head);
// The rows of w (out, ...) in the order convert_hf_to_gguf.py gives q_proj / k_proj for llama.cpp's llama
// arch: out = n_head heads of size HS, each (2, HS/2) read as (HS/2, 2), i.e. HF's rotary halves
// interleaved into pairs: new row h*HS + 2i + j = old row h*HS + j*HS/2 + i. HS odd: lora::Error.
Tensor gguf_rotary_permute_rows(const Tensor& w, int n_head);
// Writes the adapter in PEFT's canonical layout into out_dir (created). family: for the key prefix.
int peft_export(const AdapterFile& ad, const std::string& family, const std::string& out_dir);

}  // namespace lora
