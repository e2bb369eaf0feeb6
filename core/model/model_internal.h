// Internal to the model's source files (core/model/model.cpp: construction and the passes;
// core/model/model_classify.cpp: the classification head): the per-step activation buffers, the shape of a pass
// and two small helpers. Not part of the model's interface, which is core/model/model.h.
#pragma once
#include <vector>

#include "core/base/rng.h"
#include "core/model/model.h"

namespace lora {

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
  Tensor emb, emb_mean, emb_rstd;       // (N,C), (N), (N) embeddings before their LayerNorm (post-norm)
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

// The shape and settings of one pass over a batch.
struct Model::Pass {
  int B = 0, T = 0;
  int64_t N = 0;
  AttentionShape shape;
  uint64_t dropout_key = 0;  // 0: no dropout
  bool train = false;
  float hidden_p = 0;        // the model's hidden dropout in this pass (0 unless training)
  float attention_p = 0;     // its attention-probability dropout in this pass
  // Decoding (Model::decode_step): attention appends the pass's keys and values to this cache and reads
  // each row's slots; rotary embeddings rotate row n by positions[n] (i32 (N) on the device).
  KvCache* cache = nullptr;
  Tensor positions;
};

namespace model_internal {
// The first n rows of a (cap, cols) activation buffer, viewed as (n, cols).
inline Tensor rows_of(const Tensor& t, int64_t n, int64_t cols) { return t.view({t.numel() / cols, cols}).rows(0, n); }

inline uint64_t dropout_seed(uint64_t key, int layer_key) { return rng_mix(key ^ rng_mix(uint64_t(layer_key) + 1)); }
}  // namespace model_internal

}  // namespace lora
