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
  float scale;  // 1/sqrt(HS)
};

__device__ __forceinline__ int visible_len(const AttnArgs& a, int b) {
  return a.lengths ? max(0, min(a.lengths[b], a.T)) : a.T;
}

__device__ __forceinline__ bool visible(const AttnArgs& a, int len, int key, int query) {
  return key < len && (!a.causal || key <= query);
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
