// Rotary position embedding (Su et al. 2021) in place, HF/LLaMA "rotate_half" convention: within each
// head, the pair (i, i + HS/2) rotates by angle t * theta^(-2i/HS). The angle and its sine and cosine are
// computed in fp64, as the CPU oracle does (fp32 angles drift by ~t * 1e-7 at large positions); the
// rotation itself is fp32. x (B*T rows, >= nheads*HS cols, ld) may be a column block of a
// fused qkv buffer; position t is the row's index within its sequence, or pos[row] (rope_at). inverse
// rotates by -angle.
#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;

// One thread per (row, head, i < HS/2).
static __global__ void rope_kernel(MatRef x, int T, int nheads, int HS, float theta, float sign, const int* pos) {
  const int half = HS / 2;
  const int64_t n = x.rows * nheads * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    int i = int(idx % half);
    int64_t rh = idx / half;
    int h = int(rh % nheads);
    int64_t row = rh / nheads;
    int t = pos ? pos[row] : int(row % T);
    double sd, cd;
    sincos(double(t) * pow(double(theta), -2.0 * i / HS), &sd, &cd);
    const float s = sign * float(sd), c = float(cd);
    int64_t o = row * x.ld + int64_t(h) * HS + i;
    float x1 = load_elem(x.data, x.dtype, o), x2 = load_elem(x.data, x.dtype, o + half);
    store_elem(x.data, x.dtype, o, x1 * c - x2 * s);
    store_elem(x.data, x.dtype, o + half, x2 * c + x1 * s);
  }
}

void rope(CudaContext& ctx, const MatRef& x, int B, int T, int nheads, int HS, float theta, bool inverse) {
  cuda_require(HS % 2 == 0 && HS > 0, "rope", "head size must be even, got " + std::to_string(HS));
  cuda_require(x.rows == int64_t(B) * T, "rope",
               "x has " + std::to_string(x.rows) + " rows, expected B*T = " + std::to_string(int64_t(B) * T));
  cuda_require(x.cols >= int64_t(nheads) * HS, "rope", "x has fewer than nheads*HS columns");
  cuda_require(cuda_is_float(x.dtype), "rope", "x must be a float matrix");
  int64_t n = x.rows * nheads * (HS / 2);
  if (n == 0) return;
  LORA_LAUNCH(rope_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(x, T, nheads, HS, theta, inverse ? -1.0f : 1.0f,
                                                                            nullptr);
  LAUNCH_CHECK();
}

void rope_at(CudaContext& ctx, const MatRef& x, const Tensor& positions, int nheads, int HS, float theta) {
  cuda_require(HS % 2 == 0 && HS > 0, "rope_at", "head size must be even, got " + std::to_string(HS));
  cuda_require(positions.dtype == DType::i32 && positions.numel() == x.rows && positions.device == Device::cuda,
               "rope_at", "positions must be an i32 tensor of x.rows = " + std::to_string(x.rows) + " on the GPU");
  cuda_require(x.cols >= int64_t(nheads) * HS, "rope_at", "x has fewer than nheads*HS columns");
  cuda_require(cuda_is_float(x.dtype), "rope_at", "x must be a float matrix");
  int64_t n = x.rows * nheads * (HS / 2);
  if (n == 0) return;
  LORA_LAUNCH(rope_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(x, 1, nheads, HS, theta, 1.0f,
                                                                            static_cast<const int*>(positions.data));
  LAUNCH_CHECK();
}

}  // namespace cuda_ops
}  // namespace lora
