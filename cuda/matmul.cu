// matmul: out = alpha * op(a) op(b) + beta * out through cuBLASLt, fp32 accumulation.
//
// Row-major MatRefs (rows, cols, ld) are column-major matrices transposed, so we ask cuBLASLt for
// out^T = op(b)^T op(a)^T: its first operand is b, its second a, with the transposes carried over.
// Operand dtypes: a and b must have the same dtype (the model casts, e.g. an f32 LoRA master weight to
// its bf16 shadow). Supported (a/b -> out): f32 -> f32 (strict fp32, no TF32), bf16 -> bf16 or f32,
// f16 -> f16 or f32. Column-block views (ld > cols) and unaligned block offsets are fine: the minimum
// alignment of each pointer and leading dimension is passed to the heuristic. Heuristic results are
// cached per problem in the context.
#include <cstring>

#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

// out (rows, cols, ld) = beta * out: the K == 0 case, which cuBLASLt does not take.
static __global__ void scale_mat_kernel(MatRef out, float beta) {
  int64_t n = out.rows * out.cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = (i / out.cols) * out.ld + i % out.cols;
    store_elem(out.data, out.dtype, o, beta == 0.0f ? 0.0f : beta * load_elem(out.data, out.dtype, o));
  }
}

static void launch_scale_mat(cudaStream_t stream, const MatRef& out, float beta) {
  int64_t n = out.rows * out.cols;
  LORA_LAUNCH(scale_mat_kernel, grid_for(n, 256), 256, 0, stream)(out, beta);
  LAUNCH_CHECK();
}

static cudaDataType_t cuda_data_type(DType t) {
  switch (t) {
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

// Largest power of two (at most 256) dividing both the address and the leading dimension in bytes.
static int64_t alignment_bytes(const MatRef& m) {
  uint64_t bits = reinterpret_cast<uintptr_t>(m.data) | uint64_t(m.ld * int64_t(dtype_size(m.dtype))) | 256u;
  return int64_t(bits & (~bits + 1));
}

// Owns the cuBLASLt descriptors of one call.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

void matmul(CudaContext& ctx, const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a, bool trans_b,
            float alpha, float beta) {
  const int64_t M = out.rows, N = out.cols;
  const int64_t K = trans_a ? a.rows : a.cols;
  const int64_t a_m = trans_a ? a.cols : a.rows;
  const int64_t b_k = trans_b ? b.cols : b.rows, b_n = trans_b ? b.rows : b.cols;
  auto dims = [](const MatRef& m) { return "(" + std::to_string(m.rows) + ", " + std::to_string(m.cols) + ")"; };
  cuda_require(a_m == M && b_k == K && b_n == N, "matmul",
               "shapes do not match: out " + dims(out) + ", a " + dims(a) + (trans_a ? "^T" : "") + ", b " +
                   dims(b) + (trans_b ? "^T" : ""));
  cuda_require(a.dtype == b.dtype, "matmul",
               std::string("a is ") + dtype_name(a.dtype) + " but b is " + dtype_name(b.dtype) +
                   ": cast one first (operands must share a dtype)");
  bool ok = (a.dtype == DType::f32 && out.dtype == DType::f32) ||
            ((a.dtype == DType::bf16 || a.dtype == DType::f16) && (out.dtype == a.dtype || out.dtype == DType::f32));
  cuda_require(ok, "matmul",
               std::string("unsupported dtypes: ") + dtype_name(a.dtype) + " operands into " + dtype_name(out.dtype));
  cuda_require(a.ld >= a.cols && b.ld >= b.cols && out.ld >= out.cols, "matmul", "ld smaller than cols");
  if (M == 0 || N == 0) return;
  if (K == 0) {
    launch_scale_mat(ctx.stream, out, beta);
    return;
  }

  const cudaDataType_t ab_type = cuda_data_type(a.dtype), c_type = cuda_data_type(out.dtype);
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;   // cuBLASLt's A is our b
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our a
  LtDescriptors d;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  // Column-major views: a row-major (rows, cols, ld) matrix is a column-major (cols, rows, ld) one.
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, ab_type, uint64_t(b.cols), uint64_t(b.rows), b.ld));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, ab_type, uint64_t(a.cols), uint64_t(a.rows), a.ld));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, c_type, uint64_t(out.cols), uint64_t(out.rows), out.ld));

  const int64_t align_first = alignment_bytes(b), align_second = alignment_bytes(a), align_out = alignment_bytes(out);
  std::array<int64_t, 16> key = {int64_t(a.dtype), int64_t(out.dtype), trans_a, trans_b, M, N, K, a.ld, b.ld, out.ld,
                                 align_first, align_second, align_out, beta != 0.0f, 0, 0};
  auto found = ctx.matmul_algos.find(key);
  if (found == ctx.matmul_algos.end()) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref));
    uint64_t workspace = ctx.lt_workspace_bytes;
    uint32_t align_a = uint32_t(align_first), align_b = uint32_t(align_second), align_c = uint32_t(align_out);
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                      sizeof(workspace)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                      sizeof(align_a)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                      sizeof(align_b)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                      sizeof(align_c)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                      sizeof(align_c)));
    cublasLtMatmulHeuristicResult_t result;
    std::memset(&result, 0, sizeof(result));
    int returned = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.lt, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &returned));
    cuda_require(returned > 0, "matmul",
                 "cuBLASLt has no algorithm for M=" + std::to_string(M) + " N=" + std::to_string(N) +
                     " K=" + std::to_string(K) + " (" + dtype_name(a.dtype) + " -> " + dtype_name(out.dtype) + ")");
    found = ctx.matmul_algos.emplace(key, result.algo).first;
  }
  CUBLAS_CHECK(cublasLtMatmul(ctx.lt, d.op, &alpha, b.data, d.a, a.data, d.b, &beta, out.data, d.c, out.data, d.c,
                              &found->second, ctx.lt_workspace, ctx.lt_workspace_bytes, ctx.stream));
}

}  // namespace cuda_ops
}  // namespace lora
