// The CUDA backend: lora::Backend on one GPU (device 0; pick another with CUDA_VISIBLE_DEVICES).
//
// Every op runs on one stream (the legacy default stream), so ops, copies and frees are ordered without
// events. Memory comes from the device's default stream-ordered pool (cudaMallocAsync) with its release
// threshold raised, so freed blocks are cached and reused: this is the caching allocator. alloc
// zero-fills; a tensor's owner frees with cudaFreeAsync and may outlive the backend. Activations are
// bf16 by default (f16 or f32 by choice); the ops accept any float dtype per tensor. upload / download
// convert f32 host data on the device. The ops themselves live in one file each (cuda/ops.cuh).
// LORA_PROFILE=1 times every op on the GPU and prints the table when the backend goes (cuda/profile.cuh).
#include <dlfcn.h>

#include <cstdint>
#include <stdexcept>

#include "core/base/error.h"
#include "cuda/backend_cuda.h"
#include "cuda/ops.cuh"
#include "cuda/profile.cuh"

namespace lora {

namespace cuda_ops {
// attention_decode.cu (its declaration belongs in cuda/ops.cuh with the other op entries).
void attention_decode(CudaContext& ctx, const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v,
                      Tensor& k_cache, Tensor& v_cache, const Tensor& start, const Tensor& slot_rows, int slot0,
                      const AttentionShape& s);
}  // namespace cuda_ops

// Exists only so that creation can ask whether this binary has a kernel image for the GPU.
static __global__ void probe_kernel() {}

static constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's advice for Hopper

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DType activations) : act_(activations) {
    ctx_.device = device;
    CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = "cuda:" + std::to_string(device) + " (" + prop.name + ")";
    cudaFuncAttributes attr;
    cudaError_t err = cudaFuncGetAttributes(&attr, probe_kernel);
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw Error(EXIT_CODE_RUNTIME, std::string("this build has no kernels for ") + prop.name + " (compute " +
                                         std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                                         "): " + cudaGetErrorString(err),
                  "rebuild with -DCMAKE_CUDA_ARCHITECTURES=" + std::to_string(prop.major * 10 + prop.minor));
    }
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    CUBLAS_CHECK(cublasLtCreate(&ctx_.lt));
    CUDA_CHECK(cudaMalloc(&ctx_.lt_workspace, kLtWorkspaceBytes));
    ctx_.lt_workspace_bytes = kLtWorkspaceBytes;
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(ctx_.stream);  // no throwing from a destructor
    if (ctx_.lt) cublasLtDestroy(ctx_.lt);
    if (ctx_.lt_workspace) cudaFree(ctx_.lt_workspace);
  }

  Device device() const override { return Device::cuda; }
  std::string name() const override { return name_; }
  DType activation_dtype() const override { return act_; }
  int64_t workspace_bytes() const override { return int64_t(ctx_.lt_workspace_bytes); }
  int64_t memory_peak() override {
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, ctx_.device));
    uint64_t high = 0;  // every tensor comes from this pool (alloc); the cuBLASLt workspace does not
    CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high));
    return int64_t(high) + int64_t(ctx_.lt_workspace_bytes);
  }
  int64_t memory_free() override {
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return int64_t(free_bytes);
  }

  Tensor alloc(std::vector<int64_t> shape, DType dtype) override {
    Tensor t;
    t.dtype = dtype;
    t.device = Device::cuda;
    t.shape = std::move(shape);
    const size_t bytes = t.nbytes();
    void* p = nullptr;
    cudaError_t err = cudaMallocAsync(&p, bytes ? bytes : 16, ctx_.stream);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      fail_runtime("out of GPU memory allocating " + std::to_string(bytes >> 20) + " MiB for a tensor " +
                       t.shape_str() + " (" + std::to_string(free_bytes >> 20) + " MiB free of " +
                       std::to_string(total_bytes >> 20) + ")",
                   "lower train.batch_size or data.max_length");
    }
    CUDA_CHECK(err);
    cudaStream_t stream = ctx_.stream;
    t.owner = std::shared_ptr<void>(p, [stream](void* q) { cudaFreeAsync(q, stream); });
    t.data = p;
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx_.stream));
    return t;
  }

  void upload(Tensor& dst, const Tensor& host) override {
    OpProfiler::Scope scope(prof_, "upload");
    cuda_require(host.device == Device::cpu && dst.device == Device::cuda, "upload", "expects host -> GPU");
    cuda_require(host.numel() == dst.numel(), "upload",
                 "numel differs: dst " + dst.shape_str() + ", host " + host.shape_str());
    const int64_t n = host.numel();
    if (n == 0) return;
    if (host.dtype == DType::i32 || host.dtype == dst.dtype) {
      cuda_require(host.dtype == dst.dtype, "upload", "i32 host data needs an i32 tensor");
      CUDA_CHECK(cudaMemcpyAsync(dst.data, host.data, host.nbytes(), cudaMemcpyHostToDevice, ctx_.stream));
      return;
    }
    cuda_require(host.dtype == DType::f32, "upload", "host data must be f32 or i32");
    ScratchBuffer staging(host.nbytes(), ctx_.stream);
    CUDA_CHECK(cudaMemcpyAsync(staging.get(), host.data, host.nbytes(), cudaMemcpyHostToDevice, ctx_.stream));
    cuda_ops::cast(ctx_, dst.data, dst.dtype, staging.get(), DType::f32, n);
  }

  Tensor download(const Tensor& src) override {
    OpProfiler::Scope scope(prof_, "download");
    cuda_require(src.device == Device::cuda, "download", "tensor is not on the GPU");
    Tensor host = tensor_host(src.shape, src.dtype == DType::i32 ? DType::i32 : DType::f32);
    const int64_t n = src.numel();
    if (n == 0) return host;
    if (src.dtype == host.dtype) {
      CUDA_CHECK(cudaMemcpyAsync(host.data, src.data, host.nbytes(), cudaMemcpyDeviceToHost, ctx_.stream));
    } else {
      ScratchBuffer staging(host.nbytes(), ctx_.stream);
      cuda_ops::cast(ctx_, staging.get(), DType::f32, src.data, src.dtype, n);
      CUDA_CHECK(cudaMemcpyAsync(host.data, staging.get(), host.nbytes(), cudaMemcpyDeviceToHost, ctx_.stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    return host;
  }

  void copy(Tensor& dst, const Tensor& src) override {
    OpProfiler::Scope scope(prof_, "copy");
    cuda_require(dst.device == Device::cuda && src.device == Device::cuda, "copy", "both tensors must be on the GPU");
    cuda_require(dst.numel() == src.numel(), "copy", "numel differs: " + dst.shape_str() + " vs " + src.shape_str());
    cuda_require((dst.dtype == DType::i32) == (src.dtype == DType::i32), "copy", "cannot convert between i32 and float");
    cuda_ops::cast(ctx_, dst.data, dst.dtype, src.data, src.dtype, src.numel());
  }

  void fill(Tensor& t, float value) override {
    OpProfiler::Scope scope(prof_, "fill");
    cuda_ops::fill(ctx_, t, value);
  }
  void mat_copy(const MatRef& dst, const MatRef& src) override {
    OpProfiler::Scope scope(prof_, "mat_copy");
    cuda_ops::mat_copy(ctx_, dst, src);
  }

  void matmul(const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a, bool trans_b, float alpha,
              float beta) override {
    OpProfiler::Scope scope(prof_, prof_.enabled() ? matmul_name(out, a, trans_a, trans_b) : std::string());
    cuda_ops::matmul(ctx_, out, a, b, trans_a, trans_b, alpha, beta);
  }
  void matmul_epilogue(Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, Epilogue epilogue,
                       const Tensor& bias, Tensor& aux) override {
    {
      static const char* const kSuffix[] = {"+bias", "+bias+gelu", "+dgelu"};
      OpProfiler::Scope scope(prof_, prof_.enabled() ? matmul_name(mat(out), mat(a), trans_a, trans_b) +
                                                           kSuffix[int(epilogue)]
                                                     : std::string());
      if (cuda_ops::matmul_epilogue(ctx_, out, a, b, trans_a, trans_b, epilogue, bias, aux)) return;
    }
    Backend::matmul_epilogue(out, a, b, trans_a, trans_b, epilogue, bias, aux);  // unfused, op by op
  }
  void bias_add(const MatRef& out, const Tensor& bias) override {
    OpProfiler::Scope scope(prof_, "bias_add");
    cuda_ops::bias_add(ctx_, out, bias);
  }
  void bias_backward(Tensor& dbias, const MatRef& dout) override {
    OpProfiler::Scope scope(prof_, "bias_backward");
    cuda_ops::bias_backward(ctx_, dbias, dout);
  }
  void add(Tensor& y, const Tensor& a, const Tensor& b, float alpha) override {
    OpProfiler::Scope scope(prof_, "add");
    cuda_ops::add(ctx_, y, a, b, alpha);
  }
  void scale(Tensor& y, float alpha) override {
    OpProfiler::Scope scope(prof_, "scale");
    cuda_ops::scale(ctx_, y, alpha);
  }

  void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                         const Tensor& bias, float eps) override {
    OpProfiler::Scope scope(prof_, "layernorm_forward");
    cuda_ops::layernorm_forward(ctx_, out, mean, rstd, inp, weight, bias, eps);
  }
  void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout, const Tensor& inp,
                          const Tensor& weight, const Tensor& mean, const Tensor& rstd) override {
    OpProfiler::Scope scope(prof_, "layernorm_backward");
    cuda_ops::layernorm_backward(ctx_, dinp, dweight, dbias, dout, inp, weight, mean, rstd);
  }
  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight, float eps) override {
    OpProfiler::Scope scope(prof_, "rmsnorm_forward");
    cuda_ops::rmsnorm_forward(ctx_, out, rstd, inp, weight, eps);
  }
  void rmsnorm_backward(Tensor& dinp, Tensor& dweight, const Tensor& dout, const Tensor& inp, const Tensor& weight,
                        const Tensor& rstd) override {
    OpProfiler::Scope scope(prof_, "rmsnorm_backward");
    cuda_ops::rmsnorm_backward(ctx_, dinp, dweight, dout, inp, weight, rstd);
  }

  void gelu_forward(Tensor& out, const Tensor& inp, GeluKind kind) override {
    OpProfiler::Scope scope(prof_, "gelu_forward");
    cuda_ops::gelu_forward(ctx_, out, inp, kind);
  }
  void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp, GeluKind kind) override {
    OpProfiler::Scope scope(prof_, "gelu_backward");
    cuda_ops::gelu_backward(ctx_, dinp, dout, inp, kind);
  }
  void tanh_forward(Tensor& out, const Tensor& inp) override {
    OpProfiler::Scope scope(prof_, "tanh_forward");
    cuda_ops::tanh_forward(ctx_, out, inp);
  }
  void tanh_backward(Tensor& dinp, const Tensor& dout, const Tensor& out) override {
    OpProfiler::Scope scope(prof_, "tanh_backward");
    cuda_ops::tanh_backward(ctx_, dinp, dout, out);
  }
  void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) override {
    OpProfiler::Scope scope(prof_, "swiglu_forward");
    cuda_ops::swiglu_forward(ctx_, out, gate, up);
  }
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate, const Tensor& up) override {
    OpProfiler::Scope scope(prof_, "swiglu_backward");
    cuda_ops::swiglu_backward(ctx_, dgate, dup, dout, gate, up);
  }
  void rope(const MatRef& x, int B, int T, int nheads, int HS, float theta, bool inverse) override {
    OpProfiler::Scope scope(prof_, "rope");
    cuda_ops::rope(ctx_, x, B, T, nheads, HS, theta, inverse);
  }
  void rope_at(const MatRef& x, const Tensor& positions, int nheads, int HS, float theta) override {
    OpProfiler::Scope scope(prof_, "rope_at");
    cuda_ops::rope_at(ctx_, x, positions, nheads, HS, theta);
  }

  Tensor attention_forward(const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v,
                           const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) override {
    OpProfiler::Scope scope(prof_, "attention_forward");
    Tensor lse = alloc({s.B, s.NH, s.T}, DType::f32);  // (B,NH,T)
    cuda_ops::attention_forward(ctx_, out, lse, q, k, v, s, lengths, drop);
    return lse;
  }
  void attention_backward(const MatRef& dq, const MatRef& dk, const MatRef& dv, const MatRef& dout, const MatRef& q,
                          const MatRef& k, const MatRef& v, const MatRef& out, const Tensor& saved,
                          const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop) override {
    OpProfiler::Scope scope(prof_, "attention_backward");
    cuda_ops::attention_backward(ctx_, dq, dk, dv, dout, q, k, v, out, saved, s, lengths, drop);
  }

  void attention_decode(const MatRef& out, const MatRef& q, const MatRef& k, const MatRef& v, Tensor& k_cache,
                        Tensor& v_cache, const Tensor& start, const Tensor& slot_rows, int slot0,
                        const AttentionShape& s) override {
    OpProfiler::Scope scope(prof_, "attention_decode");
    cuda_ops::attention_decode(ctx_, out, q, k, v, k_cache, v_cache, start, slot_rows, slot0, s);
  }

  void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) override {
    OpProfiler::Scope scope(prof_, "embedding_forward");
    cuda_ops::embedding_forward(ctx_, out, tokens, wte, wpe);
  }
  void embedding_backward(Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens) override {
    OpProfiler::Scope scope(prof_, "embedding_backward");
    cuda_ops::embedding_backward(ctx_, dwte, dwpe, dout, tokens);
  }

  void cross_entropy(const MatRef& logits, Tensor& losses, Tensor& argmax, const Tensor& targets,
                     float label_smoothing, float dscale) override {
    OpProfiler::Scope scope(prof_, "cross_entropy");
    cuda_ops::cross_entropy(ctx_, logits, losses, argmax, targets, label_smoothing, dscale);
  }

  void mse_loss(const MatRef& preds, Tensor& losses, const Tensor& targets, float dscale) override {
    OpProfiler::Scope scope(prof_, "mse_loss");
    cuda_ops::mse_loss(ctx_, preds, losses, targets, dscale);
  }
  void dropout_forward(Tensor& out, const Tensor& inp, float p, uint64_t seed, uint64_t offset) override {
    OpProfiler::Scope scope(prof_, "dropout_forward");
    cuda_ops::dropout_forward(ctx_, out, inp, p, seed, offset);
  }
  void dropout_backward(Tensor& dinp, const Tensor& dout, float p, uint64_t seed, uint64_t offset) override {
    OpProfiler::Scope scope(prof_, "dropout_backward");
    cuda_ops::dropout_backward(ctx_, dinp, dout, p, seed, offset);
  }

  double sum_squares(const Tensor& t) override {
    OpProfiler::Scope scope(prof_, "sum_squares");
    return cuda_ops::sum_squares(ctx_, t);
  }
  bool all_finite(const Tensor& t) override {
    OpProfiler::Scope scope(prof_, "all_finite");
    return cuda_ops::all_finite(ctx_, t);
  }
  void adamw_update(const std::vector<AdamWSlot>& slots, const AdamWParams& p) override {
    OpProfiler::Scope scope(prof_, "adamw_update");
    cuda_ops::adamw_update(ctx_, slots, p);
  }

 private:
  // "matmul MxNxK dtype" for the profile: which products take the time.
  static std::string matmul_name(const MatRef& out, const MatRef& a, bool trans_a, bool trans_b) {
    const int64_t K = trans_a ? a.rows : a.cols;
    return "matmul " + std::to_string(out.rows) + "x" + std::to_string(out.cols) + "x" + std::to_string(K) + " " +
           dtype_name(a.dtype) + (trans_a ? " Ta" : "") + (trans_b ? " Tb" : "");
  }

  CudaContext ctx_;
  DType act_;
  std::string name_;
  OpProfiler prof_{nullptr, OpProfiler::requested()};  // nullptr: ctx_.stream, the legacy default stream
};

std::unique_ptr<Backend> backend_cuda_create(std::string* why_not, DType activations) {
  std::string reason;
  if (!cuda_is_float(activations)) {
    reason = std::string("activations must be bf16, f16 or f32, not ") + dtype_name(activations);
  } else {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();
      reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
    } else if (count == 0) {
      reason = "no CUDA device found";
    } else {
      try {
        return std::make_unique<CudaBackend>(0, activations);
      } catch (const std::exception& e) {
        reason = e.what();
      }
    }
  }
  if (why_not) *why_not = reason;
  return nullptr;
}

bool cuda_driver_absent() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  cudaGetLastError();
  if (err == cudaErrorNoDevice || err == cudaErrorStubLibrary) return true;
  if (err != cudaErrorInsufficientDriver) return false;
  // The runtime says "insufficient driver" both where no driver is installed and where it is too old:
  // only a libcuda that cannot be loaded at all means no driver.
  void* lib = ::dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (lib) ::dlclose(lib);
  return lib == nullptr;
}

}  // namespace lora
