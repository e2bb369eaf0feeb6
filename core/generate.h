// Text generation from a model. This first version decodes greedily and recomputes the whole prefix for
// every new token (no KV cache); beam search and the cache come with `lora eval`.
#pragma once
#include <cstdint>
#include <vector>

#include "core/model.h"

namespace lora {

// Greedy continuation of prompt: at most max_new tokens, stopping after eos (not included).
std::vector<int32_t> generate_greedy(Model& model, const std::vector<int32_t>& prompt, int max_new, int32_t eos);

}  // namespace lora
