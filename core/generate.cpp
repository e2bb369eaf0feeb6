// See generate.h.
#include "core/generate.h"

#include <algorithm>

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

}  // namespace lora
