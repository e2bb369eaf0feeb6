// Text generation from a model: greedy and beam search over batches of prompts, with a KV cache,
// HF transformers' conventions (beam score = sum of log-probs / length^length_penalty; no-repeat n-gram
// blocking; stop at EOS), so our token ids equal `generate`'s on the same model and settings.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "core/model/model.h"

namespace lora {

struct GenerateOptions {
  int max_new_tokens = 64;       // longest continuation
  int beam_size = 1;             // 1: greedy
  float length_penalty = 1.0f;   // beam score = logprob sum / length^length_penalty (HF convention)
  int no_repeat_ngram_size = 0;  // 0: off
  int32_t eos_id = -1;           // generation of a sequence stops after this token (not returned)
  int batch_size = 8;            // prompts decoded together
};

// Continuations of each prompt (token ids without the prompt and without the final EOS).
// progress(done) is called after each finished batch of prompts.
std::vector<std::vector<int32_t>> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(size_t done)>& progress = {});

// Greedy continuation of one prompt (a convenience over generate()).
std::vector<int32_t> generate_greedy(Model& model, const std::vector<int32_t>& prompt, int max_new, int32_t eos);

}  // namespace lora
