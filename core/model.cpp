// The transformer's forward and backward passes over the op set (see model.h for the contract).
// Activation shapes are written beside each buffer: N = B*T rows, C channels, F MLP width, V vocab.
#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/rng.h"

namespace lora {

namespace {
constexpr int64_t kLogitChunkBytes = 64ll << 20;  // bound on the (rows, V) logits block held at once

Linear make_linear(const std::string& name, int64_t in, int64_t out, bool w_in_out) {
  Linear lin;
  lin.hf_name = name;
  lin.in = in;
  lin.out = out;
  lin.w_in_out = w_in_out;
  return lin;
}

std::vector<int64_t> weight_shape(const Linear& lin) {
  return lin.w_in_out ? std::vector<int64_t>{lin.in, lin.out} : std::vector<int64_t>{lin.out, lin.in};
}

// The dropout stream of linear `idx` (Block::slot) in block `layer`: GPT-2's four slots keep their keys
// layer*4 + idx; the LLaMA-only slots (q, k, v, gate) get keys in a range of their own.
int linear_key(int layer, int idx) { return idx < 4 ? layer * 4 + idx : (1 << 24) + layer * 4 + (idx - 4); }
}  // namespace

// Per-step activations. Each layer keeps what its backward pass reads.
struct Model::Acts {
  int64_t cap = 0;                      // rows allocated
  int slots = 0;                        // per-layer sets: n_layer, or 1 with activation recomputation
  std::vector<Tensor> res;              // L+1 residual streams (N,C): res[l] enters block l
  std::vector<Tensor> x_mid;            // (N,C) residual after attention
  std::vector<Tensor> ln1, ln2;         // (N,C)
  std::vector<Tensor> ln1_mean, ln1_rstd, ln2_mean, ln2_rstd;  // (N)
  std::vector<Tensor> qkv;              // (N,3C)
  std::vector<Tensor> att;              // (N,C) attention output before the projection
  std::vector<Tensor> att_saved;        // backend-specific attention state
  std::vector<Tensor> fc_pre, fc_act;   // (N,F)
  std::vector<Tensor> gate_pre;         // (N,F) SwiGLU gate projection (empty without SwiGLU)
  // With separate q, k, v projections, qkv[l] holds q (N,NH*HS), k and v (N,NKV*HS) one after another.
  std::vector<std::vector<std::vector<Tensor>>> lora_u;  // [layer][linear][adapter] (N,r)
  Tensor lnf, lnf_mean, lnf_rstd;       // (N,C), (N), (N)
  // scratch
  Tensor proj;                          // (N,C)
  Tensor dres, dln, datt, dlnf;         // (N,C)
  Tensor dqkv;                          // (N,3C)
  Tensor dfc;                           // (N,F)
  Tensor dgate, dup;                    // (N,F) SwiGLU gradients (empty without SwiGLU)
  Tensor dln2;                          // (N,C) second input gradient of a norm's output, summed into dln
  Tensor xd, dxd;                       // (N,max(C,F)) dropout input and its gradient
  Tensor tokens, targets, lengths;      // device copies of the batch
};

Model::Model(Backend& be, const ModelConfig& cfg) : be_(be), cfg_(cfg), acts_(new Acts) {
  if (cfg.post_norm || !cfg.causal)
    fail_usage("model family '" + cfg.family + "' is not supported for training yet",
               "this version trains decoder checkpoints (model_type gpt2, llama, mistral, qwen2)");
  if (cfg.n_head <= 0 || cfg.d_model % cfg.n_head != 0)
    fail_usage("n_embd " + std::to_string(cfg.d_model) + " is not divisible by n_head " +
               std::to_string(cfg.n_head));
  if (cfg.head_dim != 0 && cfg.head_dim * cfg.n_head != cfg.d_model)
    fail_usage("head_dim " + std::to_string(cfg.head_dim) + " x " + std::to_string(cfg.n_head) +
               " heads differs from the hidden size " + std::to_string(cfg.d_model) + ", which this version does not support");
  const int NKV = cfg.n_kv_head > 0 ? cfg.n_kv_head : cfg.n_head;
  if (cfg.n_head % NKV != 0)
    fail_usage(std::to_string(cfg.n_head) + " heads are not a multiple of " + std::to_string(NKV) + " key/value heads");
  const int64_t C = cfg.d_model, F = cfg.d_ff, CKV = int64_t(NKV) * (C / cfg.n_head);
  // Tensor layout: GPT-2's (Conv1D weights, fused c_attn, "h.N.") or the LLaMA family's (nn.Linear,
  // separate q/k/v projections, "layers.N."). The arithmetic below follows norm, pos and act.
  const bool fused = cfg.conv1d_weights;
  DType dt = be.activation_dtype();
  wte_ = be.alloc({cfg.vocab_size, C}, dt);
  if (cfg.pos == PosKind::learned) wpe_ = be.alloc({cfg.max_positions, C}, dt);
  if (!cfg.tied_head) lm_head_ = be.alloc({cfg.vocab_size, C}, dt);
  const bool norm_bias = cfg.norm == NormKind::layernorm;
  auto make_norm = [&](const std::string& name) {
    Norm n;
    n.hf_name = name;
    n.w = be.alloc({C}, dt);
    if (norm_bias) n.b = be.alloc({C}, dt);
    return n;
  };
  auto alloc_linear = [&](Linear& lin, bool bias) {
    lin.w = be.alloc(weight_shape(lin), dt);
    if (bias) lin.b = be.alloc({lin.out}, dt);
  };
  const bool io = cfg.conv1d_weights;
  lnf_ = make_norm(fused ? "ln_f" : "norm");
  for (int l = 0; l < cfg.n_layer; ++l) {
    Block b;
    if (fused) {
      std::string p = "h." + std::to_string(l) + ".";
      b.ln1 = make_norm(p + "ln_1");
      b.ln2 = make_norm(p + "ln_2");
      b.qkv = make_linear(p + "attn.c_attn", C, 3 * C, io);
      b.attn_out = make_linear(p + "attn.c_proj", C, C, io);
      b.fc = make_linear(p + "mlp.c_fc", C, F, io);
      b.fc_out = make_linear(p + "mlp.c_proj", F, C, io);
      for (int i = 0; i < 4; ++i) alloc_linear(*b.slot(i), true);
    } else {
      std::string p = "layers." + std::to_string(l) + ".";
      b.ln1 = make_norm(p + "input_layernorm");
      b.ln2 = make_norm(p + "post_attention_layernorm");
      b.q = make_linear(p + "self_attn.q_proj", C, C, io);
      b.k = make_linear(p + "self_attn.k_proj", C, CKV, io);
      b.v = make_linear(p + "self_attn.v_proj", C, CKV, io);
      b.attn_out = make_linear(p + "self_attn.o_proj", C, C, io);
      if (cfg.act == ActKind::swiglu) {
        b.gate = make_linear(p + "mlp.gate_proj", C, F, io);
        b.fc = make_linear(p + "mlp.up_proj", C, F, io);
        b.fc_out = make_linear(p + "mlp.down_proj", F, C, io);
      } else {
        b.fc = make_linear(p + "mlp.fc1", C, F, io);
        b.fc_out = make_linear(p + "mlp.fc2", F, C, io);
      }
      for (Linear* lin : {&b.q, &b.k, &b.v}) alloc_linear(*lin, cfg.qkv_bias);
      alloc_linear(b.attn_out, cfg.o_bias);
      for (Linear* lin : {&b.gate, &b.fc, &b.fc_out})
        if (!lin->hf_name.empty()) alloc_linear(*lin, cfg.mlp_bias);
    }
    blocks_.push_back(std::move(b));
  }
}

Model::~Model() = default;

void Model::load_base(const Checkpoint& ck) {
  auto load = [&](Tensor& dst, const std::string& name) {
    Tensor host = ck.get(name, dst.shape);
    be_.upload(dst, host);
  };
  const bool fused = cfg_.conv1d_weights;
  load(wte_, fused ? "wte.weight" : "embed_tokens.weight");
  if (!wpe_.empty()) load(wpe_, "wpe.weight");
  if (!lm_head_.empty()) load(lm_head_, "lm_head.weight");
  load(lnf_.w, lnf_.hf_name + ".weight");
  if (!lnf_.b.empty()) load(lnf_.b, lnf_.hf_name + ".bias");
  for (auto& b : blocks_) {
    for (Norm* n : {&b.ln1, &b.ln2}) {
      load(n->w, n->hf_name + ".weight");
      if (!n->b.empty()) load(n->b, n->hf_name + ".bias");
    }
    for (Linear* lin : b.linears()) {
      load(lin->w, lin->hf_name + ".weight");
      if (!lin->b.empty()) load(lin->b, lin->hf_name + ".bias");
    }
  }
}

void Model::init_random(uint64_t seed) {
  // GPT-2's initialisation: N(0, 0.02) weights, N(0, 0.02/sqrt(2L)) residual projections (Radford et
  // al. 2019, section 2.3), N(0, 0.01) positions, zero biases, unit norm weights.
  Rng rng(seed);
  auto normal = [&](Tensor& t, float std) {
    Tensor h = tensor_host(t.shape);
    for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] = rng.normal() * std;
    be_.upload(t, h);
  };
  auto ones = [&](Tensor& t) { be_.fill(t, 1.0f); };
  normal(wte_, 0.02f);
  if (!wpe_.empty()) normal(wpe_, 0.01f);
  ones(lnf_.w);
  if (!lnf_.b.empty()) be_.fill(lnf_.b, 0);
  float proj_std = 0.02f / std::sqrt(2.0f * cfg_.n_layer);
  for (auto& b : blocks_) {
    ones(b.ln1.w);
    ones(b.ln2.w);
    if (!b.ln1.b.empty()) be_.fill(b.ln1.b, 0);
    if (!b.ln2.b.empty()) be_.fill(b.ln2.b, 0);
    for (Linear* lin : b.linears()) {
      normal(lin->w, (lin == &b.attn_out || lin == &b.fc_out) ? proj_std : 0.02f);
      if (!lin->b.empty()) be_.fill(lin->b, 0);
    }
  }
  if (!lm_head_.empty()) normal(lm_head_, 0.02f);
}

std::vector<TargetSlot> lora_target_slots(const std::string& target, const ModelConfig& cfg) {
  const int64_t C = cfg.d_model;
  if (!cfg.conv1d_weights) {  // separate nn.Linear projections (the LLaMA family's layout)
    if (target == "q" || target == "query" || target == "q_proj") return {{&Block::q, "q", 0, -1}};
    if (target == "k" || target == "key" || target == "k_proj") return {{&Block::k, "k", 0, -1}};
    if (target == "v" || target == "value" || target == "v_proj") return {{&Block::v, "v", 0, -1}};
    if (target == "o" || target == "o_proj") return {{&Block::attn_out, "o", 0, -1}};
    if (cfg.act == ActKind::swiglu) {
      if (target == "gate" || target == "gate_proj") return {{&Block::gate, "gate", 0, -1}};
      if (target == "up" || target == "up_proj") return {{&Block::fc, "up", 0, -1}};
      if (target == "down" || target == "down_proj") return {{&Block::fc_out, "down", 0, -1}};
    }
    fail_usage("unknown LoRA target '" + target + "' for a " + cfg.family + " model",
               "use roles q k v o gate up down, or module names q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
  }
  if (target == "q" || target == "query") return {{&Block::qkv, "q", 0, C}};
  if (target == "k" || target == "key") return {{&Block::qkv, "k", C, C}};
  if (target == "v" || target == "value") return {{&Block::qkv, "v", 2 * C, C}};
  if (target == "c_attn" || target == "qkv") return {{&Block::qkv, "qkv", 0, -1}};
  if (target == "o" || target == "attn.c_proj") return {{&Block::attn_out, "o", 0, -1}};
  if (target == "up" || target == "fc" || target == "c_fc" || target == "mlp.c_fc")
    return {{&Block::fc, "up", 0, -1}};
  if (target == "down" || target == "mlp.c_proj") return {{&Block::fc_out, "down", 0, -1}};
  if (target == "c_proj") return {{&Block::attn_out, "o", 0, -1}, {&Block::fc_out, "down", 0, -1}};
  fail_usage("unknown LoRA target '" + target + "' for a " + cfg.family + " model",
             "use roles q k v o up down, or GPT-2 module names c_attn c_proj c_fc attn.c_proj mlp.c_proj");
}

void Model::lora_init(const LoraSpec& spec) {
  spec_ = spec;
  if (spec.full) {
    // Full fine-tune: every weight trains; on fp32 backends the weights are their own masters.
    if (be_.activation_dtype() != DType::f32)
      fail_usage("full fine-tuning needs fp32 weights in this version",
                 "set train.precision: fp32 or model.device: cpu for a full fine-tune");
    for (auto& p : trainable()) *p.grad = be_.alloc(p.master->shape, DType::f32);
    return;
  }
  if (spec.r <= 0) fail_usage("lora.r must be positive, found " + std::to_string(spec.r));
  std::set<int> layers(spec.layers.begin(), spec.layers.end());
  for (int l : layers)
    if (l < 0 || l >= cfg_.n_layer)
      fail_usage("lora.layers names layer " + std::to_string(l) + " but the model has layers 0.." +
                 std::to_string(cfg_.n_layer - 1));
  std::vector<TargetSlot> slots;
  for (const auto& t : spec.targets)
    for (auto& s : lora_target_slots(t, cfg_)) slots.push_back(s);
  if (slots.empty()) fail_usage("lora.targets is empty", "name at least one target, e.g. [q, v]");
  Rng rng(spec.init_seed);
  const DType dt = be_.activation_dtype();
  const float scale = spec.rslora ? spec.alpha / std::sqrt(float(spec.r)) : spec.alpha / float(spec.r);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    if (!layers.empty() && !layers.count(l)) continue;
    for (const auto& s : slots) {
      Linear& lin = blocks_[l].*(s.linear);
      LoraAdapter ad;
      ad.role = s.role;
      ad.col0 = s.col0;
      ad.ncols = s.ncols < 0 ? lin.out : s.ncols;
      for (const auto& other : lin.adapters)
        if (ad.col0 < other.col0 + other.ncols && other.col0 < ad.col0 + ad.ncols)
          fail_usage("LoRA targets '" + other.role + "' and '" + ad.role + "' overlap on " + lin.hf_name,
                     "name each projection once (e.g. [q, v] or [c_attn], not both)");
      ad.r = spec.r;
      ad.alpha = spec.alpha;
      ad.scale = scale;
      // Kaiming-uniform with a = sqrt(5) gives bound 1/sqrt(fan_in), as nn.Linear and PEFT initialise A.
      Tensor a = tensor_host({ad.r, lin.in});
      float bound = 1.0f / std::sqrt(float(lin.in));
      for (int64_t i = 0; i < a.numel(); ++i) a.f32()[i] = (2.0f * rng.uniform() - 1.0f) * bound;
      ad.a = be_.alloc({ad.r, lin.in}, DType::f32);
      be_.upload(ad.a, a);
      ad.b = be_.alloc({ad.ncols, ad.r}, DType::f32);
      ad.da = be_.alloc(ad.a.shape, DType::f32);
      ad.db = be_.alloc(ad.b.shape, DType::f32);
      ad.a_val = dt == DType::f32 ? ad.a : be_.alloc(ad.a.shape, dt);
      ad.b_val = dt == DType::f32 ? ad.b : be_.alloc(ad.b.shape, dt);
      lin.dropout = spec.dropout;
      lin.adapters.push_back(std::move(ad));
    }
  }
  sync_values();
}

void Model::ensure_acts(int B, int T) {
  const int64_t N = int64_t(B) * T, C = cfg_.d_model, F = cfg_.d_ff;
  Acts& a = *acts_;
  const int L = cfg_.n_layer;
  const int slots = recompute_ ? 1 : L;  // per-layer activation sets kept for the backward pass
  if (N > a.cap || slots != a.slots) {
    DType dt = be_.activation_dtype();
    auto act = [&](int64_t cols) { return be_.alloc({N, cols}, dt); };
    auto stat = [&]() { return be_.alloc({N}, DType::f32); };
    a = Acts();
    a.cap = N;
    a.slots = slots;
    for (int l = 0; l <= L; ++l) a.res.push_back(act(C));
    for (int l = 0; l < slots; ++l) {
      a.x_mid.push_back(act(C));
      a.ln1.push_back(act(C));
      a.ln2.push_back(act(C));
      a.ln1_mean.push_back(stat());
      a.ln1_rstd.push_back(stat());
      a.ln2_mean.push_back(stat());
      a.ln2_rstd.push_back(stat());
      a.qkv.push_back(act(3 * C));
      a.att.push_back(act(C));
      a.fc_pre.push_back(act(F));
      a.fc_act.push_back(act(F));
      if (cfg_.act == ActKind::swiglu) a.gate_pre.push_back(act(F));
    }
    a.att_saved.resize(slots);
    a.lnf = act(C);
    a.lnf_mean = stat();
    a.lnf_rstd = stat();
    a.proj = act(C);
    a.dres = act(C);
    a.dln = act(C);
    a.datt = act(C);
    a.dlnf = act(C);
    a.dqkv = act(3 * C);
    a.dfc = act(F);
    if (cfg_.act == ActKind::swiglu) {
      a.dgate = act(F);
      a.dup = act(F);
    }
    if (!cfg_.conv1d_weights || cfg_.act == ActKind::swiglu) a.dln2 = act(C);
    a.xd = act(std::max(C, F));
    a.dxd = act(std::max(C, F));
  }
  a.lora_u.assign(L, std::vector<std::vector<Tensor>>(Block::kSlots));
}

namespace {
// The first n rows of a (cap, cols) activation buffer, viewed as (n, cols).
Tensor rows_of(const Tensor& t, int64_t n, int64_t cols) { return t.view({t.numel() / cols, cols}).rows(0, n); }

uint64_t dropout_seed(uint64_t key, int layer_key) { return rng_mix(key ^ rng_mix(uint64_t(layer_key) + 1)); }
}  // namespace

void Model::linear_forward(Linear& lin, const Tensor& x, Tensor& y, int layer, int idx, uint64_t dropout_key,
                           bool train) {
  // y = x W (+ b) (+ LoRA).  x (N,in), y (N,out)
  const int layer_key = linear_key(layer, idx);
  be_.matmul(mat(y), mat(x), mat(lin.w), false, !lin.w_in_out, 1.0f, 0.0f);
  if (!lin.b.empty()) be_.bias_add(mat(y), lin.b);
  if (lin.adapters.empty()) return;
  const int64_t N = x.dim(0);
  Tensor xd = x;
  if (train && lin.dropout > 0 && dropout_key != 0) {  // key 0: no dropout (evaluation), as in backward
    xd = rows_of(acts_->xd, N, lin.in);
    be_.dropout_forward(xd, x, lin.dropout, dropout_seed(dropout_key, layer_key), 0);
  }
  auto& us = acts_->lora_u[layer][idx];
  us.clear();
  for (auto& ad : lin.adapters) {
    Tensor u = be_.alloc({N, ad.r}, be_.activation_dtype());  // (N,r) = xd A^T
    be_.matmul(mat(u), mat(xd), mat(ad.a_val), false, true, 1.0f, 0.0f);
    be_.matmul(mat_cols(y, ad.col0, ad.ncols), mat(u), mat(ad.b_val), false, true, ad.scale, 1.0f);
    us.push_back(u);
  }
}

void Model::linear_backward(Linear& lin, const Tensor& x, const Tensor& dy, Tensor& dx, int layer, int idx,
                            uint64_t dropout_key) {
  const int layer_key = linear_key(layer, idx);
  // dx = dy W^T (overwrite); full mode: dW += x^T dy, db += colsum(dy); LoRA: dA, dB += and dx +=.
  be_.matmul(mat(dx), mat(dy), mat(lin.w), false, lin.w_in_out, 1.0f, 0.0f);
  if (!lin.dw.empty()) {
    if (lin.w_in_out)
      be_.matmul(mat(lin.dw), mat(x), mat(dy), true, false, 1.0f, 1.0f);
    else
      be_.matmul(mat(lin.dw), mat(dy), mat(x), true, false, 1.0f, 1.0f);
  }
  if (!lin.db.empty()) be_.bias_backward(lin.db, mat(dy));
  if (lin.adapters.empty()) return;
  const int64_t N = x.dim(0);
  const bool dropout = lin.dropout > 0 && dropout_key != 0;
  Tensor xd = x;
  const uint64_t seed = dropout_seed(dropout_key, layer_key);
  if (dropout) {
    xd = rows_of(acts_->xd, N, lin.in);
    be_.dropout_forward(xd, x, lin.dropout, seed, 0);  // recomputed: the mask is a function of the seed
  }
  Tensor dxd = dropout ? rows_of(acts_->dxd, N, lin.in) : dx;
  auto& us = acts_->lora_u[layer][idx];
  for (size_t i = 0; i < lin.adapters.size(); ++i) {
    LoraAdapter& ad = lin.adapters[i];
    const Tensor& u = us[i];
    MatRef dy_i = mat_cols(dy, ad.col0, ad.ncols);
    Tensor du = be_.alloc({N, ad.r}, be_.activation_dtype());
    be_.matmul(mat(ad.db), dy_i, mat(u), true, false, ad.scale, 1.0f);           // dB += s dy^T u
    be_.matmul(mat(du), dy_i, mat(ad.b_val), false, false, ad.scale, 0.0f);      // du = s dy B
    be_.matmul(mat(ad.da), mat(du), mat(xd), true, false, 1.0f, 1.0f);            // dA += du^T xd
    float beta = (dropout && i == 0) ? 0.0f : 1.0f;
    be_.matmul(mat(dxd), mat(du), mat(ad.a_val), false, false, 1.0f, beta);       // dxd (+)= du A
  }
  if (dropout) {
    be_.dropout_backward(dxd, dxd, lin.dropout, seed, 0);
    be_.add(dx, dx, dxd, 1.0f);
  }
}

LossStats Model::step(const Tensor& tokens, const Tensor& targets, const Tensor& lengths, float dscale,
                      float label_smoothing, uint64_t dropout_key, bool train) {
  const int B = int(tokens.dim(0)), T = int(tokens.dim(1));
  if (T > cfg_.max_positions)
    fail_usage("a batch has sequences of " + std::to_string(T) + " tokens but the model has " +
                   std::to_string(cfg_.max_positions) + " positions",
               "lower data.max_length to at most " + std::to_string(cfg_.max_positions));
  const int64_t N = int64_t(B) * T, C = cfg_.d_model, F = cfg_.d_ff, V = cfg_.vocab_size;
  const int L = cfg_.n_layer;
  const bool backward = dscale != 0.0f;
  if (!train) dropout_key = 0;
  ensure_acts(B, T);
  Acts& a = *acts_;
  a.tokens = be_.alloc({B, T}, DType::i32);
  be_.upload(a.tokens, tokens);
  a.lengths = be_.alloc({B}, DType::i32);
  be_.upload(a.lengths, lengths);
  a.targets = be_.alloc({N}, DType::i32);
  be_.upload(a.targets, targets);

  if (cfg_.sliding_window > 0 && T > cfg_.sliding_window)
    fail_usage("a batch has sequences of " + std::to_string(T) + " tokens, longer than the model's sliding window of " +
                   std::to_string(cfg_.sliding_window) + ", which this version does not implement",
               "lower data.max_length to at most " + std::to_string(cfg_.sliding_window));
  AttentionShape shape{B, T, cfg_.n_head, cfg_.n_kv_head > 0 ? cfg_.n_kv_head : cfg_.n_head,
                       int(C / cfg_.n_head), true};
  const int64_t CKV = int64_t(shape.NKV) * shape.HS;
  auto R = [&](const Tensor& t, int64_t cols) { return rows_of(t, N, cols); };
  // Separate q, k, v (N,C), (N,CKV), (N,CKV) packed one after another in a (cap,3C) buffer.
  auto part = [&](const Tensor& t, int64_t off, int64_t cols) {
    return t.view({t.numel()}).rows(off, N * cols).view({N, cols});
  };
  auto qpart = [&](const Tensor& t) { return part(t, 0, C); };
  auto kpart = [&](const Tensor& t) { return part(t, N * C, CKV); };
  auto vpart = [&](const Tensor& t) { return part(t, N * C + N * CKV, CKV); };
  const bool rotary = cfg_.pos == PosKind::rotary, swiglu = cfg_.act == ActKind::swiglu;
  auto norm_fwd = [&](Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Norm& n) {
    if (cfg_.norm == NormKind::layernorm)
      be_.layernorm_forward(out, mean, rstd, inp, n.w, n.b, cfg_.norm_eps);
    else
      be_.rmsnorm_forward(out, rstd, inp, n.w, cfg_.norm_eps);
  };
  auto norm_bwd = [&](Tensor& dinp, Norm& n, const Tensor& dout, const Tensor& inp, const Tensor& mean,
                      const Tensor& rstd) {
    if (cfg_.norm == NormKind::layernorm)
      be_.layernorm_backward(dinp, n.dw, n.db, dout, inp, n.w, mean, rstd);
    else
      be_.rmsnorm_backward(dinp, n.dw, dout, inp, n.w, rstd);
  };

  // ---- forward ----
  Tensor x0 = R(a.res[0], C).view({B, T, C});
  be_.embedding_forward(x0, a.tokens, wte_, wpe_);
  // Block l from the residual res[l] to res[l+1]; its activations go to set `slot(l)`. With
  // recomputation there is one set, refilled for each block again during the backward pass.
  auto slot = [&](int l) { return recompute_ ? 0 : l; };
  auto block_forward = [&](int l) {
    Block& blk = blocks_[l];
    const int k = slot(l);
    const bool fused = !blk.qkv.hf_name.empty();
    Tensor res = R(a.res[l], C), ln1 = R(a.ln1[k], C), att = R(a.att[k], C);
    Tensor m1 = a.ln1_mean[k].rows(0, N), r1 = a.ln1_rstd[k].rows(0, N);
    norm_fwd(ln1, m1, r1, res, blk.ln1);
    if (fused) {
      Tensor qkv = R(a.qkv[k], 3 * C);
      linear_forward(blk.qkv, ln1, qkv, l, 0, dropout_key, train);
      a.att_saved[k] = be_.attention_forward(mat(att), mat_cols(qkv, 0, C), mat_cols(qkv, C, C),
                                             mat_cols(qkv, 2 * C, C), shape, a.lengths);
    } else {
      Tensor q = qpart(a.qkv[k]), kk = kpart(a.qkv[k]), v = vpart(a.qkv[k]);
      linear_forward(blk.q, ln1, q, l, 4, dropout_key, train);
      linear_forward(blk.k, ln1, kk, l, 5, dropout_key, train);
      linear_forward(blk.v, ln1, v, l, 6, dropout_key, train);
      if (rotary) {  // positions 0..T-1: right padding keeps every sequence at position 0
        be_.rope(mat(q), B, T, shape.NH, shape.HS, cfg_.rope_theta, false);
        be_.rope(mat(kk), B, T, shape.NKV, shape.HS, cfg_.rope_theta, false);
      }
      a.att_saved[k] = be_.attention_forward(mat(att), mat(q), mat(kk), mat(v), shape, a.lengths);
    }
    Tensor proj = R(a.proj, C), xm = R(a.x_mid[k], C);
    linear_forward(blk.attn_out, att, proj, l, 1, dropout_key, train);
    be_.add(xm, res, proj, 1.0f);
    Tensor ln2 = R(a.ln2[k], C), m2 = a.ln2_mean[k].rows(0, N), r2 = a.ln2_rstd[k].rows(0, N);
    norm_fwd(ln2, m2, r2, xm, blk.ln2);
    Tensor fc_pre = R(a.fc_pre[k], F), fc_act = R(a.fc_act[k], F);
    linear_forward(blk.fc, ln2, fc_pre, l, 2, dropout_key, train);
    if (swiglu) {
      Tensor gate_pre = R(a.gate_pre[k], F);
      linear_forward(blk.gate, ln2, gate_pre, l, 7, dropout_key, train);
      be_.swiglu_forward(fc_act, gate_pre, fc_pre);
    } else {
      be_.gelu_forward(fc_act, fc_pre, cfg_.act == ActKind::gelu_erf ? GeluKind::erf : GeluKind::tanh);
    }
    linear_forward(blk.fc_out, fc_act, proj, l, 3, dropout_key, train);
    Tensor res_next = R(a.res[l + 1], C);
    be_.add(res_next, xm, proj, 1.0f);
  };
  for (int l = 0; l < L; ++l) block_forward(l);
  Tensor lnf = R(a.lnf, C), mf = a.lnf_mean.rows(0, N), rf = a.lnf_rstd.rows(0, N);
  norm_fwd(lnf, mf, rf, R(a.res[L], C), lnf_);

  // ---- LM head and loss, a block of rows at a time: no (N,V) logits buffer ----
  LossStats stats;
  Tensor dlnf = R(a.dlnf, C);
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(N, kLogitChunkBytes / (4 * V)));
  Tensor logits = be_.alloc({chunk, V}, be_.activation_dtype());
  Tensor losses = be_.alloc({chunk}, DType::f32);
  Tensor argmax = be_.alloc({chunk}, DType::i32);
  Tensor& head = this->head();
  Tensor& dhead = cfg_.tied_head ? dwte_ : dlm_head_;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t n = std::min(chunk, N - r0);
    Tensor lg = logits.rows(0, n), ls = losses.rows(0, n), am = argmax.rows(0, n);
    Tensor x = lnf.rows(r0, n);
    be_.matmul(mat(lg), mat(x), mat(head), false, true, 1.0f, 0.0f);  // (n,V) = x head^T
    be_.cross_entropy(mat(lg), ls, am, a.targets.rows(r0, n), label_smoothing, dscale);
    Tensor hl = be_.download(ls), ha = be_.download(am);
    const int32_t* tg = targets.i32() + r0;
    for (int64_t i = 0; i < n; ++i) {
      if (tg[i] < 0) continue;
      stats.loss_sum += hl.f32()[i];
      stats.tokens += 1;
      stats.correct += ha.i32()[i] == tg[i];
    }
    if (backward) {
      be_.matmul(mat(dlnf.rows(r0, n)), mat(lg), mat(head), false, false, 1.0f, 0.0f);  // (n,C)
      if (!dhead.empty()) be_.matmul(mat(dhead), mat(lg), mat(x), true, false, 1.0f, 1.0f);
    }
  }
  if (!backward) return stats;

  // ---- backward ----
  Tensor dres = R(a.dres, C), dln = R(a.dln, C), datt = R(a.datt, C);
  be_.fill(dres, 0);
  norm_bwd(dres, lnf_, dlnf, R(a.res[L], C), mf, rf);
  for (int l = L - 1; l >= 0; --l) {
    if (recompute_) block_forward(l);  // rebuild block l's activations from its residual input
    Block& blk = blocks_[l];
    const int k = slot(l);
    const bool fused = !blk.qkv.hf_name.empty();
    Tensor res = R(a.res[l], C), xm = R(a.x_mid[k], C), ln1 = R(a.ln1[k], C), ln2 = R(a.ln2[k], C);
    Tensor att = R(a.att[k], C);
    Tensor fc_pre = R(a.fc_pre[k], F), fc_act = R(a.fc_act[k], F), dfc = R(a.dfc, F);
    // MLP: res[l+1] = xm + fc_out(gelu(fc(ln2(xm)))) or xm + fc_out(silu(gate(ln2(xm))) * fc(ln2(xm)))
    linear_backward(blk.fc_out, fc_act, dres, dfc, l, 3, dropout_key);
    if (swiglu) {
      Tensor dgate = R(a.dgate, F), dup = R(a.dup, F), dln2 = R(a.dln2, C);
      be_.swiglu_backward(dgate, dup, dfc, R(a.gate_pre[k], F), fc_pre);
      linear_backward(blk.fc, ln2, dup, dln, l, 2, dropout_key);
      linear_backward(blk.gate, ln2, dgate, dln2, l, 7, dropout_key);
      be_.add(dln, dln, dln2, 1.0f);
    } else {
      be_.gelu_backward(dfc, dfc, fc_pre, cfg_.act == ActKind::gelu_erf ? GeluKind::erf : GeluKind::tanh);
      linear_backward(blk.fc, ln2, dfc, dln, l, 2, dropout_key);
    }
    norm_bwd(dres, blk.ln2, dln, xm, a.ln2_mean[k].rows(0, N), a.ln2_rstd[k].rows(0, N));
    // attention: xm = res + attn_out(attention(qkv(ln1(res))))
    linear_backward(blk.attn_out, att, dres, datt, l, 1, dropout_key);
    if (fused) {
      Tensor qkv = R(a.qkv[k], 3 * C), dqkv = R(a.dqkv, 3 * C);
      be_.attention_backward(mat_cols(dqkv, 0, C), mat_cols(dqkv, C, C), mat_cols(dqkv, 2 * C, C), mat(datt),
                             mat_cols(qkv, 0, C), mat_cols(qkv, C, C), mat_cols(qkv, 2 * C, C), mat(att),
                             a.att_saved[k], shape, a.lengths);
      linear_backward(blk.qkv, ln1, dqkv, dln, l, 0, dropout_key);
    } else {
      Tensor q = qpart(a.qkv[k]), kk = kpart(a.qkv[k]), v = vpart(a.qkv[k]);
      Tensor dq = qpart(a.dqkv), dk = kpart(a.dqkv), dv = vpart(a.dqkv), dln2 = R(a.dln2, C);
      be_.attention_backward(mat(dq), mat(dk), mat(dv), mat(datt), mat(q), mat(kk), mat(v), mat(att),
                             a.att_saved[k], shape, a.lengths);
      if (rotary) {  // the gradient of a rotation is the inverse rotation of the gradient
        be_.rope(mat(dq), B, T, shape.NH, shape.HS, cfg_.rope_theta, true);
        be_.rope(mat(dk), B, T, shape.NKV, shape.HS, cfg_.rope_theta, true);
      }
      linear_backward(blk.q, ln1, dq, dln, l, 4, dropout_key);
      linear_backward(blk.k, ln1, dk, dln2, l, 5, dropout_key);
      be_.add(dln, dln, dln2, 1.0f);
      linear_backward(blk.v, ln1, dv, dln2, l, 6, dropout_key);
      be_.add(dln, dln, dln2, 1.0f);
    }
    norm_bwd(dres, blk.ln1, dln, res, a.ln1_mean[k].rows(0, N), a.ln1_rstd[k].rows(0, N));
  }
  if (!dwte_.empty() || !dwpe_.empty())
    be_.embedding_backward(dwte_, dwpe_, dres.view({B, T, C}), a.tokens);
  return stats;
}

Tensor Model::logits(const Tensor& tokens, const Tensor& lengths) {
  // Forward without a loss, then the LM head over every row.
  const int B = int(tokens.dim(0)), T = int(tokens.dim(1));
  const int64_t N = int64_t(B) * T, V = cfg_.vocab_size, C = cfg_.d_model;
  Tensor targets = tensor_host({B, T}, DType::i32);
  for (int64_t i = 0; i < N; ++i) targets.i32()[i] = -100;
  step(tokens, targets, lengths, 0.0f, 0.0f, 0, false);
  Tensor lg = be_.alloc({N, V}, be_.activation_dtype());
  be_.matmul(mat(lg), mat(rows_of(acts_->lnf, N, C)), mat(head()), false, true, 1.0f, 0.0f);
  return be_.download(lg).view({B, T, V});
}

}  // namespace lora
