// The public entries of the CUDA op files (declarations only). Each takes the backend's CudaContext,
// checks shapes and dtypes, and launches on ctx.stream. Names and argument order follow core/ops/backend.h;
// the contract (parameter gradients +=, activation gradients overwritten) is the same.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <vector>

#include "core/ops/backend.h"
#include "cuda/common.cuh"

namespace lora {

struct CudaContext {
  int device = 0;
  cudaStream_t stream = nullptr;              // the legacy default stream: every op is ordered on it
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;               // cuBLASLt workspace, lt_workspace_bytes
  size_t lt_workspace_bytes = 0;
  // cuBLASLt's heuristic answer per problem; found = false: no algorithm for that epilogue (run unfused).
  struct LtAlgo {
    bool found = false;
    cublasLtMatmulAlgo_t algo;
  };
  std::map<std::array<int64_t, 16>, LtAlgo> matmul_algos;
};

namespace cuda_ops {

// elementwise.cu
void cast(CudaContext& ctx, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n);
void fill(CudaContext& ctx, Tensor& t, float value);
void add(CudaContext& ctx, Tensor& y, const Tensor& a, const Tensor& b, float alpha);
void scale(CudaContext& ctx, Tensor& y, float alpha);
void bias_add(CudaContext& ctx, const MatRef& out, const Tensor& bias);
void bias_backward(CudaContext& ctx, Tensor& dbias, const MatRef& dout);
// dst[c] += sum_k partials[k, c] in a fixed order (deterministic column reductions).  partials (chunks, C)
void add_partials(CudaContext& ctx, void* dst, DType dst_dtype, const float* partials, int chunks, int64_t C);
// Row chunks for a two-pass deterministic column reduction over `rows` rows.
int column_chunks(int64_t rows);

// matmul.cu
void matmul(CudaContext& ctx, const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a, bool trans_b,
            float alpha, float beta);
// out = epilogue(op(a) op(b)) in one cuBLASLt call (core/ops/backend.h, Backend::matmul_epilogue). Returns
// false, having done nothing, where the fused call does not apply (bias or aux in another dtype than out,
// aux rows not a multiple of 8 elements, or no cuBLASLt algorithm for it): the caller runs the ops unfused.
bool matmul_epilogue(CudaContext& ctx, Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
                     Epilogue epilogue, const Tensor& bias, Tensor& aux);

// norm.cu
void layernorm_forward(CudaContext& ctx, Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias, float eps);
void layernorm_backward(CudaContext& ctx, Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd);
void rmsnorm_forward(CudaContext& ctx, Tensor& out, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                     float eps);
void rmsnorm_backward(CudaContext& ctx, Tensor& dinp, Tensor& dweight, const Tensor& dout, const Tensor& inp,
                      const Tensor& weight, const Tensor& rstd);

// activation.cu
void gelu_forward(CudaContext& ctx, Tensor& out, const Tensor& inp, GeluKind kind);
void gelu_backward(CudaContext& ctx, Tensor& dinp, const Tensor& dout, const Tensor& inp, GeluKind kind);
void swiglu_forward(CudaContext& ctx, Tensor& out, const Tensor& gate, const Tensor& up);
void swiglu_backward(CudaContext& ctx, Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                     const Tensor& up);

// rope.cu
void rope(CudaContext& ctx, const MatRef& x, int B, int T, int nheads, int HS, float theta, bool inverse);
void rope_at(CudaContext& ctx, const MatRef& x, const Tensor& positions, int nheads, int HS, float theta);

// attention.cu: lse (B,NH,T) f32 is the `saved` tensor.
void attention_forward(CudaContext& ctx, const MatRef& out, Tensor& lse, const MatRef& q, const MatRef& k,
                       const MatRef& v, const AttentionShape& s, const Tensor& lengths, const AttentionDropout& drop);
void attention_backward(CudaContext& ctx, const MatRef& dq, const MatRef& dk, const MatRef& dv,
                        const MatRef& dout, const MatRef& q, const MatRef& k, const MatRef& v,
                        const MatRef& out, const Tensor& lse, const AttentionShape& s, const Tensor& lengths,
                        const AttentionDropout& drop);

// embedding.cu
void embedding_forward(CudaContext& ctx, Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe);
void embedding_backward(CudaContext& ctx, Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens);

// loss.cu
void cross_entropy(CudaContext& ctx, const MatRef& logits, Tensor& losses, Tensor& argmax, const Tensor& targets,
                   float label_smoothing, float dscale);

// dropout.cu
void dropout_forward(CudaContext& ctx, Tensor& out, const Tensor& inp, float p, uint64_t seed, uint64_t offset);
void dropout_backward(CudaContext& ctx, Tensor& dinp, const Tensor& dout, float p, uint64_t seed, uint64_t offset);

// reduce.cu
double sum_squares(CudaContext& ctx, const Tensor& t);
bool all_finite(CudaContext& ctx, const Tensor& t);

// head.cu (the classification head: tanh, squared error, strided row copies)
void tanh_forward(CudaContext& ctx, Tensor& out, const Tensor& inp);
void tanh_backward(CudaContext& ctx, Tensor& dinp, const Tensor& dout, const Tensor& out);
void mse_loss(CudaContext& ctx, const MatRef& preds, Tensor& losses, const Tensor& targets, float dscale);
void mat_copy(CudaContext& ctx, const MatRef& dst, const MatRef& src);

// optimizer.cu
void adamw_update(CudaContext& ctx, const std::vector<AdamWSlot>& slots, const AdamWParams& p);

}  // namespace cuda_ops
}  // namespace lora
