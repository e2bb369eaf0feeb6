// LoRA adapters on disk in HuggingFace PEFT's layout (DESIGN.md section 5), so PEFT loads ours unchanged
// and we load PEFT's: adapter_config.json + adapter_model.safetensors with tensor names
// "base_model.model.transformer.h.N.attn.c_attn.lora_A.weight" (r, in) and "...lora_B.weight" (out, r).
//
// Several adapters on one fused layer (q and v inside GPT-2's c_attn) are written as one exactly
// equivalent block-structured adapter: A' = [A_q; A_v] (2r, in) and B' (3C, 2r) holding B_q in rows
// [0,C) x columns [0,r) and B_v in rows [2C,3C) x columns [r,2r), zero elsewhere. PEFT reads its rank
// from rank_pattern and its alpha from alpha_pattern, chosen so that alpha'/r' (or alpha'/sqrt(r') with
// rsLoRA) equals our alpha/r: B' A' x then equals the sum of the separate updates.
#pragma once
#include <string>

#include "core/model.h"

namespace lora {

// Writes <dir>/adapter_config.json and <dir>/adapter_model.safetensors (crash-safe, fp32).
void adapter_save(Model& model, const std::string& dir, const std::string& base_model_name);
// Loads a PEFT-layout adapter (ours or PEFT's own) into a model that has no adapters yet. Each module's
// adapter covers the whole layer. Errors name the tensor and list mismatches.
void adapter_load(Model& model, const std::string& dir);
// The base_model_name_or_path recorded in an adapter directory ("" if absent).
std::string adapter_base_name(const std::string& dir);

}  // namespace lora
