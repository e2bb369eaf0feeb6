// AdamW (Loshchilov & Hutter 2019, decoupled weight decay, bias-corrected moments) over every slot in
// one launch. The host builds an array of slot descriptors (pointers, size, first block), uploads it, and
// each block finds its slot by binary search over first blocks; a block updates kChunk elements. param,
// grad, m, v are f32; shadow, when present, receives the updated param in its own dtype.
//   g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
//   param -= lr * (m / (1-b1^step) / (sqrt(v / (1-b2^step)) + eps) + wd * param)   (wd only if decay)
#include <cmath>
#include <vector>

#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;
static constexpr int64_t kChunk = kThreads * 8;  // elements per block

struct SlotDesc {
  float* param;
  const float* grad;
  float* m;
  float* v;
  void* shadow;  // null: none
  DType shadow_dtype;
  int64_t n;
  int64_t first_block;
  float weight_decay;  // 0 for slots without decay
};

struct AdamWArgs {
  float lr, beta1, beta2, eps, grad_scale, bias_correction1, bias_correction2;
};

static __global__ void adamw_kernel(const SlotDesc* slots, int nslots, AdamWArgs a) {
  int lo = 0, hi = nslots - 1;  // last slot whose first_block <= blockIdx.x
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (slots[mid].first_block <= int64_t(blockIdx.x)) lo = mid; else hi = mid - 1;
  }
  const SlotDesc s = slots[lo];
  const int64_t begin = (int64_t(blockIdx.x) - s.first_block) * kChunk;
  const int64_t end = min(begin + kChunk, s.n);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float g = s.grad[i] * a.grad_scale;
    const float m = a.beta1 * s.m[i] + (1.0f - a.beta1) * g;
    const float v = a.beta2 * s.v[i] + (1.0f - a.beta2) * g * g;
    s.m[i] = m;
    s.v[i] = v;
    const float mhat = m / a.bias_correction1, vhat = v / a.bias_correction2;
    float p = s.param[i];
    p -= a.lr * (mhat / (sqrtf(vhat) + a.eps) + s.weight_decay * p);
    s.param[i] = p;
    if (s.shadow) store_elem(s.shadow, s.shadow_dtype, i, p);
  }
}

void adamw_update(CudaContext& ctx, const std::vector<AdamWSlot>& slots, const AdamWParams& p) {
  const char* op = "adamw_update";
  cuda_require(p.step >= 1, op, "step is 1-based");
  std::vector<SlotDesc> desc;
  int64_t blocks = 0;
  for (const AdamWSlot& slot : slots) {
    cuda_require(slot.param && slot.grad && slot.m && slot.v, op, "a slot lacks param, grad, m or v");
    const int64_t n = slot.param->numel();
    for (const Tensor* t : {static_cast<const Tensor*>(slot.param), slot.grad, static_cast<const Tensor*>(slot.m),
                            static_cast<const Tensor*>(slot.v)})
      cuda_require(t->dtype == DType::f32 && t->numel() == n && t->device == Device::cuda, op,
                   "param, grad, m and v must be f32 GPU tensors of equal numel, got " + t->shape_str() + " " +
                       dtype_name(t->dtype));
    const bool has_shadow = slot.shadow && !slot.shadow->empty() && slot.shadow->data != slot.param->data;
    if (has_shadow)
      cuda_require(slot.shadow->numel() == n && cuda_is_float(slot.shadow->dtype), op, "shadow must match param");
    if (n == 0) continue;
    SlotDesc d{};
    d.param = slot.param->f32();
    d.grad = slot.grad->f32();
    d.m = slot.m->f32();
    d.v = slot.v->f32();
    d.shadow = has_shadow ? slot.shadow->data : nullptr;
    d.shadow_dtype = has_shadow ? slot.shadow->dtype : DType::f32;
    d.n = n;
    d.first_block = blocks;
    d.weight_decay = slot.decay ? p.weight_decay : 0.0f;
    desc.push_back(d);
    blocks += (n + kChunk - 1) / kChunk;
  }
  if (desc.empty()) return;
  cuda_require(blocks < (int64_t(1) << 31), op, "too many parameters for one launch");
  AdamWArgs a;
  a.lr = p.lr;
  a.beta1 = p.beta1;
  a.beta2 = p.beta2;
  a.eps = p.eps;
  a.grad_scale = p.grad_scale;
  a.bias_correction1 = float(1.0 - std::pow(double(p.beta1), double(p.step)));
  a.bias_correction2 = float(1.0 - std::pow(double(p.beta2), double(p.step)));
  const size_t bytes = desc.size() * sizeof(SlotDesc);
  ScratchBuffer device_desc(bytes, ctx.stream);
  CUDA_CHECK(cudaMemcpyAsync(device_desc.get(), desc.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
  LORA_LAUNCH(adamw_kernel, unsigned(blocks), kThreads, 0, ctx.stream)(static_cast<const SlotDesc*>(device_desc.get()),
                                                              int(desc.size()), a);
  LAUNCH_CHECK();
}

}  // namespace cuda_ops
}  // namespace lora
