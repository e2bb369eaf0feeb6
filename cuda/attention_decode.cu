// Attention over a key/value cache for incremental decoding (backend.h: attention_decode). Two kernels:
// one appends the chunk's keys and values to the cache, one attends. The attention kernel runs one block
// per (query row, head): warps compute the scores of a chunk of visible slots into shared memory (one
// warp per slot, lanes over the head dimensions), then the block folds the chunk into an online softmax
// (Milakov & Gimelshein 2018) and each thread accumulates its output dimensions in fp32. Slots are read
// through the slot_rows table (physical row of each (slot, row)), so reordering beams moves no cache.
// With a sliding window only the window's slots are scored.
//
// This first version favours clarity over speed: decoding attention is a small part of a generation
// step next to the GEMMs, and one block per (row, head) keeps every query independent.
#include <cmath>

#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 128;        // 4 warps
static constexpr int kChunk = 256;          // visible slots scored per pass
static constexpr int kMaxHS = 2 * kThreads; // each thread owns at most two output dimensions

struct DecodeArgs {
  const void* q; DType tq; int64_t ldq;
  const void* kc; const void* vc; DType tc;
  const int* start;      // (R)
  const int* slot_rows;  // (slot0, R) or null
  int R, T, RC, S, NH, NKV, HS, slot0;
  int window;  // sliding window (AttentionShape::window); 0 = none
  float scale;
};

static __global__ void kv_append_kernel(void* kc, void* vc, DType tc, const void* k, DType tk, int64_t ldk,
                                        const void* v, DType tv, int64_t ldv, int R, int T, int RC, int slot0,
                                        int64_t CKV) {
  const int64_t total = int64_t(R) * T * CKV;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / CKV, c = i % CKV;  // n = r*T + t
    const int64_t r = n / T, t = n % T;
    const int64_t dst = ((slot0 + t) * RC + r) * CKV + c;
    store_elem(kc, tc, dst, load_elem(k, tk, n * ldk + c));
    store_elem(vc, tc, dst, load_elem(v, tv, n * ldv + c));
  }
}

// Physical row of (slot j, row r) in the (S*RC, CKV) cache; -1 for a corrupt table entry (skipped).
static __device__ __forceinline__ int64_t phys_row(const DecodeArgs& a, int j, int r) {
  int p = (a.slot_rows && j < a.slot0) ? a.slot_rows[int64_t(j) * a.R + r] : r;
  return (p < 0 || p >= a.RC) ? -1 : int64_t(j) * a.RC + p;
}

// Max (is_max) or sum of x over the block; every thread gets the result. red: 32 floats of shared memory.
static __device__ float block_reduce(float x, bool is_max, float* red) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  x = is_max ? warp_max(x) : warp_sum(x);
  __syncthreads();  // red is no longer read by a previous reduction
  if (lane == 0) red[warp] = x;
  __syncthreads();
  x = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
  return is_max ? warp_max(x) : warp_sum(x);
}

// grid (R*T, NH), kThreads threads.
static __global__ void attention_decode_kernel(DecodeArgs a, void* out, DType tout, int64_t ldo) {
  __shared__ float sc[kChunk];
  __shared__ float red[32];
  const int n = blockIdx.x, h = blockIdx.y, r = n / a.T, t = n % a.T, g = h / (a.NH / a.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
  const int64_t CKV = int64_t(a.NKV) * a.HS, koff = int64_t(g) * a.HS;
  // Visible slots [j0, j1): from the row's start (left padding before it) and, with a window, from
  // slot_q - window + 1, slot_q = slot0 + t: a row's slots are its positions plus a constant.
  const int j1 = a.slot0 + t + 1, first = a.window > 0 ? max(a.start[r], j1 - a.window) : a.start[r];
  const int j0 = min(max(first, 0), j1);
  const int64_t qoff = int64_t(n) * a.ldq + int64_t(h) * a.HS;
  float m = -INFINITY, l = 0.0f, acc[2] = {0.0f, 0.0f};
  for (int c0 = j0; c0 < j1; c0 += kChunk) {
    const int cn = min(kChunk, j1 - c0);
    for (int i = warp; i < cn; i += nw) {
      const int64_t p = phys_row(a, c0 + i, r);
      float dot = 0.0f;
      if (p >= 0)
        for (int d = lane; d < a.HS; d += 32)
          dot += load_elem(a.q, a.tq, qoff + d) * load_elem(a.kc, a.tc, p * CKV + koff + d);
      dot = warp_sum(dot);
      if (lane == 0) sc[i] = p >= 0 ? dot * a.scale : -INFINITY;
    }
    __syncthreads();
    float cm = -INFINITY;
    for (int i = threadIdx.x; i < cn; i += blockDim.x) cm = fmaxf(cm, sc[i]);
    const float m_new = fmaxf(m, block_reduce(cm, true, red));
    if (m_new == -INFINITY) continue;  // block-uniform: nothing readable in this chunk yet
    float cs = 0.0f;
    for (int i = threadIdx.x; i < cn; i += blockDim.x) {
      const float e = expf(sc[i] - m_new);  // 0 for a skipped slot
      sc[i] = e;
      cs += e;
    }
    const float corr = expf(m - m_new);  // 0 while m is -inf
    l = l * corr + block_reduce(cs, false, red);  // its barriers also publish sc
    m = m_new;
    for (int e = 0; e < 2; ++e) {
      const int d = threadIdx.x + e * blockDim.x;
      if (d >= a.HS) continue;
      float s = 0.0f;
      for (int i = 0; i < cn; ++i) {
        const int64_t p = phys_row(a, c0 + i, r);
        if (p >= 0 && sc[i] != 0.0f) s += sc[i] * load_elem(a.vc, a.tc, p * CKV + koff + d);
      }
      acc[e] = acc[e] * corr + s;
    }
    __syncthreads();  // sc is consumed before the next chunk overwrites it
  }
  for (int e = 0; e < 2; ++e) {
    const int d = threadIdx.x + e * blockDim.x;
    if (d < a.HS) store_elem(out, tout, int64_t(n) * ldo + int64_t(h) * a.HS + d, l > 0.0f ? acc[e] / l : 0.0f);
  }
}

void attention_decode(CudaContext& ctx, const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v,
                      Tensor& k_cache, Tensor& v_cache, const Tensor& start, const Tensor& slot_rows, int slot0,
                      const AttentionShape& s) {
  const char* op = "attention_decode";
  cuda_require(s.B > 0 && s.T > 0 && s.NH > 0 && s.NKV > 0 && s.HS > 0 && s.NH % s.NKV == 0, op,
               "bad attention shape (NH must be a multiple of NKV)");
  cuda_require(s.causal, op, "decoding attention is causal");
  cuda_require(s.window >= 0, op, "the sliding window must be 0 (none) or positive");
  cuda_require(s.HS <= kMaxHS, op, "head size above " + std::to_string(kMaxHS) + " is not supported");
  const int64_t N = int64_t(s.B) * s.T, CQ = int64_t(s.NH) * s.HS, CKV = int64_t(s.NKV) * s.HS;
  cuda_require(q.rows == N && q.cols == CQ && out.rows == N && out.cols == CQ, op, "q and out must be (R*T, NH*HS)");
  cuda_require(k.rows == N && k.cols == CKV && v.rows == N && v.cols == CKV, op, "k and v must be (R*T, NKV*HS)");
  cuda_require(cuda_is_float(q.dtype) && cuda_is_float(k.dtype) && cuda_is_float(v.dtype) &&
                   cuda_is_float(out.dtype),
               op, "q, k, v and out must be float");
  cuda_require(k_cache.device == Device::cuda && k_cache.ndim() == 3 && k_cache.dim(1) >= s.B &&
                   k_cache.dim(2) == CKV && cuda_is_float(k_cache.dtype) && v_cache.shape == k_cache.shape &&
                   v_cache.dtype == k_cache.dtype && v_cache.device == Device::cuda,
               op, "k_cache and v_cache must be float (S, >= R, NKV*HS) tensors on the GPU");
  const int S = int(k_cache.dim(0)), RC = int(k_cache.dim(1));
  cuda_require(slot0 >= 0 && slot0 + s.T <= S, op, "the new slots do not fit in the cache");
  cuda_require(start.dtype == DType::i32 && start.numel() == s.B && start.device == Device::cuda, op,
               "start must be an i32 (R) tensor on the GPU");
  cuda_require(slot_rows.empty() || (slot_rows.dtype == DType::i32 && slot_rows.numel() == int64_t(slot0) * s.B &&
                                     slot_rows.device == Device::cuda),
               op, "slot_rows must be empty or an i32 (slot0, R) tensor on the GPU");

  LORA_LAUNCH(kv_append_kernel, grid_for(N * CKV, 256), 256, 0, ctx.stream)(k_cache.data, v_cache.data, k_cache.dtype, k.data,
                                                                    k.dtype, k.ld, v.data, v.dtype, v.ld, s.B, s.T, RC,
                                                                    slot0, CKV);
  LAUNCH_CHECK();
  DecodeArgs a{};
  a.q = q.data; a.tq = q.dtype; a.ldq = q.ld;
  a.kc = k_cache.data; a.vc = v_cache.data; a.tc = k_cache.dtype;
  a.start = static_cast<const int*>(start.data);
  a.slot_rows = slot_rows.empty() ? nullptr : static_cast<const int*>(slot_rows.data);
  a.R = s.B; a.T = s.T; a.RC = RC; a.S = S; a.NH = s.NH; a.NKV = s.NKV; a.HS = s.HS; a.slot0 = slot0;
  a.window = s.window;
  a.scale = 1.0f / std::sqrt(float(s.HS));
  LORA_LAUNCH(attention_decode_kernel, dim3(unsigned(N), unsigned(s.NH)), kThreads, 0, ctx.stream)(a, out.data, out.dtype,
                                                                                          out.ld);
  LAUNCH_CHECK();
}

}  // namespace cuda_ops
}  // namespace lora
