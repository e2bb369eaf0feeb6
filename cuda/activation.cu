// Activations: GELU in its tanh and erf forms (Hendrycks & Gimpel 2016), and SwiGLU (Shazeer 2020):
// out = silu(gate) * up. Elementwise, any float dtype, fp32 arithmetic. Backward outputs are overwritten
// and may alias dout (each element is read before it is written).
#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;
static constexpr float kSqrt2OverPi = 0.7978845608028654f;
static constexpr float kInvSqrt2 = 0.7071067811865476f;
static constexpr float kInvSqrt2Pi = 0.3989422804014327f;

static __device__ __forceinline__ float gelu(float x, bool tanh_form) {
  if (tanh_form) return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
}

static __device__ __forceinline__ float gelu_grad(float x, bool tanh_form) {
  if (tanh_form) {
    float t = tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
  }
  return 0.5f * (1.0f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
}

static __device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static __global__ void gelu_forward_kernel(void* out, DType to, const void* inp, DType ti, int64_t n, bool tanh_form) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_elem(out, to, i, gelu(load_elem(inp, ti, i), tanh_form));
}

static __global__ void gelu_backward_kernel(void* dinp, DType tdi, const void* dout, DType tdo, const void* inp,
                                            DType ti, int64_t n, bool tanh_form) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_elem(dinp, tdi, i, load_elem(dout, tdo, i) * gelu_grad(load_elem(inp, ti, i), tanh_form));
}

static __global__ void swiglu_forward_kernel(void* out, DType to, const void* gate, DType tg, const void* up, DType tu,
                                             int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float g = load_elem(gate, tg, i);
    store_elem(out, to, i, g * sigmoid(g) * load_elem(up, tu, i));
  }
}

// d silu(g)/dg = s * (1 + g * (1 - s)), s = sigmoid(g)
static __global__ void swiglu_backward_kernel(void* dgate, DType tdg, void* dup, DType tdu, const void* dout, DType tdo,
                                              const void* gate, DType tg, const void* up, DType tu, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float d = load_elem(dout, tdo, i), g = load_elem(gate, tg, i), u = load_elem(up, tu, i);
    float s = sigmoid(g);
    store_elem(dgate, tdg, i, d * u * s * (1.0f + g * (1.0f - s)));
    store_elem(dup, tdu, i, d * g * s);
  }
}

static void check_same(const char* op, const Tensor& t, int64_t n, const char* name) {
  cuda_require(t.numel() == n && cuda_is_float(t.dtype), op,
               std::string(name) + " " + t.shape_str() + " must be a float tensor of " + std::to_string(n) + " elements");
}

void gelu_forward(CudaContext& ctx, Tensor& out, const Tensor& inp, GeluKind kind) {
  int64_t n = inp.numel();
  check_same("gelu_forward", inp, n, "inp");
  check_same("gelu_forward", out, n, "out");
  if (n == 0) return;
  LORA_LAUNCH(gelu_forward_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(out.data, out.dtype, inp.data, inp.dtype, n,
                                                                          kind == GeluKind::tanh);
  LAUNCH_CHECK();
}

void gelu_backward(CudaContext& ctx, Tensor& dinp, const Tensor& dout, const Tensor& inp, GeluKind kind) {
  int64_t n = inp.numel();
  check_same("gelu_backward", inp, n, "inp");
  check_same("gelu_backward", dout, n, "dout");
  check_same("gelu_backward", dinp, n, "dinp");
  if (n == 0) return;
  LORA_LAUNCH(gelu_backward_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(
      dinp.data, dinp.dtype, dout.data, dout.dtype, inp.data, inp.dtype, n, kind == GeluKind::tanh);
  LAUNCH_CHECK();
}

void swiglu_forward(CudaContext& ctx, Tensor& out, const Tensor& gate, const Tensor& up) {
  int64_t n = gate.numel();
  check_same("swiglu_forward", gate, n, "gate");
  check_same("swiglu_forward", up, n, "up");
  check_same("swiglu_forward", out, n, "out");
  if (n == 0) return;
  LORA_LAUNCH(swiglu_forward_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(out.data, out.dtype, gate.data,
                                                                            gate.dtype, up.data, up.dtype, n);
  LAUNCH_CHECK();
}

void swiglu_backward(CudaContext& ctx, Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                     const Tensor& up) {
  int64_t n = gate.numel();
  check_same("swiglu_backward", gate, n, "gate");
  check_same("swiglu_backward", up, n, "up");
  check_same("swiglu_backward", dout, n, "dout");
  check_same("swiglu_backward", dgate, n, "dgate");
  check_same("swiglu_backward", dup, n, "dup");
  if (n == 0) return;
  LORA_LAUNCH(swiglu_backward_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(
      dgate.data, dgate.dtype, dup.data, dup.dtype, dout.data, dout.dtype, gate.data, gate.dtype, up.data, up.dtype, n);
  LAUNCH_CHECK();
}

}  // namespace cuda_ops
}  // namespace lora
