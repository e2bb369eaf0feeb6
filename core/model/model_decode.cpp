// Incremental decoding: Model's eval-mode forward pass one chunk of tokens at a time against a key/value
// cache (see KvCache in model.h for the layout and the left-padding scheme).
//
// Each block runs step()'s own block_forward (adapters on, no dropout) with the cache in the pass: its
// attention is the op set's attention_decode, which appends the chunk's keys and values to the cache and
// attends over each row's slots [start, current], reading earlier slots through the cache's row table
// (so kv_cache_select only rewrites that table on the host), and rotary embeddings take each row's
// absolute position (rope_at). So the logits of decode_step equal those of Model::logits at the same
// positions up to the attention's summation order. Prefill is one call with the padded prompts
// (T = longest prompt), decoding one call per generated token (T = 1).
#include <algorithm>
#include <string>

#include "core/base/error.h"
#include "core/model/model.h"
#include "core/model/model_internal.h"

namespace lora {

using model_internal::rows_of;

namespace {

Tensor i32_host(const std::vector<int32_t>& v) {
  Tensor t = tensor_host({1, int64_t(v.size())}, DType::i32);
  std::copy(v.begin(), v.end(), t.i32());
  return t;
}

}  // namespace

KvCache Model::kv_cache_create(const std::vector<int32_t>& start, int capacity, int max_rows) {
  if (!cfg_.causal || cfg_.head != HeadKind::lm)
    fail_usage("a " + cfg_.family + " model is an encoder with a classification head and does not generate text",
               "evaluate it with `lora eval` on classification data");
  KvCache c;
  c.rows = int(start.size());
  c.max_rows = std::max(max_rows, c.rows);
  c.capacity = capacity;
  c.start = start;
  if (c.rows <= 0 || capacity <= 0)
    fail_usage("a decoding cache needs at least one row and one slot (asked for " + std::to_string(c.rows) +
               " rows of " + std::to_string(capacity) + " slots)");
  for (int32_t s : start)
    if (s < 0 || s > capacity)
      fail_usage("a decoding cache row starts at slot " + std::to_string(s) + ", outside [0, " +
                 std::to_string(capacity) + "]");
  const int NKV = cfg_.n_kv_head > 0 ? cfg_.n_kv_head : cfg_.n_head;
  const int64_t CKV = int64_t(NKV) * (cfg_.d_model / cfg_.n_head);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    c.k.push_back(be_.alloc({capacity, c.max_rows, CKV}, be_.activation_dtype()));
    c.v.push_back(be_.alloc({capacity, c.max_rows, CKV}, be_.activation_dtype()));
  }
  c.dirty = true;
  return c;
}

void Model::kv_cache_select(KvCache& c, const std::vector<int32_t>& src) {
  const int R = int(src.size());
  if (R <= 0 || R > c.max_rows)
    fail_usage("kv_cache_select: " + std::to_string(R) + " rows asked of a cache sized for " +
               std::to_string(c.max_rows));
  for (int32_t s : src)
    if (s < 0 || s >= c.rows)
      fail_usage("kv_cache_select: row " + std::to_string(s) + " does not exist (the cache has " +
                 std::to_string(c.rows) + ")");
  // New row i reads, in every filled slot, what old row src[i] read there.
  std::vector<int32_t> start(R), table(size_t(c.used) * R);
  for (int i = 0; i < R; ++i) start[i] = c.start[src[i]];
  for (int j = 0; j < c.used; ++j)
    for (int i = 0; i < R; ++i)
      table[size_t(j) * R + i] = c.slot_rows.empty() ? src[i] : c.slot_rows[size_t(j) * c.rows + src[i]];
  c.rows = R;
  c.start = std::move(start);
  c.slot_rows = std::move(table);
  c.dirty = true;
}

Tensor Model::decode_step(KvCache& c, const Tensor& tokens) {
  if (tokens.dtype != DType::i32 || tokens.ndim() != 2 || tokens.dim(0) != c.rows || tokens.dim(1) < 1)
    fail_usage("decode_step: tokens " + tokens.shape_str() + " must be i32 (rows = " + std::to_string(c.rows) +
               ", T >= 1)");
  const int R = c.rows, T = int(tokens.dim(1));
  if (c.used + T > c.capacity)
    fail_usage("decode_step: " + std::to_string(T) + " more tokens do not fit in the cache (" +
                   std::to_string(c.used) + " of " + std::to_string(c.capacity) + " slots used)",
               "create the cache with capacity >= longest prompt + max new tokens");
  const int64_t N = int64_t(R) * T, C = cfg_.d_model, V = cfg_.vocab_size;
  const int NKV = cfg_.n_kv_head > 0 ? cfg_.n_kv_head : cfg_.n_head;

  // Token ids and positions; a padding slot (before the row's start) reads token 0 at position 0, and
  // attention never looks at it.
  std::vector<int32_t> ids(N), pos(N);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      const int64_t n = int64_t(r) * T + t;
      const int p = c.used + t - c.start[r];
      if (p < 0) {
        ids[n] = 0;
        pos[n] = 0;
        continue;
      }
      const int32_t id = tokens.i32()[n];
      if (id < 0 || id >= V)
        fail_usage("token id " + std::to_string(id) + " of sequence " + std::to_string(r) +
                       " is outside the model's vocabulary [0, " + std::to_string(V) + ")",
                   "check that the tokenizer matches the model");
      if (p >= cfg_.max_positions)
        fail_usage("sequence " + std::to_string(r) + " reaches position " + std::to_string(p) + " but the model has " +
                       std::to_string(cfg_.max_positions) + " positions",
                   "shorten the prompt or lower max_new_tokens");
      ids[n] = id;
      pos[n] = p;
    }

  const DType dt = be_.activation_dtype();
  Pass p;
  p.B = R;
  p.T = T;
  p.N = N;
  p.shape = AttentionShape{R, T, cfg_.n_head, NKV, int(C / cfg_.n_head), true, 0};  // window: per layer
  p.cache = &c;
  ensure_acts(R, T, true);
  Acts& a = *acts_;
  Tensor ids_dev = be_.alloc({1, N}, DType::i32), pos_dev = be_.alloc({1, N}, DType::i32);
  be_.upload(ids_dev, i32_host(ids));
  be_.upload(pos_dev, i32_host(pos));
  p.positions = pos_dev.view({N});

  // x = wte[ids] + wpe[pos]: two lookups, since positions differ per row (rotary: wte[ids] only); as in
  // body_forward, learned positions start at row position_offset and a post-norm model normalises the
  // sum (plus token type 0) into the residual stream.
  const bool post = cfg_.post_norm;
  Tensor x = rows_of(post ? a.emb : a.res[0], N, C), x3 = x.view({1, N, C});
  be_.embedding_forward(x3, ids_dev, wte_, Tensor());
  if (!wpe_.empty()) {
    Tensor pe = rows_of(a.proj, N, C), pe3 = pe.view({1, N, C});
    be_.embedding_forward(pe3, pos_dev, wpe_.rows(cfg_.position_offset, cfg_.max_positions), Tensor());
    be_.add(x, x, pe, 1.0f);
  }
  if (post) {
    if (!tte_.empty()) be_.bias_add(mat(x), tte_.rows(0, 1).view({C}));
    Tensor x0 = rows_of(a.res[0], N, C), m = a.emb_mean.rows(0, N), r = a.emb_rstd.rows(0, N);
    norm_forward(x0, m, r, x, ln_emb_);
  }

  if (c.dirty) {
    c.start_dev = be_.alloc({R}, DType::i32);
    be_.upload(c.start_dev, i32_host(c.start).view({R}));
    c.slot_rows_dev = Tensor();
    if (!c.slot_rows.empty()) {
      c.slot_rows_dev = be_.alloc({c.used, R}, DType::i32);
      be_.upload(c.slot_rows_dev, i32_host(c.slot_rows).view({c.used, R}));
    }
    c.dirty = false;
  }

  for (int l = 0; l < cfg_.n_layer; ++l) block_forward(p, l);
  Tensor ln = rows_of(a.res[cfg_.n_layer], N, C);
  if (!post) {
    Tensor lnf = rows_of(a.lnf, N, C), mf = a.lnf_mean.rows(0, N), rf = a.lnf_rstd.rows(0, N);
    norm_forward(lnf, mf, rf, ln, lnf_);
    ln = lnf;
  }
  c.used += T;
  if (!c.slot_rows.empty()) {  // the new slots hold row r in physical row r
    for (int t = 0; t < T; ++t)
      for (int r = 0; r < R; ++r) c.slot_rows.push_back(r);
    c.dirty = true;
  }

  // LM head on each row's last token only: rows r*T + T-1 of ln, a strided view.
  MatRef last = mat(ln);
  last.data = static_cast<char*>(last.data) + size_t(T - 1) * C * dtype_size(dt);
  last.rows = R;
  last.ld = int64_t(T) * C;
  Tensor logits = be_.alloc({R, V}, dt);  // (R,V)
  be_.matmul(mat(logits), last, mat(head()), false, true, 1.0f, 0.0f);
  return be_.download(logits);
}

}  // namespace lora
