// lora.init_from: a fresh run's LoRA weights, and its classification head when the shape fits, taken
// from a trained adapter instead of the random init. The reference's --lora_path and how this differs
// from it: core/train/adapter_init.cpp.
#pragma once
#include <string>
#include <vector>

#include "core/model/adapter.h"
#include "core/model/model.h"

namespace lora {

// lora.init_from: sets the adapters that lora_init placed (A, B) from a trained adapter directory (ours or
// PEFT's), bit for bit, and the classification head too when its four tensors have the model's shapes; a
// head of another number of labels is left as lora_init made it. The adapter must adapt exactly the
// layers the model's adapters sit on, with their rank and scale; several adapters on one layer (q, v in
// GPT-2's c_attn) read the block-structured form adapter_save writes. Errors (lora::Error, prefixed
// "lora.init_from: ") name the directory, the tensors, what was expected and found. Returns the notices
// to show (what was taken, what the head does).
std::vector<std::string> adapter_init_from(Model& model, const std::string& dir);

}  // namespace lora
