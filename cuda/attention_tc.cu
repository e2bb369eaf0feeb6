// Attention on tensor cores: the FlashAttention-2 algorithm (Dao 2023) with its two matrix products per
// tile on WMMA (m16n16k16, bf16 or f16 operands, f32 accumulation), for q, k, v of one 16-bit dtype and
// head sizes 64 (GPT-2) and 128 (LLaMA-family). Same contract and results as cuda/attention.cu (which
// serves every other case): lse saved by the forward, no (T,T) matrix in memory, dq and dk/dv from two
// kernels without atomics, deterministic.
//
// A block has 4 warps and owns 64 rows (queries in the forward and dq, keys in dk/dv), 16 per warp; it
// walks the other side in tiles of 64. Scores go through shared memory in f32, because a fragment's
// layout over the lanes is unspecified: the online softmax, the masks and the rescaling of the output
// work there, row by row, with one lane per column. As in FlashAttention, the probabilities P and the
// score gradients dS are rounded to the operand dtype before their products; row statistics (max, sum,
// lse, D) stay f32. Dropout on the probabilities works there too, per element from its coordinates
// (drop_factor, cuda/attention.cuh): P after dropout feeds the products with V and dout, the sum l stays
// that of P, and dS = P * (factor * dP - D). With a sliding window W (Mistral), the forward and dq
// kernels start at the key tile holding their first query's oldest visible key and the dk/dv kernel
// stops after the query tile holding its last key's newest viewer, so a row costs O(W), not O(T).
//
// Shared memory per block, HS = 128: forward 110 KiB, dq 111 KiB, dk/dv 120.5 KiB; HS = 64: 70, 79, 88.5
// (one or two blocks an SM on Hopper). Untuned: a first tensor-core version, checked on the CPU emulation
// against a same-precision reference (tests/test_cuda_ops.cpp), not yet timed on a GPU.
#include <cstdlib>
#include <cstring>

#include "cuda/attention.cuh"

#if !defined(LORA_CUDA_EMU)
#include <mma.h>
#endif

namespace lora {
namespace cuda_ops {

using namespace nvcuda;

static constexpr int kTcWarps = 4;
static constexpr int kTcRows = 16 * kTcWarps;  // rows a block owns
static constexpr int kTcCols = 64;             // columns of the other side per tile
static constexpr int kPad16 = 8;               // padding of 16-bit rows (ld stays a multiple of 8)
static constexpr int kSL = kTcCols + 4;        // ld of an f32 (16, kTcCols) score tile

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

template <typename T>
__device__ __forceinline__ T to_t(float x);
template <>
__device__ __forceinline__ __nv_bfloat16 to_t<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half to_t<__half>(float x) { return __float2half_rn(x); }

// dst (rows, HS + kPad16) <- rows t0.. of head column block col0 of src (b*T + t, ld_src), zero past T.
template <typename T, int HS>
__device__ void tile_load(T* dst, int rows, const void* src, int64_t ld_src, int b, int T_, int t0, int64_t col0) {
  const T* s = static_cast<const T*>(src);
  const T zero = to_t<T>(0.0f);
  for (int idx = threadIdx.x; idx < rows * HS; idx += blockDim.x) {
    const int r = idx / HS, d = idx % HS, t = t0 + r;
    dst[r * (HS + kPad16) + d] = t < T_ ? s[(int64_t(b) * T_ + t) * ld_src + col0 + d] : zero;
  }
}

// The tiles the kernels walk, rows t0.. (zero past T): k and v of kv head g (the key tiles of the forward
// and dq, dk/dv's own rows) ...
template <typename T, int HS>
__device__ void kv_tiles_load(T* sk, T* sv, int rows, const AttnArgs& a, int b, int t0, int g) {
  tile_load<T, HS>(sk, rows, a.k, a.ldk, b, a.T, t0, int64_t(g) * HS);
  tile_load<T, HS>(sv, rows, a.v, a.ldv, b, a.T, t0, int64_t(g) * HS);
}

// ... and q and dout of query head h (dq's own rows, the query tiles of dk/dv).
template <typename T, int HS>
__device__ void q_dout_tiles_load(T* sq, T* sdo, int rows, const AttnArgs& a, const void* dout, int64_t lddo, int b,
                                  int t0, int h) {
  tile_load<T, HS>(sq, rows, a.q, a.ldq, b, a.T, t0, int64_t(h) * HS);
  tile_load<T, HS>(sdo, rows, dout, lddo, b, a.T, t0, int64_t(h) * HS);
}

// out (16, 16 * n_tiles) f32 tile at `out` (ld kSL) = A (16, K) * B, B given per 16-column tile by its
// fragment loader. K = 16 * k_steps.
template <typename T, typename LoadB>
__device__ void warp_gemm_to_smem(float* out, const T* a, int lda, int k_steps, int n_tiles, LoadB load_b) {
  FragA<T> fa;
  FragC fc;
  for (int n = 0; n < n_tiles; ++n) {
    wmma::fill_fragment(fc, 0.0f);
    for (int kk = 0; kk < k_steps; ++kk) {
      wmma::load_matrix_sync(fa, a + kk * 16, lda);
      load_b(fc, fa, n, kk);
    }
    wmma::store_matrix_sync(out + n * 16, fc, kSL, wmma::mem_row_major);
  }
}

// The B operand of warp_gemm_to_smem for B = M^T, M (rows, HS) row-major in shared memory with ld L: M^T
// is M read column-major. Multiplies the A step kk into output tile n.
template <typename T, int L>
struct TimesTransposed {
  const T* m;
  __device__ void operator()(FragC& fc, const FragA<T>& fa, int n, int kk) const {
    FragBCol<T> fb;
    wmma::load_matrix_sync(fb, m + n * 16 * L + kk * 16, L);
    wmma::mma_sync(fc, fa, fb, fc);
  }
};

// Forward: grid (ceil(T/64), NH, B), 128 threads.
template <typename T, int HS>
static __global__ void attention_tc_forward_kernel(AttnArgs a, void* out, DType tout, int64_t ldo, float* lse) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 WMMA needs sm_80; attention_tc_supported keeps older GPUs on cuda/attention.cu
#else
  LORA_DYNAMIC_SHARED(float, smem);
  constexpr int L = HS + kPad16, OL = HS + 4;
  T* sq = reinterpret_cast<T*>(smem);
  T* sk = sq + kTcRows * L;
  T* sv = sk + kTcCols * L;
  float* ss = reinterpret_cast<float*>(sv + kTcCols * L);  // per warp (16, kSL)
  T* sp = reinterpret_cast<T*>(ss + kTcWarps * 16 * kSL);  // per warp (16, kTcCols + kPad16)
  float* so = reinterpret_cast<float*>(sp + kTcWarps * 16 * (kTcCols + kPad16));  // per warp (16, OL)
  constexpr int PL = kTcCols + kPad16;
  const int q0 = blockIdx.x * kTcRows, h = blockIdx.y, b = blockIdx.z, g = h / (a.NH / a.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int len = visible_len(a, b);
  float* ws = ss + warp * 16 * kSL;
  T* wp = sp + warp * 16 * PL;
  float* wo = so + warp * 16 * OL;
  const T* wq = sq + warp * 16 * L;

  tile_load<T, HS>(sq, kTcRows, a.q, a.ldq, b, a.T, q0, int64_t(h) * HS);
  for (int i = lane; i < 16 * OL; i += 32) wo[i] = 0.0f;
  __syncwarp();  // the final store reads other lanes' zeros where no key tile runs (an empty sequence)
  float m[16], l[16];
  #pragma unroll
  for (int r = 0; r < 16; ++r) m[r] = -INFINITY, l[r] = 0.0f;

  const int kend = a.causal ? min(len, q0 + kTcRows) : len;
  for (int k0 = key_begin(a, q0, kTcCols); k0 < kend; k0 += kTcCols) {
    __syncthreads();
    kv_tiles_load<T, HS>(sk, sv, kTcCols, a, b, k0, g);
    __syncthreads();
    // S = Q K^T (16, 64): K (keys, HS) row-major is K^T column-major.
    warp_gemm_to_smem<T>(ws, wq, L, HS / 16, kTcCols / 16, TimesTransposed<T, L>{sk});
    __syncwarp();
    #pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int t = q0 + warp * 16 + r;
      float s[2];
      bool ok[2];
      for (int c = 0; c < 2; ++c) {
        ok[c] = t < a.T && visible(a, len, k0 + lane + 32 * c, t);
        s[c] = ok[c] ? ws[r * kSL + lane + 32 * c] * a.scale : -INFINITY;
      }
      const float m_new = fmaxf(m[r], warp_max(fmaxf(s[0], s[1])));
      const float corr = m_new == -INFINITY ? 1.0f : expf(m[r] - m_new);
      float psum = 0.0f;
      for (int c = 0; c < 2; ++c) {
        const float p = ok[c] ? expf(s[c] - m_new) : 0.0f;
        psum += p;
        wp[r * PL + lane + 32 * c] = to_t<T>(ok[c] ? p * drop_factor(a, b, h, t, k0 + lane + 32 * c) : 0.0f);
      }
      l[r] = l[r] * corr + warp_sum(psum);
      m[r] = m_new;
      for (int d = lane; d < HS; d += 32) wo[r * OL + d] *= corr;
    }
    __syncwarp();
    // O += P V (16, HS): P (16, 64) row-major, V (keys, HS) row-major.
    #pragma unroll
    for (int n = 0; n < HS / 16; ++n) {
      FragC fc;
      wmma::load_matrix_sync(fc, wo + n * 16, OL, wmma::mem_row_major);
      #pragma unroll
      for (int kk = 0; kk < kTcCols / 16; ++kk) {
        FragA<T> fa;
        FragBRow<T> fb;
        wmma::load_matrix_sync(fa, wp + kk * 16, PL);
        wmma::load_matrix_sync(fb, sv + kk * 16 * L + n * 16, L);
        wmma::mma_sync(fc, fa, fb, fc);
      }
      wmma::store_matrix_sync(wo + n * 16, fc, OL, wmma::mem_row_major);
    }
    __syncwarp();
  }
  #pragma unroll
  for (int r = 0; r < 16; ++r) {
    const int t = q0 + warp * 16 + r;
    if (t >= a.T) break;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    const int64_t row = int64_t(b) * a.T + t;
    for (int d = lane; d < HS; d += 32) store_elem(out, tout, row * ldo + int64_t(h) * HS + d, wo[r * OL + d] * inv);
    if (lane == 0) lse[(int64_t(b) * a.NH + h) * a.T + t] = l[r] > 0.0f ? m[r] + logf(l[r]) : INFINITY;
  }
#endif
}

// Writes the warp's (16, HS) accumulators times `scale` to rows r0.. of a column block of dst, through the
// warp's f32 scratch tile (16, kSL).
template <int HS>
static __device__ void store_rows(float* scratch, const FragC* acc, float scale, void* dst, DType tdst, int64_t ld,
                                  int b, int T_, int r0, int64_t col0) {
  const int lane = threadIdx.x % 32;
  #pragma unroll
  for (int n = 0; n < HS / 16; ++n) {
    __syncwarp();
    wmma::store_matrix_sync(scratch, acc[n], kSL, wmma::mem_row_major);
    __syncwarp();
    for (int i = lane; i < 256; i += 32) {
      const int r = i / 16, c = i % 16, t = r0 + r;
      if (t < T_) store_elem(dst, tdst, (int64_t(b) * T_ + t) * ld + col0 + n * 16 + c, scale * scratch[r * kSL + c]);
    }
  }
}

// dq = scale * dS K with dS = P * (factor * dP - D), P = exp(scale q.k - lse), dP = dout V^T. grid as the forward.
template <typename T, int HS>
static __global__ void attention_tc_dq_kernel(AttnArgs a, const void* dout, int64_t lddo, const float* lse,
                                              const float* D, void* dq, DType tdq, int64_t lddq) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 WMMA needs sm_80; attention_tc_supported keeps older GPUs on cuda/attention.cu
#else
  LORA_DYNAMIC_SHARED(float, smem);
  constexpr int L = HS + kPad16, PL = kTcCols + kPad16;
  T* sq = reinterpret_cast<T*>(smem);
  T* sdo = sq + kTcRows * L;
  T* sk = sdo + kTcRows * L;
  T* sv = sk + kTcCols * L;
  float* ss = reinterpret_cast<float*>(sv + kTcCols * L);  // per warp (16, kSL): S, then the output scratch
  float* sdp = ss + kTcWarps * 16 * kSL;                     // per warp (16, kSL)
  T* sds = reinterpret_cast<T*>(sdp + kTcWarps * 16 * kSL);  // per warp (16, PL)
  const int q0 = blockIdx.x * kTcRows, h = blockIdx.y, b = blockIdx.z, g = h / (a.NH / a.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int len = visible_len(a, b);
  float* ws = ss + warp * 16 * kSL;
  float* wdp = sdp + warp * 16 * kSL;
  T* wds = sds + warp * 16 * PL;
  q_dout_tiles_load<T, HS>(sq, sdo, kTcRows, a, dout, lddo, b, q0, h);
  float row_lse[16], row_D[16];
  #pragma unroll
  for (int r = 0; r < 16; ++r) query_stats(a, lse, D, b, h, q0 + warp * 16 + r, row_lse[r], row_D[r]);
  FragC acc[HS / 16];
  #pragma unroll
  for (int n = 0; n < HS / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);

  const int kend = a.causal ? min(len, q0 + kTcRows) : len;
  for (int k0 = key_begin(a, q0, kTcCols); k0 < kend; k0 += kTcCols) {
    __syncthreads();
    kv_tiles_load<T, HS>(sk, sv, kTcCols, a, b, k0, g);
    __syncthreads();
    warp_gemm_to_smem<T>(ws, sq + warp * 16 * L, L, HS / 16, kTcCols / 16, TimesTransposed<T, L>{sk});
    warp_gemm_to_smem<T>(wdp, sdo + warp * 16 * L, L, HS / 16, kTcCols / 16, TimesTransposed<T, L>{sv});
    __syncwarp();
    #pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int t = q0 + warp * 16 + r;
      for (int c = lane; c < kTcCols; c += 32) {
        float ds = 0.0f;
        if (t < a.T && visible(a, len, k0 + c, t)) {
          const float p = expf(ws[r * kSL + c] * a.scale - row_lse[r]);
          ds = p * (wdp[r * kSL + c] * drop_factor(a, b, h, t, k0 + c) - row_D[r]);
        }
        wds[r * PL + c] = to_t<T>(ds);
      }
    }
    __syncwarp();
    #pragma unroll
    for (int n = 0; n < HS / 16; ++n)
      #pragma unroll
      for (int kk = 0; kk < kTcCols / 16; ++kk) {
        FragA<T> fa;
        FragBRow<T> fb;
        wmma::load_matrix_sync(fa, wds + kk * 16, PL);
        wmma::load_matrix_sync(fb, sk + kk * 16 * L + n * 16, L);
        wmma::mma_sync(acc[n], fa, fb, acc[n]);
      }
  }
  store_rows<HS>(ws, acc, a.scale, dq, tdq, lddq, b, a.T, q0 + warp * 16, int64_t(h) * HS);
#endif
}

// dv_j = sum_i Pd_ij dout_i (Pd: P after dropout), dk_j = scale * sum_i dS_ij q_i over the queries of every
// query head of kv group g, computed transposed: S^T = K Q^T, dP^T = V dout^T. grid (ceil(T/64), NKV, B).
template <typename T, int HS>
static __global__ void attention_tc_dkdv_kernel(AttnArgs a, const void* dout, int64_t lddo, const float* lse,
                                                const float* D, void* dk, DType tdk, int64_t lddk, void* dv,
                                                DType tdv, int64_t lddv) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 WMMA needs sm_80; attention_tc_supported keeps older GPUs on cuda/attention.cu
#else
  LORA_DYNAMIC_SHARED(float, smem);
  constexpr int L = HS + kPad16, PL = kTcCols + kPad16;
  T* sk = reinterpret_cast<T*>(smem);
  T* sv = sk + kTcRows * L;
  T* sq = sv + kTcRows * L;
  T* sdo = sq + kTcCols * L;
  float* ss = reinterpret_cast<float*>(sdo + kTcCols * L);  // per warp (16, kSL)
  float* sdp = ss + kTcWarps * 16 * kSL;                      // per warp (16, kSL)
  T* sp = reinterpret_cast<T*>(sdp + kTcWarps * 16 * kSL);    // per warp (16, PL)
  T* sds = sp + kTcWarps * 16 * PL;                           // per warp (16, PL)
  float* slse = reinterpret_cast<float*>(sds + kTcWarps * 16 * PL);  // (kTcCols)
  float* sD = slse + kTcCols;                                          // (kTcCols)
  const int k0 = blockIdx.x * kTcRows, g = blockIdx.y, b = blockIdx.z, group = a.NH / a.NKV;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int len = visible_len(a, b);
  float* ws = ss + warp * 16 * kSL;
  float* wdp = sdp + warp * 16 * kSL;
  T* wp = sp + warp * 16 * PL;
  T* wds = sds + warp * 16 * PL;
  kv_tiles_load<T, HS>(sk, sv, kTcRows, a, b, k0, g);
  FragC gk[HS / 16], gv[HS / 16];
  #pragma unroll
  for (int n = 0; n < HS / 16; ++n) {
    wmma::fill_fragment(gk[n], 0.0f);
    wmma::fill_fragment(gv[n], 0.0f);
  }

  // Causal: queries before the block's first key see none of it; with a window, nor do queries past the
  // window of its last key.
  const int qbegin = a.causal ? k0 : 0, qend = query_end(a, k0, kTcRows);
  for (int h = g * group; k0 < len && h < (g + 1) * group; ++h) {
    for (int i0 = qbegin; i0 < qend; i0 += kTcCols) {
      __syncthreads();
      q_dout_tiles_load<T, HS>(sq, sdo, kTcCols, a, dout, lddo, b, i0, h);
      for (int i = threadIdx.x; i < kTcCols; i += blockDim.x) query_stats(a, lse, D, b, h, i0 + i, slse[i], sD[i]);
      __syncthreads();
      warp_gemm_to_smem<T>(ws, sk + warp * 16 * L, L, HS / 16, kTcCols / 16, TimesTransposed<T, L>{sq});
      warp_gemm_to_smem<T>(wdp, sv + warp * 16 * L, L, HS / 16, kTcCols / 16, TimesTransposed<T, L>{sdo});
      __syncwarp();
      #pragma unroll
      for (int r = 0; r < 16; ++r) {
        const int key = k0 + warp * 16 + r;
        for (int c = lane; c < kTcCols; c += 32) {
          const int query = i0 + c;
          float p = 0.0f, ds = 0.0f;
          if (query < a.T && visible(a, len, key, query)) {
            const float factor = drop_factor(a, b, h, query, key);
            p = expf(ws[r * kSL + c] * a.scale - slse[c]);
            ds = p * (wdp[r * kSL + c] * factor - sD[c]);
            p *= factor;
          }
          wp[r * PL + c] = to_t<T>(p);
          wds[r * PL + c] = to_t<T>(ds);
        }
      }
      __syncwarp();
      #pragma unroll
      for (int n = 0; n < HS / 16; ++n)
        #pragma unroll
        for (int kk = 0; kk < kTcCols / 16; ++kk) {
          FragA<T> fp, fds;
          FragBRow<T> fdo, fq;
          wmma::load_matrix_sync(fp, wp + kk * 16, PL);
          wmma::load_matrix_sync(fds, wds + kk * 16, PL);
          wmma::load_matrix_sync(fdo, sdo + kk * 16 * L + n * 16, L);
          wmma::load_matrix_sync(fq, sq + kk * 16 * L + n * 16, L);
          wmma::mma_sync(gv[n], fp, fdo, gv[n]);
          wmma::mma_sync(gk[n], fds, fq, gk[n]);
        }
    }
  }
  store_rows<HS>(ws, gk, a.scale, dk, tdk, lddk, b, a.T, k0 + warp * 16, int64_t(g) * HS);
  store_rows<HS>(ws, gv, 1.0f, dv, tdv, lddv, b, a.T, k0 + warp * 16, int64_t(g) * HS);
#endif
}

static size_t tc_forward_smem(int HS, size_t t_bytes) {
  const int L = HS + kPad16;
  return t_bytes * (kTcRows + 2 * kTcCols) * L + 4 * kTcWarps * 16 * kSL +
         t_bytes * kTcWarps * 16 * (kTcCols + kPad16) + 4 * kTcWarps * 16 * (HS + 4);
}
static size_t tc_dq_smem(int HS, size_t t_bytes) {
  const int L = HS + kPad16;
  return t_bytes * (2 * kTcRows + 2 * kTcCols) * L + 4 * 2 * kTcWarps * 16 * kSL +
         t_bytes * kTcWarps * 16 * (kTcCols + kPad16);
}
static size_t tc_dkdv_smem(int HS, size_t t_bytes) {
  const int L = HS + kPad16;
  return t_bytes * (2 * kTcRows + 2 * kTcCols) * L + 4 * 2 * kTcWarps * 16 * kSL +
         t_bytes * 2 * kTcWarps * 16 * (kTcCols + kPad16) + 4 * 2 * kTcCols;
}

template <typename Kernel>
static void allow_tc_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

bool attention_tc_supported(const AttnArgs& a) {
  static const bool disabled = [] {
    const char* env = std::getenv("LORA_ATTENTION");
    return env && std::strcmp(env, "simple") == 0;
  }();
  static const bool ampere_or_later = [] {
    int device = 0, major = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 8;
  }();
  const bool sixteen = a.tq == a.tk && a.tq == a.tv && (a.tq == DType::bf16 || a.tq == DType::f16);
  return !disabled && ampere_or_later && sixteen && (a.HS == 64 || a.HS == 128);
}

template <typename T, int HS>
static void tc_forward(cudaStream_t stream, const AttnArgs& a, void* out, DType tout, int64_t ldo, float* lse) {
  const size_t smem = tc_forward_smem(HS, sizeof(T));
  auto kernel = attention_tc_forward_kernel<T, HS>;
  allow_tc_smem(kernel, smem);
  dim3 grid(unsigned((a.T + kTcRows - 1) / kTcRows), unsigned(a.NH), unsigned(a.B));
  LORA_LAUNCH(kernel, grid, kTcWarps * 32, smem, stream)(a, out, tout, ldo, lse);
  LAUNCH_CHECK();
}

template <typename T, int HS>
static void tc_backward(cudaStream_t stream, const AttnArgs& a, const void* dout, int64_t lddo, const float* lse,
                        const float* D, void* dq, DType tdq, int64_t lddq, void* dk, DType tdk, int64_t lddk, void* dv,
                        DType tdv, int64_t lddv) {
  const size_t smem_dq = tc_dq_smem(HS, sizeof(T)), smem_kv = tc_dkdv_smem(HS, sizeof(T));
  auto dq_kernel = attention_tc_dq_kernel<T, HS>;
  auto dkdv_kernel = attention_tc_dkdv_kernel<T, HS>;
  allow_tc_smem(dq_kernel, smem_dq);
  allow_tc_smem(dkdv_kernel, smem_kv);
  dim3 grid_q(unsigned((a.T + kTcRows - 1) / kTcRows), unsigned(a.NH), unsigned(a.B));
  LORA_LAUNCH(dq_kernel, grid_q, kTcWarps * 32, smem_dq, stream)(a, dout, lddo, lse, D, dq, tdq, lddq);
  LAUNCH_CHECK();
  dim3 grid_kv(unsigned((a.T + kTcRows - 1) / kTcRows), unsigned(a.NKV), unsigned(a.B));
  LORA_LAUNCH(dkdv_kernel, grid_kv, kTcWarps * 32, smem_kv, stream)(a, dout, lddo, lse, D, dk, tdk,
                                                                                   lddk, dv, tdv, lddv);
  LAUNCH_CHECK();
}

void attention_tc_forward(cudaStream_t stream, const AttnArgs& a, void* out, DType tout, int64_t ldo, float* lse) {
  const bool bf16 = a.tq == DType::bf16;
  if (a.HS == 64)
    bf16 ? tc_forward<__nv_bfloat16, 64>(stream, a, out, tout, ldo, lse) : tc_forward<__half, 64>(stream, a, out, tout, ldo, lse);
  else
    bf16 ? tc_forward<__nv_bfloat16, 128>(stream, a, out, tout, ldo, lse)
         : tc_forward<__half, 128>(stream, a, out, tout, ldo, lse);
}

void attention_tc_backward(cudaStream_t stream, const AttnArgs& a, const void* dout, DType tdo, int64_t lddo,
                           const float* lse, const float* D, void* dq, DType tdq, int64_t lddq, void* dk, DType tdk,
                           int64_t lddk, void* dv, DType tdv, int64_t lddv) {
  cuda_require(tdo == a.tq, "attention_backward", "the tensor-core path needs dout in q's dtype");
#define LORA_TC_BACKWARD(T, HS) \
  tc_backward<T, HS>(stream, a, dout, lddo, lse, D, dq, tdq, lddq, dk, tdk, lddk, dv, tdv, lddv)
  const bool bf16 = a.tq == DType::bf16;
  if (a.HS == 64)
    bf16 ? LORA_TC_BACKWARD(__nv_bfloat16, 64) : LORA_TC_BACKWARD(__half, 64);
  else
    bf16 ? LORA_TC_BACKWARD(__nv_bfloat16, 128) : LORA_TC_BACKWARD(__half, 128);
#undef LORA_TC_BACKWARD
}

}  // namespace cuda_ops
}  // namespace lora
