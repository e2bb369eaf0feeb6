// Greedy and beam-search generation over batches of prompts with a KV cache (see generate.h).
//
// Prompts of a batch are right-aligned in the cache (KvCache in model.h), prefilled in one decode_step,
// then decoded one token per step for all live rows (prompts x beams) together. Each prompt's search is
// independent and reproduces HF transformers' `generate` (v5, do_sample=False) on that prompt alone:
//
// - Greedy (beam_size 1): the arg max of the logits after no-repeat n-gram blocking (first index on
//   ties); stop after EOS (kept in HF's output, dropped in ours) or after max_new_tokens.
// - Beam search (GenerationMixin._beam_search): log-softmax scores added to each beam's running sum
//   (float32, as torch); beam 0 starts at 0 and the others at -1e9 so the first step expands one beam;
//   the top 2*K candidates over all beams are kept (K = beam_size). A candidate "hits a stopping
//   criterion" if its token is EOS or it reaches max_new_tokens. The next running beams are the best K
//   of the 2K that did not hit one. Of the first K candidates, those that hit one become finished
//   hypotheses scored sum_logprobs / generated_length^length_penalty, where the generated length counts
//   the new tokens including this one (EOS included), not the prompt; the best K hypotheses are kept.
//   After each step, the early-stop heuristic (early_stopping=False, HF's default): once K hypotheses
//   are finished, the prompt stops when the best running sum / (tokens generated so far)^length_penalty
//   is no longer above the worst finished score. The answer is the best finished hypothesis.
// - No-repeat n-grams (NoRepeatNGramLogitsProcessor): over the whole sequence, prompt included, a token
//   that would complete an n-gram already present is banned (score -inf).
//
// - Sampling (temperature > 0, beam_size 1), as HF's do_sample=True applies its logits processors:
//   no-repeat n-gram blocking, logits / temperature, top-k (ties at the k-th value kept, as torch.topk's
//   threshold does), top-p (tokens sorted by probability, the smallest prefix whose cumulative
//   probability reaches top_p, at least one token), then one draw from the renormalised distribution
//   with the prompt's own Rng. The draws are ours, so the text is reproducible here, not equal to torch's.
//
// A prompt's max_new_tokens is capped at the model's positions (max_positions - prompt length).
#include "core/model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "core/base/error.h"
#include "core/base/rng.h"

namespace lora {

namespace {

constexpr float kMasked = -1.0e9f;  // HF's "very large negative" for beams that must not be chosen

struct Beam {
  float score = 0;              // sum of log-probs of the generated tokens (float32, as torch)
  std::vector<int32_t> tokens;  // generated so far
};

struct Hypothesis {
  float score = 0;              // sum_logprobs / length^length_penalty
  std::vector<int32_t> tokens;  // generated tokens, EOS included if it ended there
};

// The search state of one prompt.
struct Search {
  const std::vector<int32_t>* prompt = nullptr;
  int max_new = 0;                 // this prompt's limit
  std::vector<Beam> running;       // K beams (1 for greedy)
  std::vector<Hypothesis> finished;  // best first, at most K
  bool improvable = true;          // HF's is_early_stop_heuristic_unsatisfied
  bool done = false;
  std::vector<int32_t> result;
  Rng rng{0};                      // sampling's draws for this prompt
};

// Sets scores[v] = -inf for every token v that would complete an n-gram already in prompt + gen.
void ban_repeated_ngrams(float* scores, const std::vector<int32_t>& prompt, const std::vector<int32_t>& gen, int n) {
  const int64_t L = int64_t(prompt.size() + gen.size());
  if (n <= 0 || L < n) return;
  auto at = [&](int64_t i) { return i < int64_t(prompt.size()) ? prompt[i] : gen[i - prompt.size()]; };
  const int64_t p0 = L - (n - 1);  // the last n-1 tokens start here
  for (int64_t i = 0; i + n <= L; ++i) {
    bool match = true;
    for (int j = 0; j < n - 1 && match; ++j) match = at(i + j) == at(p0 + j);
    if (match) scores[at(i + n - 1)] = -INFINITY;
  }
}

// log_softmax of one row, in place (float32 output, double accumulation).
void log_softmax(float* x, int64_t V) {
  float maxval = -INFINITY;
  for (int64_t v = 0; v < V; ++v) maxval = std::max(maxval, x[v]);
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(double(x[v]) - maxval);
  const float lse = float(double(maxval) + std::log(sum));
  for (int64_t v = 0; v < V; ++v) x[v] = x[v] - lse;
}

// The sampled token of one row of logits (already n-gram blocked): temperature, top-k, top-p, one draw.
int32_t sample_token(const float* row, int64_t V, const GenerateOptions& o, Rng& rng) {
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  // Most likely first, lower id first on ties, so that top_k 1 picks what greedy picks.
  auto better = [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
  int64_t keep = V;
  if (o.top_k > 0 && o.top_k < V) {
    // torch.topk's threshold keeps every token tied with the k-th; with top_k 1 only the first counts.
    std::nth_element(order.begin(), order.begin() + (o.top_k - 1), order.end(), better);
    const float kth = row[order[size_t(o.top_k) - 1]];
    keep = o.top_k == 1 ? 1 : std::count_if(row, row + V, [&](float x) { return x >= kth; });
  }
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), better);
  if (keep == 1 || !std::isfinite(row[order[0]])) return order[0];
  // Probabilities of the kept tokens at this temperature (double: a sharp temperature must not overflow).
  std::vector<double> p(static_cast<size_t>(keep));
  const double top = double(row[order[0]]) / o.temperature;
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += p[size_t(i)] = std::exp(double(row[order[size_t(i)]]) / o.temperature - top);
  if (o.top_p < 1.0f) {
    double cum = 0;
    int64_t n = 0;
    while (n < keep && cum < double(o.top_p) * sum) cum += p[size_t(n++)];
    keep = std::max<int64_t>(1, n);
    sum = cum > 0 ? cum : p[0];
  }
  const double u = double(rng.next() >> 11) * (1.0 / 9007199254740992.0) * sum;
  double cum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += p[size_t(i)];
    if (u < cum) return order[size_t(i)];
  }
  return order[size_t(keep) - 1];  // u rounded up to the sum
}

// One greedy (or sampling) step of a prompt: `row` holds its logits (V), modified in place.
void greedy_step(Search& s, float* row, int64_t V, const GenerateOptions& o) {
  Beam& b = s.running[0];
  ban_repeated_ngrams(row, *s.prompt, b.tokens, o.no_repeat_ngram_size);
  const int32_t next = o.temperature > 0 ? sample_token(row, V, o, s.rng)
                                         : int32_t(std::max_element(row, row + V) - row);
  b.tokens.push_back(next);
  if (next == o.eos_id || int(b.tokens.size()) >= s.max_new) {
    s.done = true;
    s.result = b.tokens;
  }
}

// One beam-search step of a prompt: rows (K, V) hold the logits of its K running beams. parents receives,
// for each new running beam, the index of the beam it extends.
void beam_step(Search& s, float* rows, int64_t V, const GenerateOptions& o, std::vector<int>& parents) {
  const int K = int(s.running.size());
  const int cur = int(s.running[0].tokens.size());  // tokens generated so far (the same for every beam)
  std::vector<float> cand(size_t(K) * V);            // accumulated log-probs, index k*V + v
  for (int k = 0; k < K; ++k) {
    float* row = rows + int64_t(k) * V;
    log_softmax(row, V);
    ban_repeated_ngrams(row, *s.prompt, s.running[k].tokens, o.no_repeat_ngram_size);
    for (int64_t v = 0; v < V; ++v) cand[size_t(k) * V + v] = row[v] + s.running[k].score;
  }
  // The top 2K candidates, best first (lower index first on ties).
  const int keep = std::min<int64_t>(2 * int64_t(K), int64_t(K) * V);
  std::vector<int64_t> idx(cand.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int64_t a, int64_t b) { return cand[a] > cand[b] || (cand[a] == cand[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), better);
  idx.resize(keep);
  std::vector<bool> hits(keep);
  std::vector<float> penalized(keep);
  for (int i = 0; i < keep; ++i) {
    const int32_t tok = int32_t(idx[i] % V);
    hits[i] = tok == o.eos_id || cur + 1 >= s.max_new;
    penalized[i] = cand[idx[i]] + (hits[i] ? kMasked : 0.0f);
  }
  auto extend = [&](int i) {
    const int k = int(idx[i] / V);
    std::vector<int32_t> t = s.running[k].tokens;
    t.push_back(int32_t(idx[i] % V));
    return t;
  };

  // Finished hypotheses: only the first K candidates may finish, and only while improvement is possible.
  const float len_div = float(std::pow(double(cur + 1), double(o.length_penalty)));
  if (s.improvable) {
    for (int i = 0; i < std::min(K, keep); ++i) {
      if (!hits[i] || !std::isfinite(cand[idx[i]])) continue;
      s.finished.push_back({cand[idx[i]] / len_div, extend(i)});
    }
    std::stable_sort(s.finished.begin(), s.finished.end(),
                     [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
    if (int(s.finished.size()) > K) s.finished.resize(K);
  }

  // The next running beams: the best K candidates that did not stop (stable: rank order on ties).
  std::vector<int> order(keep);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return penalized[a] > penalized[b]; });
  std::vector<Beam> next(K);
  parents.assign(K, 0);
  for (int j = 0; j < K && j < keep; ++j) {
    const int i = order[j];
    parents[j] = int(idx[i] / V);
    next[j].score = penalized[i];
    next[j].tokens = extend(i);
  }
  s.running = std::move(next);

  // Early-stop heuristic (early_stopping=False): compare at the length generated so far.
  if (int(s.finished.size()) == K) {
    const float best = s.running[0].score / float(std::pow(double(cur + 1), double(o.length_penalty)));
    s.improvable = s.improvable && best > s.finished.back().score;
  }
  const bool all_hit = std::all_of(hits.begin(), hits.end(), [](bool h) { return h; });
  if (!s.improvable || all_hit) {
    s.done = true;
    if (!s.finished.empty()) s.result = s.finished[0].tokens;
  }
}

void check_options(const GenerateOptions& o) {
  if (o.beam_size < 1) fail_usage("beam_size must be at least 1, found " + std::to_string(o.beam_size));
  if (o.max_new_tokens < 0) fail_usage("max_new_tokens must be >= 0, found " + std::to_string(o.max_new_tokens));
  if (o.no_repeat_ngram_size < 0)
    fail_usage("no_repeat_ngram_size must be >= 0 (0 turns it off), found " + std::to_string(o.no_repeat_ngram_size));
  if (o.batch_size < 1) fail_usage("the generation batch size must be at least 1, found " + std::to_string(o.batch_size));
  if (!std::isfinite(o.length_penalty)) fail_usage("length_penalty must be a finite number");
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    fail_usage("the temperature must be a finite number >= 0, found " + std::to_string(o.temperature),
               "0 decodes greedily; 0.7 to 1 are usual for sampling");
  if (o.top_k < 0) fail_usage("top_k must be >= 0 (0 keeps every token), found " + std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1))
    fail_usage("top_p must be in (0, 1], found " + std::to_string(o.top_p), "1 keeps every token; 0.9 is usual");
  if (o.temperature > 0 && o.beam_size > 1)
    fail_usage("sampling (temperature > 0) draws one sequence, but beam_size is " + std::to_string(o.beam_size),
               "sample with beam_size 1 (--set eval.beam_size=1), or leave the temperature at 0 for beam search");
}

void check_prompt(const std::vector<int32_t>& p, size_t i, const ModelConfig& cfg) {
  if (p.empty()) fail_usage("prompt " + std::to_string(i) + " is empty", "generation needs at least one prompt token");
  if (int64_t(p.size()) > cfg.max_positions)
    fail_usage("prompt " + std::to_string(i) + " has " + std::to_string(p.size()) + " tokens but the model has " +
                   std::to_string(cfg.max_positions) + " positions",
               "shorten the prompt (data.max_length)");
  for (int32_t id : p)
    if (id < 0 || id >= cfg.vocab_size)
      fail_usage("prompt " + std::to_string(i) + " holds token id " + std::to_string(id) + ", outside the vocabulary [0, " +
                     std::to_string(cfg.vocab_size) + ")",
                 "check that the tokenizer matches the model");
}

// Generates for prompts [first, first + count) into out.
void generate_batch(Model& model, const std::vector<std::vector<int32_t>>& prompts, size_t first, size_t count,
                    const GenerateOptions& o, std::vector<std::vector<int32_t>>& out) {
  const ModelConfig& cfg = model.config();
  const int64_t V = cfg.vocab_size;
  const int K = o.beam_size;
  std::vector<Search> searches(count);
  int tmax = 0, new_max = 0;
  for (size_t b = 0; b < count; ++b) {
    Search& s = searches[b];
    s.prompt = &prompts[first + b];
    const int len = int(s.prompt->size());
    s.max_new = std::min<int64_t>(o.max_new_tokens, cfg.max_positions - len);
    s.done = s.max_new <= 0;
    s.running.resize(K);
    for (int k = 1; k < K; ++k) s.running[k].score = kMasked;
    s.rng = Rng(rng_mix(o.seed ^ rng_mix(uint64_t(first + b))));
    tmax = std::max(tmax, len);
    new_max = std::max(new_max, s.max_new);
  }
  // live: the prompts still searching, in cache-row order (K rows each).
  std::vector<int> live;
  std::vector<int32_t> start;
  for (size_t b = 0; b < count; ++b)
    if (!searches[b].done) {
      live.push_back(int(b));
      start.push_back(tmax - int32_t(searches[b].prompt->size()));
    }
  if (!live.empty()) {
    const int P = int(live.size());
    KvCache cache = model.kv_cache_create(start, tmax + new_max, P * K);
    Tensor tokens = tensor_host({P, tmax}, DType::i32);
    for (int i = 0; i < P; ++i) {
      const auto& p = *searches[live[i]].prompt;
      std::copy(p.begin(), p.end(), tokens.i32() + int64_t(i) * tmax + start[i]);
    }
    Tensor logits = model.decode_step(cache, tokens);  // (P,V)
    std::vector<float> rows;                            // (live * K, V)
    if (K > 1) {
      std::vector<int32_t> src;
      rows.resize(size_t(P) * K * V);
      for (int i = 0; i < P; ++i)
        for (int k = 0; k < K; ++k) {
          src.push_back(i);
          std::copy(logits.f32() + i * V, logits.f32() + (i + 1) * V, rows.begin() + (size_t(i) * K + k) * V);
        }
      model.kv_cache_select(cache, src);
    } else {
      rows.assign(logits.f32(), logits.f32() + int64_t(P) * V);
    }
    while (true) {
      std::vector<int32_t> src, next_tokens;
      std::vector<int> still;
      std::vector<int> parents;
      for (size_t i = 0; i < live.size(); ++i) {
        Search& s = searches[live[i]];
        float* r = rows.data() + i * K * V;
        if (K == 1)
          greedy_step(s, r, V, o);
        else
          beam_step(s, r, V, o, parents);
        if (s.done) continue;
        for (int k = 0; k < K; ++k) {
          src.push_back(int32_t(i * K + (K == 1 ? 0 : parents[k])));
          next_tokens.push_back(s.running[k].tokens.back());
        }
        still.push_back(live[i]);
      }
      if (still.empty()) break;
      bool identity = src.size() == live.size() * K;
      for (size_t i = 0; identity && i < src.size(); ++i) identity = src[i] == int32_t(i);
      if (!identity) model.kv_cache_select(cache, src);
      live = still;
      Tensor step_tokens = tensor_host({int64_t(next_tokens.size()), 1}, DType::i32);
      std::copy(next_tokens.begin(), next_tokens.end(), step_tokens.i32());
      Tensor lg = model.decode_step(cache, step_tokens);
      rows.assign(lg.f32(), lg.f32() + lg.numel());
    }
  }
  for (size_t b = 0; b < count; ++b) {
    std::vector<int32_t> r = searches[b].result;
    if (!r.empty() && r.back() == o.eos_id) r.pop_back();
    out[first + b] = std::move(r);
  }
}

}  // namespace

std::vector<std::vector<int32_t>> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& o, const std::function<void(size_t)>& progress) {
  check_options(o);
  for (size_t i = 0; i < prompts.size(); ++i) check_prompt(prompts[i], i, model.config());
  std::vector<std::vector<int32_t>> out(prompts.size());
  for (size_t first = 0; first < prompts.size(); first += size_t(o.batch_size)) {
    const size_t count = std::min(prompts.size() - first, size_t(o.batch_size));
    generate_batch(model, prompts, first, count, o, out);
    if (progress) progress(first + count);
  }
  return out;
}

std::vector<int32_t> generate_greedy(Model& model, const std::vector<int32_t>& prompt, int max_new, int32_t eos) {
  GenerateOptions o;
  o.max_new_tokens = max_new;
  o.eos_id = eos;
  o.batch_size = 1;
  return generate(model, {prompt}, o)[0];
}

}  // namespace lora
