// See generate.h. This version recomputes the whole prefix for every new token (no KV cache) and
// decodes greedily; beam search and the cache replace it.
#include "core/generate.h"

#include <algorithm>

#include "core/error.h"

namespace lora {

std::vector<int32_t> generate_greedy(Model& model, const std::vector<int32_t>& prompt, int max_new, int32_t eos) {
  std::vector<int32_t> seq = prompt, out;
  const int64_t V = model.config().vocab_size;
  for (int i = 0; i < max_new && int64_t(seq.size()) < model.config().max_positions; ++i) {
    const int T = int(seq.size());
    Tensor tokens = tensor_host({1, T}, DType::i32), lengths = tensor_host({1}, DType::i32);
    std::copy(seq.begin(), seq.end(), tokens.i32());
    lengths.i32()[0] = T;
    Tensor logits = model.logits(tokens, lengths);  // (1,T,V)
    const float* last = logits.f32() + int64_t(T - 1) * V;
    int32_t next = int32_t(std::max_element(last, last + V) - last);
    if (next == eos) break;
    seq.push_back(next);
    out.push_back(next);
  }
  return out;
}

std::vector<std::vector<int32_t>> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& o, const std::function<void(size_t)>& progress) {
  if (o.beam_size != 1 || o.no_repeat_ngram_size != 0)
    fail_usage("beam search and no-repeat n-gram blocking are not implemented yet", "use eval.beam_size: 1");
  std::vector<std::vector<int32_t>> out;
  for (const auto& p : prompts) {
    out.push_back(generate_greedy(model, p, o.max_new_tokens, o.eos_id));
    if (progress) progress(out.size());
  }
  return out;
}

}  // namespace lora
