// `lora generate`: continuations of prompts given on the command line or in a file, from the recipe's
// model with an adapter (or the base alone), laid out as the recipe's training data lays out a prompt.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/session/recipe.h"

namespace lora {

struct GenerateRunOptions {
  std::string adapter;               // adapter directory; "" = the base model alone
  std::vector<std::string> prompts;  // E2E meaning representations or JSONL prompts, as in the data
  bool quiet = false;                // no notices on stderr while loading
  // Sampling (GenerateOptions): temperature 0 keeps the recipe's greedy or beam search.
  float temperature = 0.0f;
  int top_k = 0;                     // 0: every token
  float top_p = 1.0f;                // 1: every token
  uint64_t seed = 0;
};

struct GenerateRunResult {
  std::string format;                          // "e2e" or "jsonl": how prompts were laid out
  std::vector<std::vector<int32_t>> ids;       // each continuation's tokens (no prompt, no final EOS)
  std::vector<std::string> texts;              // each continuation decoded, outer whitespace trimmed
  std::vector<std::string> notes;              // lines worth showing (base model recorded elsewhere, ...)
};

// Generates with the recipe's eval settings (max_new_tokens, beam_size, length_penalty,
// no_repeat_ngram_size, batch_size), sampling when options.temperature > 0. The prompt layout follows the data format of data.train (else
// data.eval): e2e or jsonl (dataset_prompt_ids). Errors: no prompts, a classification model or glue
// data (nothing to generate: use lora eval), an adapter directory without adapter_config.json, a prompt
// longer than the model's positions.
GenerateRunResult generate_run(const Recipe& recipe, const GenerateRunOptions& options);

}  // namespace lora
