// A randomly initialised model directory from a config.json (`lora init`).
#pragma once
#include <cstdint>
#include <string>

namespace lora {

// Reads config_path, initialises the weights as GPT-2 does, writes out_dir/{config.json,
// model.safetensors} and copies the tokenizer files of tokenizer_dir (if given). A RoBERTa config whose
// `architectures` name no sequence classifier (RobertaForMaskedLM) is written without a classification
// head, as roberta-base is published; otherwise RoBERTa gets a head of the config's number of labels.
void model_init_write(const std::string& config_path, const std::string& out_dir, const std::string& tokenizer_dir,
                      uint64_t seed);

}  // namespace lora
