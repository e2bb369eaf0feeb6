// Text generation from a model: greedy and beam search over batches of prompts, with a KV cache,
// HF transformers' conventions (beam score = sum of log-probs / length^length_penalty; no-repeat n-gram
// blocking; stop at EOS), so our token ids equal `generate`'s on the same model and settings; and
// sampling (temperature, top-k, top-p) in HF's order of the logits processors, with our own random
// numbers (SplitMix64 seeded by seed and the prompt's index: the same seed gives the same text whatever
// the batch size; not torch's draws).
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
  // Sampling, with beam_size 1 only: temperature 0 is greedy; else each token is drawn from
  // softmax(logits / temperature) restricted to the top_k most likely tokens (0: all) and then to the
  // smallest set whose probability reaches top_p (1: all). top_k 1 is greedy at any temperature.
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;             // the sampling's random numbers; prompt i draws from Rng(mix(seed, i))
};

// Continuations of each prompt (token ids without the prompt and without the final EOS).
// progress(done) is called after each finished batch of prompts.
std::vector<std::vector<int32_t>> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(size_t done)>& progress = {});

// Greedy continuation of one prompt (a convenience over generate()).
std::vector<int32_t> generate_greedy(Model& model, const std::vector<int32_t>& prompt, int max_new, int32_t eos);

}  // namespace lora
