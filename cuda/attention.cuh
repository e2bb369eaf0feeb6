// What the attention kernels share (cuda/attention.cu: fp32 CUDA-core kernels for any float dtype and
// head sizes up to 256; cuda/attention_tc.cu: tensor-core kernels for 16-bit q, k, v). Internal to cuda/.
#pragma once
#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

struct AttnArgs {
  const void* q; const void* k; const void* v;
  DType tq, tk, tv;
  int64_t ldq, ldk, ldv;
  const int* lengths;  // (B) or null
  int B, T, NH, NKV, HS;
  bool causal;
  int window;   // sliding window (AttentionShape::window, causal only); 0 = none
  float scale;  // 1/sqrt(HS)
  AttentionDropout drop;  // on the probabilities (backend.h); drop.p = 0: none
  float drop_scale;       // 1/(1 - drop.p), the factor on kept probabilities
};

__device__ __forceinline__ int visible_len(const AttnArgs& a, int b) {
  return a.lengths ? max(0, min(a.lengths[b], a.T)) : a.T;
}

// Key `key` is visible to query `query`: inside the sequence, not in the future when causal, and within
// the sliding window (query - key < window) when there is one (AttentionShape, backend.h).
__device__ __forceinline__ bool visible(const AttnArgs& a, int len, int key, int query) {
  return key < len && (!a.causal || key <= query) && (a.window <= 0 || query - key < a.window);
}

// The first key tile (`tile` keys wide, from key 0) that a block of queries starting at q0 needs: 0, or
// with a window the tile holding key q0 - window + 1, its first query's oldest key; tiles before it
// hold no key the block sees and are skipped.
__device__ __forceinline__ int key_begin(const AttnArgs& a, int q0, int tile) {
  return a.window > 0 ? max(0, q0 - a.window + 1) / tile * tile : 0;
}

// The end of the queries that see a block of keys [k0, k0 + rows): T, or with a window one past the
// last key's newest viewer, k0 + rows - 1 + window - 1.
__device__ __forceinline__ int query_end(const AttnArgs& a, int k0, int rows) {
  return a.window > 0 ? min(a.T, k0 + rows + a.window - 1) : a.T;
}

// The forward's log-sum-exp and D = rowsum(dout * out) of query t of head h, for the backward kernels;
// +inf and 0 past T (such a row's probabilities recompute to 0).
__device__ __forceinline__ void query_stats(const AttnArgs& a, const float* lse, const float* D, int b, int h, int t,
                                            float& lse_t, float& D_t) {
  const int64_t i = (int64_t(b) * a.NH + h) * a.T + t;
  lse_t = t < a.T ? lse[i] : INFINITY;
  D_t = t < a.T ? D[i] : 0.0f;
}

// The dropout factor on probability (b, h, query, key): drop_scale when kept, 0 when dropped; 1 without
// dropout (every kernel regenerates the same mask from its coordinates, FlashAttention's way).
__device__ __forceinline__ float drop_factor(const AttnArgs& a, int b, int h, int query, int key) {
  if (a.drop.p == 0.0f) return 1.0f;
  return attention_keep(a.drop, a.NH, a.T, b, h, query, key) ? a.drop_scale : 0.0f;
}

// The tensor-core kernels take q, k, v of one 16-bit dtype with a head size of 64 or 128; LORA_ATTENTION=simple in the environment turns them off (to compare, or to work around).
bool attention_tc_supported(const AttnArgs& a);
void attention_tc_forward(cudaStream_t stream, const AttnArgs& a, void* out, DType tout, int64_t ldo, float* lse);
// dq, dk, dv (overwritten) from dout, the forward's lse and D = rowsum(dout * out) (B,NH,T) f32.
void attention_tc_backward(cudaStream_t stream, const AttnArgs& a, const void* dout, DType tdo, int64_t lddo,
                           const float* lse, const float* D, void* dq, DType tdq, int64_t lddq, void* dk, DType tdk,
                           int64_t lddk, void* dv, DType tdv, int64_t lddv);

}  // namespace cuda_ops
}  // namespace lora
