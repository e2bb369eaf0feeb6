// Token (+ learned position) embeddings. Forward: out[b,t,:] = wte[tokens[b,t],:] (+ wpe[t,:]).
// Backward accumulates: dwte[tokens[b,t],:] += dout[b,t,:], dwpe[t,:] += sum_b dout[b,t,:]; an empty
// gradient is frozen. dwte is reduced without atomics, deterministically: one thread per column walks the
// positions in order (slow for a large vocabulary batch, but LoRA keeps wte frozen almost always).
// A token outside [0, V) makes the forward write NaN (the model validates tokens on the host first).
#include <cmath>

#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;

static __global__ void embedding_forward_kernel(void* out, DType to, const int* tokens, const void* wte, DType tw,
                                                const void* wpe, DType tp, int64_t N, int T, int64_t C, int64_t V) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * C; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n = i / C, c = i % C;
    int64_t tok = tokens[n];
    float x = (tok >= 0 && tok < V) ? load_elem(wte, tw, tok * C + c) : NAN;
    if (wpe) x += load_elem(wpe, tp, int64_t(n % T) * C + c);
    store_elem(out, to, i, x);
  }
}

// One thread per column c: positions in order, so repeated tokens add up deterministically.
static __global__ void embedding_backward_wte_kernel(void* dwte, DType tw, const void* dout, DType td,
                                                     const int* tokens, int64_t N, int64_t C, int64_t V) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x)
    for (int64_t n = 0; n < N; ++n) {
      int64_t tok = tokens[n];
      if (tok < 0 || tok >= V) continue;
      store_elem(dwte, tw, tok * C + c, load_elem(dwte, tw, tok * C + c) + load_elem(dout, td, n * C + c));
    }
}

static __global__ void embedding_backward_wpe_kernel(void* dwpe, DType tp, const void* dout, DType td, int B, int T,
                                                     int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < int64_t(T) * C; i += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int b = 0; b < B; ++b) s += load_elem(dout, td, int64_t(b) * T * C + i);
    store_elem(dwpe, tp, i, load_elem(dwpe, tp, i) + s);
  }
}

void embedding_forward(CudaContext& ctx, Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) {
  const char* op = "embedding_forward";
  cuda_require(tokens.dtype == DType::i32 && tokens.ndim() == 2 && tokens.device == Device::cuda, op,
               "tokens must be an i32 (B,T) tensor on the GPU");
  cuda_require(wte.ndim() == 2 && cuda_is_float(wte.dtype), op, "wte must be a float (V,C) tensor");
  const int64_t N = tokens.numel(), C = wte.dim(1), V = wte.dim(0);
  const int T = int(tokens.dim(1));
  cuda_require(out.numel() == N * C && cuda_is_float(out.dtype), op, "out must be (B,T,C)");
  cuda_require(wpe.empty() || (wpe.ndim() == 2 && wpe.dim(1) == C && wpe.dim(0) >= T && cuda_is_float(wpe.dtype)), op,
               "wpe must be (>=T, C)");
  if (N * C == 0) return;
  LORA_LAUNCH(embedding_forward_kernel, grid_for(N * C, kThreads), kThreads, 0, ctx.stream)(
      out.data, out.dtype, static_cast<const int*>(tokens.data), wte.data, wte.dtype, wpe.data, wpe.dtype, N, T, C, V);
  LAUNCH_CHECK();
}

void embedding_backward(CudaContext& ctx, Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens) {
  const char* op = "embedding_backward";
  cuda_require(tokens.dtype == DType::i32 && tokens.ndim() == 2 && tokens.device == Device::cuda, op,
               "tokens must be an i32 (B,T) tensor on the GPU");
  const int64_t N = tokens.numel();
  const int B = int(tokens.dim(0)), T = int(tokens.dim(1));
  cuda_require(dout.ndim() >= 1 && cuda_is_float(dout.dtype), op, "dout must be a float (B,T,C) tensor");
  const int64_t C = dout.dim(-1);
  cuda_require(dout.numel() == N * C, op, "dout must be (B,T,C)");
  if (!dwte.empty()) {
    cuda_require(dwte.ndim() == 2 && dwte.dim(1) == C && cuda_is_float(dwte.dtype), op, "dwte must be (V,C)");
    LORA_LAUNCH(embedding_backward_wte_kernel, grid_for(C, kThreads), kThreads, 0, ctx.stream)(
        dwte.data, dwte.dtype, dout.data, dout.dtype, static_cast<const int*>(tokens.data), N, C, dwte.dim(0));
    LAUNCH_CHECK();
  }
  if (!dwpe.empty()) {
    cuda_require(dwpe.ndim() == 2 && dwpe.dim(1) == C && dwpe.dim(0) >= T && cuda_is_float(dwpe.dtype), op,
                 "dwpe must be (>=T, C)");
    LORA_LAUNCH(embedding_backward_wpe_kernel, grid_for(int64_t(T) * C, kThreads), kThreads, 0, ctx.stream)(
        dwpe.data, dwpe.dtype, dout.data, dout.dtype, B, T, C);
    LAUNCH_CHECK();
  }
}

}  // namespace cuda_ops
}  // namespace lora
