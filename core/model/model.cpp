// The transformer's forward and backward passes over the op set (see model.h for the contract); the
// classification head's step is in core/model/model_classify.cpp, incremental decoding in
// core/model/model_decode.cpp. Activation shapes are written beside each buffer: N = B*T rows, C channels, F
// MLP width, V vocab.
#include "core/model/model.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "core/base/error.h"
#include "core/base/rng.h"
#include "core/formats/checkpoint.h"
#include "core/formats/family.h"
#include "core/model/model_internal.h"

namespace lora {

using model_internal::dropout_seed;
using model_internal::rows_of;

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

// The model's own dropout streams, in a range of their own (the classification head's is 1 << 25): block
// `layer`'s attention output (site 0), MLP output (site 1) and attention probabilities (site 2); the
// embeddings' output.
enum class DropSite { attn_out = 0, mlp_out = 1, attn_probs = 2 };
int block_drop_key(int layer, DropSite site) { return (1 << 26) + layer * 4 + int(site); }
constexpr int kEmbeddingDropKey = (1 << 26) - 1;
}  // namespace

Model::Model(Backend& be, const ModelConfig& cfg) : be_(be), cfg_(cfg), acts_(new Acts) {
  if (cfg.post_norm && cfg.causal)
    fail_usage("model family '" + cfg.family + "': post-norm decoders are not supported",
               "this version trains pre-norm decoders (gpt2, llama, mistral, qwen2) and post-norm encoders (roberta)");
  if (cfg.head == HeadKind::classifier && cfg.causal)
    fail_usage("model family '" + cfg.family + "': a classification head needs an encoder",
               "classification heads are implemented for RoBERTa");
  if (cfg.n_head <= 0 || cfg.d_model % cfg.n_head != 0)
    fail_usage("n_embd " + std::to_string(cfg.d_model) + " is not divisible by n_head " +
               std::to_string(cfg.n_head));
  if (cfg.head_dim != 0 && cfg.head_dim * cfg.n_head != cfg.d_model)
    fail_usage("head_dim " + std::to_string(cfg.head_dim) + " x " + std::to_string(cfg.n_head) +
               " heads differs from the hidden size " + std::to_string(cfg.d_model) + ", which this version does not support");
  const int NKV = cfg.n_kv_head > 0 ? cfg.n_kv_head : cfg.n_head;
  if (cfg.n_head % NKV != 0)
    fail_usage(std::to_string(cfg.n_head) + " heads are not a multiple of " + std::to_string(NKV) + " key/value heads");
  if (!cfg.sliding_layers.empty() && int64_t(cfg.sliding_layers.size()) != cfg.n_layer)
    throw std::logic_error("ModelConfig: sliding_layers has " + std::to_string(cfg.sliding_layers.size()) +
                           " entries for " + std::to_string(cfg.n_layer) + " layers");
  const int64_t C = cfg.d_model, F = cfg.d_ff, CKV = int64_t(NKV) * (C / cfg.n_head);
  // The tensor names are the family's (core/formats/family_<name>.cpp); the shapes and the arithmetic
  // follow the config's fields.
  const Family& family = family_of(cfg);
  DType dt = be.activation_dtype();
  wte_name_ = family.embed_tokens;
  wpe_name_ = family.embed_positions;
  wte_ = be.alloc({cfg.vocab_size, C}, dt);
  if (cfg.pos == PosKind::learned) wpe_ = be.alloc({cfg.position_offset + cfg.max_positions, C}, dt);
  if (cfg.type_vocab_size > 0) {
    tte_name_ = family.embed_types;
    tte_ = be.alloc({cfg.type_vocab_size, C}, dt);
  }
  if (!cfg.tied_head && cfg.head == HeadKind::lm) lm_head_ = be.alloc({cfg.vocab_size, C}, dt);
  const bool norm_bias = cfg.norm == NormKind::layernorm;
  auto make_norm = [&](const std::string& name) {
    Norm n;
    n.hf_name = name;
    n.w = be.alloc({C}, dt);
    if (norm_bias) n.b = be.alloc({C}, dt);
    return n;
  };
  if (cfg.post_norm)
    ln_emb_ = make_norm(family.embed_norm);
  else
    lnf_ = make_norm(family.final_norm);
  // Each slot's shape (in, out) and whether it carries a bias, by LinearSlot: a fused qkv holds q, then
  // the key and value heads.
  const int64_t shape[Block::kSlots][2] = {{C, C + 2 * CKV}, {C, C}, {C, F}, {F, C}, {C, C}, {C, CKV}, {C, CKV}, {C, F}};
  const bool bias[Block::kSlots] = {cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias, cfg.mlp_bias,
                                    cfg.qkv_bias, cfg.qkv_bias, cfg.qkv_bias, cfg.mlp_bias};
  for (int l = 0; l < cfg.n_layer; ++l) {
    const BlockNames names = family.block_names(cfg, l);
    Block b;
    b.ln1 = make_norm(names.ln1);
    b.ln2 = make_norm(names.ln2);
    for (int i = 0; i < Block::kSlots; ++i) {
      if (names.linear[i].empty()) continue;
      Linear& lin = *b.slot(i);
      lin = make_linear(names.linear[i], shape[i][0], shape[i][1], cfg.conv1d_weights);
      lin.w = be.alloc(weight_shape(lin), dt);
      if (bias[i]) lin.b = be.alloc({lin.out}, dt);
    }
    blocks_.push_back(std::move(b));
  }
  if (cfg.head == HeadKind::classifier) {
    if (cfg.num_labels <= 0) fail_usage("a classification head needs num_labels >= 1, found " + std::to_string(cfg.num_labels));
    const int64_t NL = cfg.num_labels;
    auto master = [&](std::vector<int64_t> shape, Tensor& val, Tensor& grad) {
      Tensor m = be.alloc(shape, DType::f32);
      val = dt == DType::f32 ? m : be.alloc(shape, dt);
      grad = be.alloc(shape, DType::f32);
      return m;
    };
    cls_.dense_w = master({C, C}, cls_.dense_w_val, cls_.ddense_w);
    cls_.dense_b = master({C}, cls_.dense_b_val, cls_.ddense_b);
    cls_.out_w = master({NL, C}, cls_.out_w_val, cls_.dout_w);
    cls_.out_b = master({NL}, cls_.out_b_val, cls_.dout_b);
  }
}

Model::~Model() = default;

bool Model::checkpoint_head_check(const Checkpoint& ck) const {
  if (cfg_.head != HeadKind::classifier || !ck.has("classifier.out_proj.weight")) return false;
  const std::vector<int64_t> stored = ck.shape("classifier.out_proj.weight");
  if (stored != cls_.out_w.shape)
    fail_usage("the checkpoint's classification head 'classifier.out_proj.weight' has shape " +
                   tensor_host(stored).shape_str() + " but the model is set up for " + std::to_string(cfg_.num_labels) +
                   " labels (model.num_labels)",
               "set model.num_labels to the checkpoint's number of labels, or start from a checkpoint without "
               "a classification head");
  return true;
}

void Model::load_base(const Checkpoint& ck, bool with_head) {
  auto load = [&](Tensor& dst, const std::string& name) {
    Tensor host = ck.get(name, dst.shape);
    be_.upload(dst, host);
  };
  load(wte_, wte_name_);
  if (!wpe_.empty()) load(wpe_, wpe_name_);
  if (!tte_.empty()) load(tte_, tte_name_);
  if (!lm_head_.empty()) load(lm_head_, "lm_head.weight");
  for (Norm* n : {&lnf_, &ln_emb_}) {
    if (!n->w.empty()) load(n->w, n->hf_name + ".weight");
    if (!n->b.empty()) load(n->b, n->hf_name + ".bias");
  }
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
  // A RobertaForSequenceClassification checkpoint carries its head; a pretrained encoder (roberta-base,
  // saved as RobertaForMaskedLM) does not, and lora_init then initialises it as transformers does.
  if (with_head && checkpoint_head_check(ck)) {
    classifier_set(ck.get("classifier.dense.weight", cls_.dense_w.shape),
                   ck.get("classifier.dense.bias", cls_.dense_b.shape), ck.get("classifier.out_proj.weight", cls_.out_w.shape),
                   ck.get("classifier.out_proj.bias", cls_.out_b.shape));
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
  if (!tte_.empty()) normal(tte_, 0.02f);
  for (Norm* n : {&lnf_, &ln_emb_}) {
    if (!n->w.empty()) ones(n->w);
    if (!n->b.empty()) be_.fill(n->b, 0);
  }
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
  if (cfg_.head == HeadKind::classifier) classifier_init(seed);
}

std::vector<TargetSlot> lora_target_slots(const std::string& target, const ModelConfig& cfg) {
  static_assert(Block::kSlots == kLinearSlots, "Block::slot numbers the slots as LinearSlot does");
  static constexpr Linear Block::*kMember[Block::kSlots] = {&Block::qkv, &Block::attn_out, &Block::fc, &Block::fc_out,
                                                            &Block::q,   &Block::k,        &Block::v,  &Block::gate};
  const Family& family = family_of(cfg);
  const int64_t C = cfg.d_model;
  std::vector<TargetSlot> out;
  for (const TargetAlias& a : family.targets(cfg))
    if (target == a.name)
      out.push_back({kMember[int(a.slot)], a.role, a.col_block * C, a.ncol_blocks ? a.ncol_blocks * C : -1});
  if (out.empty())
    fail_usage("unknown LoRA target '" + target + "' for a " + cfg.family + " model", family.targets_hint);
  return out;
}

void Model::lora_init(const LoraSpec& spec) {
  spec_ = spec;
  if (cfg_.head == HeadKind::classifier && !cls_.loaded) classifier_init(spec.init_seed);
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

void Model::ensure_acts(int B, int T, bool decoding) {
  const int64_t N = int64_t(B) * T, C = cfg_.d_model, F = cfg_.d_ff;
  Acts& a = *acts_;
  const int L = cfg_.n_layer;
  const int slots = recompute_ || decoding ? 1 : L;  // per-layer activation sets kept for the backward pass
  if (N > a.cap || (!decoding && slots != a.slots)) {
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
    if (cfg_.post_norm) {
      a.emb = act(C);
      a.emb_mean = stat();
      a.emb_rstd = stat();
    }
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

void Model::linear_forward(Linear& lin, const Tensor& x, Tensor& y, int layer, int idx, uint64_t dropout_key,
                           bool train, Tensor* gelu_out) {
  // y = x W (+ b) (+ LoRA).  x (N,in), y (N,out)
  const int layer_key = linear_key(layer, idx);
  const bool trans_w = !lin.w_in_out;
  if (gelu_out && lin.adapters.empty()) {  // the GELU follows the product directly: one fused pass
    be_.matmul_epilogue(*gelu_out, x, lin.w, false, trans_w, Epilogue::bias_gelu, lin.b, y);
    return;
  }
  if (lin.b.empty())
    be_.matmul(mat(y), mat(x), mat(lin.w), false, trans_w, 1.0f, 0.0f);
  else
    be_.matmul_epilogue(y, x, lin.w, false, trans_w, Epilogue::bias, lin.b, y);
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
  if (gelu_out) be_.gelu_forward(*gelu_out, y, GeluKind::tanh);
}

void Model::linear_backward(Linear& lin, const Tensor& x, const Tensor& dy, Tensor& dx, int layer, int idx,
                            uint64_t dropout_key, Tensor* gelu_in) {
  const int layer_key = linear_key(layer, idx);
  // dx = dy W^T (overwrite); full mode: dW += x^T dy, db += colsum(dy); LoRA: dA, dB += and dx +=.
  if (gelu_in && lin.adapters.empty())  // nothing is added to dx later: fuse the GELU's backward
    be_.matmul_epilogue(dx, dy, lin.w, false, lin.w_in_out, Epilogue::dgelu, Tensor(), *gelu_in);
  else
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
  if (gelu_in) be_.gelu_backward(dx, dx, *gelu_in, GeluKind::tanh);
}

void Model::set_dropout(float hidden, float attention) {
  for (float p : {hidden, attention})
    if (!(p >= 0.0f && p < 1.0f))
      throw std::invalid_argument("Model::set_dropout: p = " + std::to_string(p) + " is outside [0, 1)");
  hidden_dropout_ = hidden;
  attention_dropout_ = attention;
}

Model::Pass Model::pass_begin(const Tensor& tokens, const Tensor& lengths, uint64_t dropout_key, bool train) {
  Pass p;
  p.B = int(tokens.dim(0));
  p.T = int(tokens.dim(1));
  p.N = int64_t(p.B) * p.T;
  if (p.T > cfg_.max_positions)
    fail_usage("a batch has sequences of " + std::to_string(p.T) + " tokens but the model has " +
                   std::to_string(cfg_.max_positions) + " positions",
               "lower data.max_length to at most " + std::to_string(cfg_.max_positions));
  p.train = train;
  p.dropout_key = train ? dropout_key : 0;
  p.hidden_p = p.dropout_key != 0 ? hidden_dropout_ : 0.0f;
  p.attention_p = p.dropout_key != 0 ? attention_dropout_ : 0.0f;
  // The window is per layer (ModelConfig::window_of): block_forward and block_backward set it.
  p.shape = AttentionShape{p.B, p.T, cfg_.n_head, cfg_.n_kv_head > 0 ? cfg_.n_kv_head : cfg_.n_head,
                           int(cfg_.d_model / cfg_.n_head), cfg_.causal, 0};
  ensure_acts(p.B, p.T);
  Acts& a = *acts_;
  a.tokens = be_.alloc({p.B, p.T}, DType::i32);
  be_.upload(a.tokens, tokens);
  a.lengths = be_.alloc({p.B}, DType::i32);
  be_.upload(a.lengths, lengths);
  return p;
}

void Model::norm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Norm& n) {
  if (cfg_.norm == NormKind::layernorm)
    be_.layernorm_forward(out, mean, rstd, inp, n.w, n.b, cfg_.norm_eps);
  else
    be_.rmsnorm_forward(out, rstd, inp, n.w, cfg_.norm_eps);
}

void Model::norm_backward(Tensor& dinp, Norm& n, const Tensor& dout, const Tensor& inp, const Tensor& mean,
                          const Tensor& rstd) {
  if (cfg_.norm == NormKind::layernorm)
    be_.layernorm_backward(dinp, n.dw, n.db, dout, inp, n.w, mean, rstd);
  else
    be_.rmsnorm_backward(dinp, n.dw, dout, inp, n.w, rstd);
}

namespace {
// Separate q, k, v (N,C), (N,CKV), (N,CKV) packed one after another in a (cap,3C) buffer.
Tensor qkv_part(const Tensor& t, int64_t off, int64_t N, int64_t cols) {
  return t.view({t.numel()}).rows(off, N * cols).view({N, cols});
}
}  // namespace

// Block l from the residual res[l] to res[l+1]; its activations go to set `slot` (one set with
// activation recomputation, refilled for each block again during the backward pass, and when decoding).
// Decoding (p.cache) changes only where attention finds its keys and the positions rotary embeddings use.
//   pre-norm  (GPT-2, LLaMA): xm = res + o(attn(ln1(res))),  res' = xm + mlp(ln2(xm))
//   post-norm (RoBERTa):      xm = res + o(attn(res)), x1 = ln1(xm) (kept in ln1),
//                             s2 = x1 + mlp(x1) (kept in ln2), res' = ln2(s2)
void Model::block_forward(const Pass& p, int l) {
  Acts& a = *acts_;
  const int64_t N = p.N, C = cfg_.d_model, F = cfg_.d_ff;
  const int64_t CKV = int64_t(p.shape.NKV) * p.shape.HS;
  const int B = p.B, T = p.T;
  auto R = [&](const Tensor& t, int64_t cols) { return rows_of(t, N, cols); };
  const bool rotary = cfg_.pos == PosKind::rotary, swiglu = cfg_.act == ActKind::swiglu, post = cfg_.post_norm;
  Block& blk = blocks_[l];
  const int k = recompute_ || p.cache ? 0 : l;
  const bool fused = !blk.qkv.hf_name.empty();
  const AttentionDropout drop{p.attention_p, dropout_seed(p.dropout_key, block_drop_key(l, DropSite::attn_probs)), 0};
  AttentionShape shape = p.shape;
  shape.window = cfg_.window_of(l);
  Tensor res = R(a.res[l], C), ln1 = R(a.ln1[k], C), att = R(a.att[k], C);
  // Attention over the pass's own keys or, decoding, over the cache, which first takes this chunk's keys
  // and values (the decoding attention keeps no state for a backward pass).
  auto attend = [&](const MatRef& q, const MatRef& kk, const MatRef& v) {
    if (!p.cache) return be_.attention_forward(mat(att), q, kk, v, shape, a.lengths, drop);
    KvCache& c = *p.cache;
    be_.attention_decode(mat(att), q, kk, v, c.k[l], c.v[l], c.start_dev, c.slot_rows_dev, c.used, shape);
    return Tensor();
  };
  Tensor m1 = a.ln1_mean[k].rows(0, N), r1 = a.ln1_rstd[k].rows(0, N);
  if (!post) norm_forward(ln1, m1, r1, res, blk.ln1);
  const Tensor& attn_in = post ? res : ln1;
  if (fused) {
    Tensor qkv = R(a.qkv[k], 3 * C);
    linear_forward(blk.qkv, attn_in, qkv, l, 0, p.dropout_key, p.train);
    a.att_saved[k] = attend(mat_cols(qkv, 0, C), mat_cols(qkv, C, C), mat_cols(qkv, 2 * C, C));
  } else {
    Tensor q = qkv_part(a.qkv[k], 0, N, C), kk = qkv_part(a.qkv[k], N * C, N, CKV),
           v = qkv_part(a.qkv[k], N * C + N * CKV, N, CKV);
    linear_forward(blk.q, attn_in, q, l, 4, p.dropout_key, p.train);
    linear_forward(blk.k, attn_in, kk, l, 5, p.dropout_key, p.train);
    linear_forward(blk.v, attn_in, v, l, 6, p.dropout_key, p.train);
    if (rotary && p.cache) {  // decoding: each row at its own absolute position
      be_.rope_at(mat(q), p.positions, p.shape.NH, p.shape.HS, cfg_.rope_theta);
      be_.rope_at(mat(kk), p.positions, p.shape.NKV, p.shape.HS, cfg_.rope_theta);
    } else if (rotary) {  // positions 0..T-1: right padding keeps every sequence at position 0
      be_.rope(mat(q), B, T, p.shape.NH, p.shape.HS, cfg_.rope_theta, false);
      be_.rope(mat(kk), B, T, p.shape.NKV, p.shape.HS, cfg_.rope_theta, false);
    }
    a.att_saved[k] = attend(mat(q), mat(kk), mat(v));
  }
  Tensor proj = R(a.proj, C), xm = R(a.x_mid[k], C);
  linear_forward(blk.attn_out, att, proj, l, 1, p.dropout_key, p.train);
  if (p.hidden_p > 0)
    be_.dropout_forward(proj, proj, p.hidden_p, dropout_seed(p.dropout_key, block_drop_key(l, DropSite::attn_out)), 0);
  be_.add(xm, res, proj, 1.0f);
  Tensor ln2 = R(a.ln2[k], C), m2 = a.ln2_mean[k].rows(0, N), r2 = a.ln2_rstd[k].rows(0, N);
  if (post)
    norm_forward(ln1, m1, r1, xm, blk.ln1);
  else
    norm_forward(ln2, m2, r2, xm, blk.ln2);
  const Tensor& mlp_in = post ? ln1 : ln2;
  Tensor fc_pre = R(a.fc_pre[k], F), fc_act = R(a.fc_act[k], F);
  if (swiglu) {
    linear_forward(blk.fc, mlp_in, fc_pre, l, 2, p.dropout_key, p.train);
    Tensor gate_pre = R(a.gate_pre[k], F);
    linear_forward(blk.gate, mlp_in, gate_pre, l, 7, p.dropout_key, p.train);
    be_.swiglu_forward(fc_act, gate_pre, fc_pre);
  } else if (cfg_.act == ActKind::gelu_tanh) {
    linear_forward(blk.fc, mlp_in, fc_pre, l, 2, p.dropout_key, p.train, &fc_act);  // GELU fused where it can be
  } else {
    linear_forward(blk.fc, mlp_in, fc_pre, l, 2, p.dropout_key, p.train);
    be_.gelu_forward(fc_act, fc_pre, GeluKind::erf);
  }
  linear_forward(blk.fc_out, fc_act, proj, l, 3, p.dropout_key, p.train);
  if (p.hidden_p > 0)
    be_.dropout_forward(proj, proj, p.hidden_p, dropout_seed(p.dropout_key, block_drop_key(l, DropSite::mlp_out)), 0);
  Tensor res_next = R(a.res[l + 1], C);
  if (post) {
    be_.add(ln2, ln1, proj, 1.0f);
    norm_forward(res_next, m2, r2, ln2, blk.ln2);
  } else {
    be_.add(res_next, xm, proj, 1.0f);
  }
}

// a.dres holds d res[l+1] on entry and d res[l] on return.
void Model::block_backward(const Pass& p, int l) {
  Acts& a = *acts_;
  const int64_t N = p.N, C = cfg_.d_model, F = cfg_.d_ff;
  const int64_t CKV = int64_t(p.shape.NKV) * p.shape.HS;
  const int B = p.B, T = p.T;
  auto R = [&](const Tensor& t, int64_t cols) { return rows_of(t, N, cols); };
  const bool rotary = cfg_.pos == PosKind::rotary, swiglu = cfg_.act == ActKind::swiglu, post = cfg_.post_norm;
  Block& blk = blocks_[l];
  const int k = recompute_ ? 0 : l;
  const bool fused = !blk.qkv.hf_name.empty();
  const uint64_t key = p.dropout_key;
  const AttentionDropout drop{p.attention_p, dropout_seed(key, block_drop_key(l, DropSite::attn_probs)), 0};
  AttentionShape shape = p.shape;
  shape.window = cfg_.window_of(l);
  Tensor dres = R(a.dres, C), dln = R(a.dln, C), datt = R(a.datt, C);
  // The gradient of a projection's output before its hidden dropout, in the forward's scratch (free here).
  Tensor dproj = R(a.proj, C);
  auto hidden_dropout_backward = [&](const Tensor& dy, DropSite site) -> const Tensor& {
    if (p.hidden_p == 0) return dy;
    be_.dropout_backward(dproj, dy, p.hidden_p, dropout_seed(key, block_drop_key(l, site)), 0);
    return dproj;
  };
  Tensor res = R(a.res[l], C), xm = R(a.x_mid[k], C), ln1 = R(a.ln1[k], C), ln2 = R(a.ln2[k], C);
  Tensor m1 = a.ln1_mean[k].rows(0, N), r1 = a.ln1_rstd[k].rows(0, N);
  Tensor m2 = a.ln2_mean[k].rows(0, N), r2 = a.ln2_rstd[k].rows(0, N);
  Tensor att = R(a.att[k], C);
  Tensor fc_pre = R(a.fc_pre[k], F), fc_act = R(a.fc_act[k], F), dfc = R(a.dfc, F);
  // MLP. Pre-norm: res[l+1] = xm + mlp(ln2(xm)); dres carries on as d xm, the MLP's input gradient is
  // summed into it by ln2's backward. Post-norm: res[l+1] = ln2(x1 + mlp(x1)); dln = d s2, and
  // dres becomes d x1 = d s2 + the MLP's input gradient.
  const Tensor& mlp_in = post ? ln1 : ln2;
  Tensor dmlp_out = dres;
  if (post) {
    be_.fill(dln, 0);
    norm_backward(dln, blk.ln2, dres, ln2, m2, r2);
    dmlp_out = dln;
  }
  Tensor dmlp_in = post ? dres : dln;
  const bool gelu_tanh = cfg_.act == ActKind::gelu_tanh;  // dfc is then d fc_pre: the GELU's backward fused
  linear_backward(blk.fc_out, fc_act, hidden_dropout_backward(dmlp_out, DropSite::mlp_out), dfc, l, 3, key,
                  gelu_tanh ? &fc_pre : nullptr);
  if (swiglu) {
    Tensor dgate = R(a.dgate, F), dup = R(a.dup, F), dln2 = R(a.dln2, C);
    be_.swiglu_backward(dgate, dup, dfc, R(a.gate_pre[k], F), fc_pre);
    linear_backward(blk.fc, mlp_in, dup, dmlp_in, l, 2, key);
    linear_backward(blk.gate, mlp_in, dgate, dln2, l, 7, key);
    be_.add(dmlp_in, dmlp_in, dln2, 1.0f);
  } else {
    if (!gelu_tanh) be_.gelu_backward(dfc, dfc, fc_pre, GeluKind::erf);
    linear_backward(blk.fc, mlp_in, dfc, dmlp_in, l, 2, key);
  }
  // Attention. Pre-norm: xm = res + o(attn(ln1(res))); dres is d xm, d ln1 goes into dln and ln1's
  // backward sums it into dres. Post-norm: x1 = ln1(xm), xm = res + o(attn(res)); dln = d xm, the
  // attention's input gradient goes to dres and dln is added to it.
  if (post) {
    be_.add(dres, dres, dln, 1.0f);  // d x1
    be_.fill(dln, 0);
    norm_backward(dln, blk.ln1, dres, xm, m1, r1);
  } else {
    norm_backward(dres, blk.ln2, dln, xm, m2, r2);
  }
  const Tensor& dxm = post ? dln : dres;
  const Tensor& attn_in = post ? res : ln1;
  Tensor dattn_in = post ? dres : dln;
  linear_backward(blk.attn_out, att, hidden_dropout_backward(dxm, DropSite::attn_out), datt, l, 1, key);
  if (fused) {
    Tensor qkv = R(a.qkv[k], 3 * C), dqkv = R(a.dqkv, 3 * C);
    be_.attention_backward(mat_cols(dqkv, 0, C), mat_cols(dqkv, C, C), mat_cols(dqkv, 2 * C, C), mat(datt),
                           mat_cols(qkv, 0, C), mat_cols(qkv, C, C), mat_cols(qkv, 2 * C, C), mat(att),
                           a.att_saved[k], shape, a.lengths, drop);
    linear_backward(blk.qkv, attn_in, dqkv, dattn_in, l, 0, key);
  } else {
    Tensor q = qkv_part(a.qkv[k], 0, N, C), kk = qkv_part(a.qkv[k], N * C, N, CKV),
           v = qkv_part(a.qkv[k], N * C + N * CKV, N, CKV);
    Tensor dq = qkv_part(a.dqkv, 0, N, C), dk = qkv_part(a.dqkv, N * C, N, CKV),
           dv = qkv_part(a.dqkv, N * C + N * CKV, N, CKV), dln2 = R(a.dln2, C);
    be_.attention_backward(mat(dq), mat(dk), mat(dv), mat(datt), mat(q), mat(kk), mat(v), mat(att),
                           a.att_saved[k], shape, a.lengths, drop);
    if (rotary) {  // the gradient of a rotation is the inverse rotation of the gradient
      be_.rope(mat(dq), B, T, p.shape.NH, p.shape.HS, cfg_.rope_theta, true);
      be_.rope(mat(dk), B, T, p.shape.NKV, p.shape.HS, cfg_.rope_theta, true);
    }
    linear_backward(blk.q, attn_in, dq, dattn_in, l, 4, key);
    linear_backward(blk.k, attn_in, dk, dln2, l, 5, key);
    be_.add(dattn_in, dattn_in, dln2, 1.0f);
    linear_backward(blk.v, attn_in, dv, dln2, l, 6, key);
    be_.add(dattn_in, dattn_in, dln2, 1.0f);
  }
  if (post)
    be_.add(dres, dres, dln, 1.0f);  // d res = the attention's input gradient + d xm (the residual)
  else
    norm_backward(dres, blk.ln1, dln, res, m1, r1);
}

Tensor Model::body_forward(const Pass& p) {
  Acts& a = *acts_;
  const int64_t N = p.N, C = cfg_.d_model;
  // Learned positions: RoBERTa numbers them from padding_idx + 1 (position_offset), so sequence
  // position t reads row t + offset; right padding keeps every real token at its own position.
  const Tensor wpe = wpe_.empty() ? wpe_ : wpe_.rows(cfg_.position_offset, cfg_.max_positions);
  if (cfg_.post_norm) {
    Tensor emb = rows_of(a.emb, N, C), emb3 = emb.view({p.B, p.T, C});
    be_.embedding_forward(emb3, a.tokens, wte_, wpe);
    if (!tte_.empty()) be_.bias_add(mat(emb), tte_.rows(0, 1).view({C}));  // token type 0 everywhere
    Tensor x0 = rows_of(a.res[0], N, C);
    Tensor m = a.emb_mean.rows(0, N), r = a.emb_rstd.rows(0, N);
    norm_forward(x0, m, r, emb, ln_emb_);
  } else {
    Tensor x0 = rows_of(a.res[0], N, C).view({p.B, p.T, C});
    be_.embedding_forward(x0, a.tokens, wte_, wpe);
  }
  if (p.hidden_p > 0) {  // HF: dropout on the embeddings' output (after RoBERTa's embedding LayerNorm)
    Tensor x0 = rows_of(a.res[0], N, C);
    be_.dropout_forward(x0, x0, p.hidden_p, dropout_seed(p.dropout_key, kEmbeddingDropKey), 0);
  }
  for (int l = 0; l < cfg_.n_layer; ++l) block_forward(p, l);
  Tensor last = rows_of(a.res[cfg_.n_layer], N, C);
  if (cfg_.post_norm) return last;
  Tensor lnf = rows_of(a.lnf, N, C), mf = a.lnf_mean.rows(0, N), rf = a.lnf_rstd.rows(0, N);
  norm_forward(lnf, mf, rf, last, lnf_);
  return lnf;
}

void Model::body_backward(const Pass& p, const Tensor& dhidden) {
  Acts& a = *acts_;
  const int64_t N = p.N, C = cfg_.d_model;
  const int L = cfg_.n_layer;
  Tensor dres = rows_of(a.dres, N, C), dln = rows_of(a.dln, N, C);
  if (cfg_.post_norm) {
    be_.copy(dres, dhidden);
  } else {
    be_.fill(dres, 0);
    norm_backward(dres, lnf_, dhidden, rows_of(a.res[L], N, C), a.lnf_mean.rows(0, N), a.lnf_rstd.rows(0, N));
  }
  for (int l = L - 1; l >= 0; --l) {
    if (recompute_) block_forward(p, l);  // rebuild block l's activations from its residual input
    block_backward(p, l);
  }
  if (dwte_.empty() && dwpe_.empty()) return;  // frozen embeddings (LoRA): nothing below needs a gradient
  Tensor dwpe = dwpe_.empty() ? dwpe_ : dwpe_.rows(cfg_.position_offset, cfg_.max_positions);
  if (p.hidden_p > 0) be_.dropout_backward(dres, dres, p.hidden_p, dropout_seed(p.dropout_key, kEmbeddingDropKey), 0);
  Tensor demb = dres;
  if (cfg_.post_norm) {
    be_.fill(dln, 0);
    norm_backward(dln, ln_emb_, dres, rows_of(a.emb, N, C), a.emb_mean.rows(0, N), a.emb_rstd.rows(0, N));
    demb = dln;
    Tensor dtte0 = dtte_.empty() ? dtte_ : dtte_.rows(0, 1).view({C});
    if (!dtte0.empty()) be_.bias_backward(dtte0, mat(demb));
  }
  be_.embedding_backward(dwte_, dwpe, demb.view({p.B, p.T, C}), a.tokens);
}

LossStats Model::step(const Tensor& tokens, const Tensor& targets, const Tensor& lengths, float dscale,
                      float label_smoothing, uint64_t dropout_key, bool train) {
  if (cfg_.head != HeadKind::lm)
    fail_usage("this " + cfg_.family + " model has a classification head, not a language-model head",
               "train it on classification data (data.format glue)");
  Pass p = pass_begin(tokens, lengths, dropout_key, train);
  const int64_t N = p.N, C = cfg_.d_model, V = cfg_.vocab_size;
  const bool backward = dscale != 0.0f;
  Acts& a = *acts_;
  a.targets = be_.alloc({N}, DType::i32);
  be_.upload(a.targets, targets);
  Tensor lnf = body_forward(p);

  // ---- LM head and loss, a block of rows at a time: no (N,V) logits buffer ----
  LossStats stats;
  Tensor dlnf = rows_of(a.dlnf, N, C);
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
  if (backward) body_backward(p, dlnf);
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
