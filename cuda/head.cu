// The sequence-classification head's ops (RoBERTa, HF RobertaClassificationHead): tanh and its backward
// from the output, the squared-error loss of a regression head, and mat_copy, a strided copy of a
// (rows, cols) matrix between leading dimensions (the first token of each sequence, ld = T*C, and its
// gradient scattered back). Elementwise, any float dtype, fp32 arithmetic; formulas as core/ops/ops_ref.h.
#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;

static __global__ void tanh_forward_kernel(void* out, DType to, const void* inp, DType ti, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_elem(out, to, i, tanhf(load_elem(inp, ti, i)));
}

// dinp = dout * (1 - out^2); dinp may alias dout (each element is read before it is written).
static __global__ void tanh_backward_kernel(void* dinp, DType tdi, const void* dout, DType tdo, const void* out,
                                            DType tout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float y = load_elem(out, tout, i);
    store_elem(dinp, tdi, i, load_elem(dout, tdo, i) * (1.0f - y * y));
  }
}

// losses[i] = (p_i - y_i)^2; with dscale != 0, p_i is overwritten by dscale * 2 (p_i - y_i).
static __global__ void mse_loss_kernel(void* preds, DType tp, int64_t ldp, float* losses, const float* targets,
                                       int64_t N, float dscale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = load_elem(preds, tp, i * ldp) - targets[i];
    losses[i] = d * d;
    if (dscale != 0.0f) store_elem(preds, tp, i * ldp, dscale * 2.0f * d);
  }
}

static __global__ void mat_copy_kernel(void* dst, DType td, int64_t ldd, const void* src, DType ts, int64_t lds,
                                       int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    store_elem(dst, td, r * ldd + c, load_elem(src, ts, r * lds + c));
  }
}

static void check_float(const char* op, const Tensor& t, int64_t n, const char* name) {
  cuda_require(t.numel() == n && cuda_is_float(t.dtype) && t.device == Device::cuda, op,
               std::string(name) + " " + t.shape_str() + " must be a float cuda tensor of " + std::to_string(n) +
                   " elements");
}

void tanh_forward(CudaContext& ctx, Tensor& out, const Tensor& inp) {
  const int64_t n = inp.numel();
  check_float("tanh_forward", inp, n, "inp");
  check_float("tanh_forward", out, n, "out");
  if (n == 0) return;
  LORA_LAUNCH(tanh_forward_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(out.data, out.dtype, inp.data,
                                                                                   inp.dtype, n);
  LAUNCH_CHECK();
}

void tanh_backward(CudaContext& ctx, Tensor& dinp, const Tensor& dout, const Tensor& out) {
  const int64_t n = out.numel();
  check_float("tanh_backward", out, n, "out");
  check_float("tanh_backward", dout, n, "dout");
  check_float("tanh_backward", dinp, n, "dinp");
  if (n == 0) return;
  LORA_LAUNCH(tanh_backward_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(
      dinp.data, dinp.dtype, dout.data, dout.dtype, out.data, out.dtype, n);
  LAUNCH_CHECK();
}

void mse_loss(CudaContext& ctx, const MatRef& preds, Tensor& losses, const Tensor& targets, float dscale) {
  const char* op = "mse_loss";
  const int64_t N = preds.rows;
  cuda_require(cuda_is_float(preds.dtype) && preds.cols == 1 && preds.ld >= 1 && (preds.data || N == 0), op,
               "preds must be a float (N, 1) matrix");
  cuda_require(targets.dtype == DType::f32 && targets.numel() == N && targets.device == Device::cuda, op,
               "targets must be f32 (N) on the device");
  cuda_require(losses.dtype == DType::f32 && losses.numel() == N && losses.device == Device::cuda, op,
               "losses must be f32 (N) on the device");
  if (N == 0) return;
  LORA_LAUNCH(mse_loss_kernel, grid_for(N, kThreads), kThreads, 0, ctx.stream)(
      preds.data, preds.dtype, preds.ld, static_cast<float*>(losses.data), static_cast<const float*>(targets.data), N,
      dscale);
  LAUNCH_CHECK();
}

void mat_copy(CudaContext& ctx, const MatRef& dst, const MatRef& src) {
  const char* op = "mat_copy";
  cuda_require(cuda_is_float(dst.dtype) && cuda_is_float(src.dtype), op, "dst and src must be float matrices");
  cuda_require(dst.rows == src.rows && dst.cols == src.cols, op,
               "dst (" + std::to_string(dst.rows) + ", " + std::to_string(dst.cols) + ") and src (" +
                   std::to_string(src.rows) + ", " + std::to_string(src.cols) + ") differ in shape");
  cuda_require(dst.ld >= dst.cols && src.ld >= src.cols, op, "a leading dimension is smaller than the columns");
  const int64_t n = src.rows * src.cols;
  if (n == 0) return;
  LORA_LAUNCH(mat_copy_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(dst.data, dst.dtype, dst.ld, src.data,
                                                                               src.dtype, src.ld, src.rows, src.cols);
  LAUNCH_CHECK();
}

}  // namespace cuda_ops
}  // namespace lora
