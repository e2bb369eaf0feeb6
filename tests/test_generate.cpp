// Generation tests: our KV-cache decoding and search against HF transformers' `generate`.
//
// - The incremental path (Model::decode_step over a KvCache, with left-padded rows, chunked prefill
//   and row reordering) gives the logits of the full forward pass (Model::logits on each sequence
//   alone) at every position, within 1e-5 normwise, for the base model and with the PEFT adapter.
// - attention_decode (the op) equals attention_forward on each row's unpadded sequence.
// - generate() on the golden tiny GPT-2 (+ adapter) reproduces, token for token, the ids of
//   tests/fixtures/generate/generate.json, made by scripts/make_generate_fixtures.py with
//   transformers' generate on one prompt at a time: greedy, beam search with length penalties,
//   no-repeat n-grams and EOS. All prompts are generated together, and also in other batchings.
// - Sampling: temperature 0, top_k 1 and a tiny top_p are greedy; a seed repeats the text in any batching;
//   the draws follow softmax(logits / T) restricted by top_k and top_p (histograms of 8000 draws).
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "core/model/adapter.h"
#include "core/formats/checkpoint.h"
#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/model/generate.h"
#include "core/model/model.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;

namespace {
const std::string kGolden = std::string(LORA_FIXTURES) + "/golden";
const std::string kFixture = std::string(LORA_FIXTURES) + "/generate/generate.json";

struct Tiny {
  std::unique_ptr<Backend> be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(kGolden + "/gpt2-tiny");
  Model model{*be, ck.config()};
  explicit Tiny(bool adapter) {
    model.load_base(ck);
    if (adapter) adapter_load(model, kGolden + "/adapter");
  }
};

// Logits of one sequence alone through the full forward pass: (T, V).
Tensor full_logits(Model& m, const std::vector<int32_t>& seq) {
  const int T = int(seq.size());
  Tensor tokens = tensor_host({1, T}, DType::i32), lengths = tensor_host({1}, DType::i32);
  std::copy(seq.begin(), seq.end(), tokens.i32());
  lengths.i32()[0] = T;
  return m.logits(tokens, lengths);
}

// max |a - b| / max |b| over V entries.
double rel_err(const float* a, const float* b, int64_t V) {
  double d = 0, r = 0;
  for (int64_t v = 0; v < V; ++v) {
    d = std::max(d, double(std::fabs(a[v] - b[v])));
    r = std::max(r, double(std::fabs(b[v])));
  }
  return d / r;
}

// Sequences of different lengths for the cache tests: prompt + arbitrary continuation ids.
std::vector<std::vector<int32_t>> cache_sequences(int extra) {
  std::mt19937 gen(11);
  std::vector<std::vector<int32_t>> seqs;
  for (int len : {3, 9, 1, 6}) {
    std::vector<int32_t> s;
    for (int i = 0; i < len + extra; ++i) s.push_back(int32_t(gen() % 97));
    seqs.push_back(s);
  }
  return seqs;
}

// Feeds the sequences' prompts (first lens[r] tokens, right-aligned) in chunks of `chunk` slots, then
// the rest one token at a time; checks every returned row of logits against the full forward pass.
void check_decode_matches_full(Model& m, int chunk) {
  const int extra = 6;
  auto seqs = cache_sequences(extra);
  const int R = int(seqs.size());
  int tmax = 0;
  for (auto& s : seqs) tmax = std::max(tmax, int(s.size()) - extra);
  std::vector<int32_t> start;
  for (auto& s : seqs) start.push_back(tmax - (int(s.size()) - extra));
  std::vector<Tensor> ref;
  for (auto& s : seqs) ref.push_back(full_logits(m, s));
  const int64_t V = m.config().vocab_size;
  KvCache cache = m.kv_cache_create(start, tmax + extra);
  double worst = 0;
  // Slot j of row r holds token j - start[r] of its sequence.
  auto feed = [&](int slot0, int T) {
    Tensor tokens = tensor_host({R, T}, DType::i32);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) {
        int p = slot0 + t - start[r];
        tokens.i32()[r * T + t] = p >= 0 ? seqs[r][p] : 0;
      }
    Tensor lg = m.decode_step(cache, tokens);
    REQUIRE(lg.dim(0) == R);
    REQUIRE(lg.dim(1) == V);
    for (int r = 0; r < R; ++r) {
      int p = slot0 + T - 1 - start[r];
      if (p < 0) continue;  // this row has not started yet
      double e = rel_err(lg.f32() + r * V, ref[r].f32() + int64_t(p) * V, V);
      INFO("row " << r << " position " << p);
      CHECK(e < 1e-5);
      worst = std::max(worst, e);
    }
  };
  for (int s0 = 0; s0 < tmax; s0 += chunk) feed(s0, std::min(chunk, tmax - s0));
  for (int i = 0; i < extra; ++i) feed(tmax + i, 1);
  CHECK(cache.used == tmax + extra);
  MESSAGE("decode vs full forward, chunk " << chunk << ": worst normwise relative error " << worst);
}
}  // namespace

TEST_CASE("attention_decode equals attention_forward on each row's unpadded sequence, with and without a window") {
  for (int window : {0, 3}) {
    CAPTURE(window);
    auto be = backend_cpu_create();
    const int R = 3, RC = 4, NH = 2, HS = 8, C = NH * HS, S = 10;
    const int start[R] = {0, 4, 7};
    std::mt19937 gen(5);
    std::normal_distribution<float> nd;
    // Full per-sequence tensors (S, C) of q, k, v; sequence i occupies slots [start[i], S).
    std::vector<Tensor> q(R), k(R), v(R);
    for (int i = 0; i < R; ++i)
      for (Tensor* t : {&q[i], &k[i], &v[i]}) {
        *t = tensor_host({S, C});
        for (int64_t n = 0; n < t->numel(); ++n) t->f32()[n] = nd(gen);
      }
    Tensor kc = tensor_host({S, RC, C}), vc = tensor_host({S, RC, C});  // one spare physical row per slot
    // Chunk 1 (slots [0, 6)): row r is sequence r. Chunk 2 (slots [6, 10)): rows are reordered as beam
    // search would, row r continuing sequence perm[r] (row 1 and 2 both continue sequence 0), through the
    // slot_rows table; the new slots are written at physical rows 0..2.
    const int perm[R] = {2, 0, 0};
    for (int chunk = 0; chunk < 2; ++chunk) {
      const int s0 = chunk == 0 ? 0 : 6, T = chunk == 0 ? 6 : 4;
      int seq[R];
      for (int r = 0; r < R; ++r) seq[r] = chunk == 0 ? r : perm[r];
      Tensor st = tensor_host({R}, DType::i32), table;
      for (int r = 0; r < R; ++r) st.i32()[r] = start[seq[r]];
      if (chunk == 1) {
        table = tensor_host({s0, R}, DType::i32);
        for (int j = 0; j < s0; ++j)
          for (int r = 0; r < R; ++r) table.i32()[j * R + r] = perm[r];
      }
      Tensor qq = tensor_host({R * T, C}), kk = tensor_host({R * T, C}), vv = tensor_host({R * T, C});
      Tensor out = tensor_host({R * T, C});
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < C; ++c) {
            qq.f32()[(r * T + t) * C + c] = q[seq[r]].f32()[(s0 + t) * C + c];
            kk.f32()[(r * T + t) * C + c] = k[seq[r]].f32()[(s0 + t) * C + c];
            vv.f32()[(r * T + t) * C + c] = v[seq[r]].f32()[(s0 + t) * C + c];
          }
      AttentionShape shape{R, T, NH, NH, HS, true, window};
      be->attention_decode(mat(out), mat(qq), mat(kk), mat(vv), kc, vc, st, table, s0, shape);
      for (int r = 0; r < R; ++r) {
        const int i = seq[r], len = S - start[i];
        Tensor qr = q[i].rows(start[i], len), kr = k[i].rows(start[i], len), vr = v[i].rows(start[i], len);
        Tensor ref = tensor_host({len, C});
        be->attention_forward(mat(ref), mat(qr), mat(kr), mat(vr), AttentionShape{1, len, NH, NH, HS, true, window},
                              Tensor(), AttentionDropout{});
        for (int t = 0; t < T; ++t) {
          CAPTURE(chunk);
          CAPTURE(r);
          CAPTURE(t);
          const int p = s0 + t - start[i];
          const float* o = out.f32() + (r * T + t) * C;
          if (p < 0) {
            for (int c = 0; c < C; ++c) CHECK(o[c] == 0.0f);  // no visible slot yet
            continue;
          }
          CHECK(rel_err(o, ref.f32() + p * C, C) < 1e-6);
        }
      }
    }
    // Bad slots, starts and table entries are caught, not read out of bounds.
    Tensor one = tensor_host({R, C}), st = tensor_host({R}, DType::i32), table = tensor_host({2, R}, DType::i32);
    const AttentionShape s1{R, 1, NH, NH, HS, true};
    CHECK_THROWS(be->attention_decode(mat(one), mat(one), mat(one), mat(one), kc, vc, st, Tensor(), S, s1));
    table.i32()[4] = RC;
    CHECK_THROWS(be->attention_decode(mat(one), mat(one), mat(one), mat(one), kc, vc, st, table, 2, s1));
    st.i32()[1] = S + 1;
    CHECK_THROWS(be->attention_decode(mat(one), mat(one), mat(one), mat(one), kc, vc, st, Tensor(), 0, s1));
  }
}

TEST_CASE("decode_step logits equal the full forward pass at every position") {
  for (bool adapter : {false, true}) {
    CAPTURE(adapter);
    Tiny t(adapter);
    check_decode_matches_full(t.model, 1000);  // prefill in one chunk
    check_decode_matches_full(t.model, 4);     // chunked prefill: queries at slot0 > 0 see earlier chunks
  }
}

TEST_CASE("kv_cache_select reorders, duplicates and drops rows") {
  Tiny t(true);
  Model& m = t.model;
  auto seqs = cache_sequences(0);
  const int64_t V = m.config().vocab_size;
  // Rows 0..3 hold the sequences' first plen[r] = min(5, length - 1) tokens, right-aligned in 5 slots.
  std::vector<int32_t> start, plen;
  for (auto& s : seqs) {
    plen.push_back(std::min(5, int(s.size()) - 1));
    start.push_back(5 - plen.back());
  }
  CHECK(start[2] > 0);  // one row is padded
  KvCache cache = m.kv_cache_create(start, 8, 6);
  Tensor tok = tensor_host({4, 5}, DType::i32);
  for (int r = 0; r < 4; ++r)
    for (int j = start[r]; j < 5; ++j) tok.i32()[r * 5 + j] = seqs[r][j - start[r]];
  m.decode_step(cache, tok);
  const std::vector<int32_t> src = {2, 0, 0, 3, 1};
  m.kv_cache_select(cache, src);
  CHECK(cache.rows == 5);
  // Feed each new row its source's next token; its logits must be the source sequence's.
  Tensor next = tensor_host({5, 1}, DType::i32);
  for (int i = 0; i < 5; ++i) next.i32()[i] = seqs[src[i]][plen[src[i]]];
  Tensor lg = m.decode_step(cache, next);
  for (int i = 0; i < 5; ++i) {
    const auto& s = seqs[src[i]];
    const int p = plen[src[i]];
    Tensor ref = full_logits(m, std::vector<int32_t>(s.begin(), s.begin() + p + 1));
    CHECK(rel_err(lg.f32() + i * V, ref.f32() + int64_t(p) * V, V) < 1e-5);
  }
  CHECK_THROWS_AS(m.kv_cache_select(cache, {0, 1, 2, 3, 4, 0, 1}), Error);  // more rows than max_rows
  CHECK_THROWS_AS(m.kv_cache_select(cache, {7}), Error);                    // no such row
}

TEST_CASE("generate reproduces transformers' generate token for token") {
  Tiny base(false), with_adapter(true);
  CHECK(generate_fixture_check(json_read_file(kFixture), base.model, with_adapter.model) >= 6);
}

TEST_CASE("generate_greedy equals generate with beam size 1, and stops at the model's positions") {
  Tiny t(true);
  std::vector<int32_t> prompt = {5, 17, 42};
  GenerateOptions o;
  o.max_new_tokens = 12;
  auto a = generate(t.model, {prompt}, o);
  CHECK(generate_greedy(t.model, prompt, 12, -1) == a[0]);
  CHECK(a[0].size() == 12);
  // 64 positions: a 60-token prompt has room for 4 new tokens.
  std::vector<int32_t> long_prompt(60, 7);
  CHECK(generate_greedy(t.model, long_prompt, 20, -1).size() == 4);
  o.beam_size = 3;
  CHECK(generate(t.model, {long_prompt}, o)[0].size() <= 4);
}

TEST_CASE("generate refuses bad prompts and options with lora::Error") {
  Tiny t(false);
  GenerateOptions o;
  CHECK_THROWS_AS(generate(t.model, {{}}, o), Error);                       // empty prompt
  CHECK_THROWS_AS(generate(t.model, {{1, 2, 97}}, o), Error);               // id outside the vocabulary
  CHECK_THROWS_AS(generate(t.model, {std::vector<int32_t>(65, 1)}, o), Error);  // longer than positions
  o.beam_size = 0;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
  o.beam_size = 2;
  o.no_repeat_ngram_size = -1;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
  o.no_repeat_ngram_size = 0;
  o.batch_size = 0;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
  o.batch_size = 2;
  o.max_new_tokens = 0;
  CHECK(generate(t.model, {{1, 2}}, o)[0].empty());
}

TEST_CASE("sampling: temperature 0, top_k 1 and a tiny top_p are greedy; a seed repeats the text in any batching") {
  Tiny t(true);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42}, {3, 9}, {11, 2, 60, 7}, {1}, {8, 8, 8}};
  GenerateOptions greedy;
  greedy.max_new_tokens = 10;
  const auto g = generate(t.model, prompts, greedy);
  GenerateOptions o = greedy;
  o.temperature = 0.0f;
  o.top_k = 5;
  o.seed = 7;
  CHECK(generate(t.model, prompts, o) == g);
  o.temperature = 1.5f;
  o.top_k = 1;
  CHECK(generate(t.model, prompts, o) == g);
  o.top_k = 0;
  o.top_p = 1e-6f;
  CHECK(generate(t.model, prompts, o) == g);

  o.top_p = 1.0f;
  o.temperature = 2.0f;  // flat enough that sampling leaves the greedy path
  const auto a = generate(t.model, prompts, o);
  CHECK(a != g);
  o.batch_size = 2;
  CHECK(generate(t.model, prompts, o) == a);
  o.batch_size = 8;
  o.seed = 8;
  CHECK(generate(t.model, prompts, o) != a);
}

TEST_CASE("sampling draws tokens with the probabilities of softmax(logits / T), within top_k and top_p") {
  Tiny t(false);
  const std::vector<int32_t> prompt = {5, 17, 42};
  Tensor lg = full_logits(t.model, prompt);
  const int64_t V = t.model.config().vocab_size;  // the logits are (1, T, V)
  const float* last = lg.f32() + (int64_t(prompt.size()) - 1) * V;
  const float T = 0.7f;
  std::vector<double> p(static_cast<size_t>(V));
  double sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += p[size_t(v)] = std::exp(double(last[v]) / T);
  for (double& x : p) x /= sum;
  std::vector<int32_t> by_prob(static_cast<size_t>(V));
  std::iota(by_prob.begin(), by_prob.end(), 0);
  std::sort(by_prob.begin(), by_prob.end(), [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });

  // One new token for each of N copies of the prompt: copy i draws with its own random numbers.
  const int N = 8000;
  const std::vector<std::vector<int32_t>> prompts(N, prompt);
  GenerateOptions o;
  o.max_new_tokens = 1;
  o.temperature = T;
  o.seed = 123;
  o.batch_size = 64;
  auto histogram = [&](const GenerateOptions& opt) {
    std::vector<double> h(static_cast<size_t>(V));
    for (const auto& out : generate(t.model, prompts, opt)) h[size_t(out.at(0))] += 1.0 / N;
    return h;
  };
  std::vector<double> h = histogram(o);
  // Total variation against its expected size for N exact draws, 0.5 sum_v E|count/N - p_v|, which is
  // about 0.5 sum_v sqrt(2 p_v (1 - p_v) / (pi N)).
  double tv = 0, expected = 0;
  for (int64_t v = 0; v < V; ++v) {
    tv += 0.5 * std::fabs(h[size_t(v)] - p[size_t(v)]);
    expected += 0.5 * std::sqrt(2 * p[size_t(v)] * (1 - p[size_t(v)]) / (M_PI * N));
  }
  MESSAGE("total variation " << tv << ", expected about " << expected);
  CHECK(tv < 1.5 * expected);

  o.top_k = 3;
  h = histogram(o);
  double top3 = p[size_t(by_prob[0])] + p[size_t(by_prob[1])] + p[size_t(by_prob[2])];
  for (int k = 0; k < 3; ++k) CHECK(h[size_t(by_prob[size_t(k)])] == doctest::Approx(p[size_t(by_prob[size_t(k)])] / top3).epsilon(0.15));
  double outside = 1.0;
  for (int k = 0; k < 3; ++k) outside -= h[size_t(by_prob[size_t(k)])];
  CHECK(outside == doctest::Approx(0.0).epsilon(1e-9));

  // top_p just above the most likely token's probability: the first two tokens only.
  o.top_k = 0;
  o.top_p = float(p[size_t(by_prob[0])] + 1e-3);
  h = histogram(o);
  const double two = p[size_t(by_prob[0])] + p[size_t(by_prob[1])];
  CHECK(h[size_t(by_prob[0])] + h[size_t(by_prob[1])] == doctest::Approx(1.0));
  CHECK(h[size_t(by_prob[0])] == doctest::Approx(p[size_t(by_prob[0])] / two).epsilon(0.1));
}

TEST_CASE("sampling options out of range are refused with lora::Error") {
  Tiny t(false);
  GenerateOptions o;
  o.temperature = -0.5f;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
  o.temperature = 1.0f;
  o.top_p = 0.0f;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
  o.top_p = 1.5f;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
  o.top_p = 1.0f;
  o.top_k = -1;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
  o.top_k = 0;
  o.beam_size = 2;
  CHECK_THROWS_AS(generate(t.model, {{1, 2}}, o), Error);
}

}  // namespace
