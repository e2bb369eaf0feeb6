// Incremental decoding: Model's eval-mode forward pass one chunk of tokens at a time against a key/value
// cache (see KvCache in model.h for the layout and the left-padding scheme).
//
// The layer arithmetic is step()'s, op for op (the same layernorm, linear, GELU and residual adds in the
// same order; LoRA adapters applied as y += scale * (x A^T) B^T with no dropout), so the logits of
// decode_step equal those of Model::logits at the same positions up to the attention's summation order.
// Attention goes through the op set's attention_decode, which appends the chunk's keys and values to the
// cache and attends over each row's slots [start, current], reading earlier slots through the cache's
// row table (so kv_cache_select only rewrites that table on the host). Prefill is one call with the padded prompts
// (T = longest prompt), decoding one call per generated token (T = 1).
#include <algorithm>
#include <cmath>
#include <string>

#include "core/base/error.h"
#include "core/model/model.h"

namespace lora {

namespace {

// y = x W (+ b) (+ LoRA), the eval-mode linear_forward of model.cpp.  x (N,in), y (N,out)
void decode_linear(Backend& be, const Linear& lin, const Tensor& x, Tensor& y) {
  if (lin.b.empty())
    be.matmul(mat(y), mat(x), mat(lin.w), false, !lin.w_in_out, 1.0f, 0.0f);
  else
    be.matmul_epilogue(y, x, lin.w, false, !lin.w_in_out, Epilogue::bias, lin.b, y);
  const int64_t N = x.dim(0);
  for (const auto& ad : lin.adapters) {
    Tensor u = be.alloc({N, ad.r}, be.activation_dtype());  // (N,r) = x A^T
    be.matmul(mat(u), mat(x), mat(ad.a_val), false, true, 1.0f, 0.0f);
    be.matmul(mat_cols(y, ad.col0, ad.ncols), mat(u), mat(ad.b_val), false, true, ad.scale, 1.0f);
  }
}

// Rotary embedding of x (N, nheads*HS) at per-row absolute positions pos[n], the formula of the op set's
// rope (core/ops/ops_ref.h: angle pos * theta^(-2i/HS) in double, "rotate_half" pairs). The op numbers
// positions 0..T-1 within each sequence; decoding needs each row's own offset, so this rotates a host
// copy (a few rows per step) and uploads it back.
void rope_at(Backend& be, Tensor& x, const std::vector<int32_t>& pos, int nheads, int HS, double theta) {
  Tensor h = be.download(x);
  const int64_t N = x.dim(0), ld = x.dim(1);
  const int half = HS / 2;
  for (int64_t n = 0; n < N; ++n)
    for (int i = 0; i < half; ++i) {
      const double angle = double(pos[n]) * std::pow(theta, -2.0 * i / HS);
      const double c = std::cos(angle), s = std::sin(angle);
      for (int hd = 0; hd < nheads; ++hd) {
        float* xh = h.f32() + n * ld + int64_t(hd) * HS;
        const double x1 = xh[i], x2 = xh[i + half];
        xh[i] = float(x1 * c - x2 * s);
        xh[i + half] = float(x2 * c + x1 * s);
      }
    }
  be.upload(x, h);
}

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
  const int64_t N = int64_t(R) * T, C = cfg_.d_model, F = cfg_.d_ff, V = cfg_.vocab_size;
  const int NKV = cfg_.n_kv_head > 0 ? cfg_.n_kv_head : cfg_.n_head;
  const int64_t CKV = int64_t(NKV) * (C / cfg_.n_head);

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
  auto act = [&](int64_t cols) { return be_.alloc({N, cols}, dt); };
  auto stat = [&]() { return be_.alloc({N}, DType::f32); };
  Tensor x = act(C), pe = act(C), ln = act(C), att = act(C), proj = act(C), xm = act(C);  // (N,C)
  Tensor qkv = act(3 * C);                                                                // (N,3C)
  Tensor q = act(C), k = act(CKV), v = act(CKV);             // separate projections (N,C), (N,CKV)
  Tensor fc_pre = act(F), fc_act = act(F);                                                // (N,F)
  Tensor gate_pre = cfg_.act == ActKind::swiglu ? act(F) : Tensor();                      // (N,F)
  Tensor mean = stat(), rstd = stat();                                                    // (N)
  Tensor ids_dev = be_.alloc({1, N}, DType::i32), pos_dev = be_.alloc({1, N}, DType::i32);
  be_.upload(ids_dev, i32_host(ids));
  be_.upload(pos_dev, i32_host(pos));

  // x = wte[ids] + wpe[pos]: two lookups, since positions differ per row (rotary: wte[ids] only).
  Tensor x3 = x.view({1, N, C}), pe3 = pe.view({1, N, C});
  be_.embedding_forward(x3, ids_dev, wte_, Tensor());
  if (!wpe_.empty()) {
    be_.embedding_forward(pe3, pos_dev, wpe_, Tensor());
    be_.add(x, x, pe, 1.0f);
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

  AttentionShape shape{R, T, cfg_.n_head, NKV, int(C / cfg_.n_head), true, 0};  // window: per layer, below
  const GeluKind gelu = cfg_.act == ActKind::gelu_erf ? GeluKind::erf : GeluKind::tanh;
  auto norm = [&](Tensor& out, const Tensor& inp, const Norm& n) {
    if (cfg_.norm == NormKind::layernorm)
      be_.layernorm_forward(out, mean, rstd, inp, n.w, n.b, cfg_.norm_eps);
    else
      be_.rmsnorm_forward(out, rstd, inp, n.w, cfg_.norm_eps);
  };
  for (int l = 0; l < cfg_.n_layer; ++l) {
    Block& blk = blocks_[l];
    shape.window = cfg_.window_of(l);
    norm(ln, x, blk.ln1);
    if (!blk.qkv.hf_name.empty()) {
      decode_linear(be_, blk.qkv, ln, qkv);
      be_.attention_decode(mat(att), mat_cols(qkv, 0, C), mat_cols(qkv, C, CKV), mat_cols(qkv, C + CKV, CKV), c.k[l],
                           c.v[l], c.start_dev, c.slot_rows_dev, c.used, shape);
    } else {
      decode_linear(be_, blk.q, ln, q);
      decode_linear(be_, blk.k, ln, k);
      decode_linear(be_, blk.v, ln, v);
      if (cfg_.pos == PosKind::rotary) {  // each row at its own absolute position
        rope_at(be_, q, pos, shape.NH, shape.HS, cfg_.rope_theta);
        rope_at(be_, k, pos, shape.NKV, shape.HS, cfg_.rope_theta);
      }
      be_.attention_decode(mat(att), mat(q), mat(k), mat(v), c.k[l], c.v[l], c.start_dev, c.slot_rows_dev, c.used,
                           shape);
    }
    decode_linear(be_, blk.attn_out, att, proj);
    be_.add(xm, x, proj, 1.0f);
    norm(ln, xm, blk.ln2);
    decode_linear(be_, blk.fc, ln, fc_pre);
    if (cfg_.act == ActKind::swiglu) {
      decode_linear(be_, blk.gate, ln, gate_pre);
      be_.swiglu_forward(fc_act, gate_pre, fc_pre);
    } else {
      be_.gelu_forward(fc_act, fc_pre, gelu);
    }
    decode_linear(be_, blk.fc_out, fc_act, proj);
    be_.add(x, xm, proj, 1.0f);
  }
  norm(ln, x, lnf_);
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
