// matmul: out = alpha * op(a) op(b) + beta * out through cuBLASLt, fp32 accumulation.
//
// Row-major MatRefs (rows, cols, ld) are column-major matrices transposed, so we ask cuBLASLt for
// out^T = op(b)^T op(a)^T: its first operand is b, its second a, with the transposes carried over.
// Operand dtypes: a and b must have the same dtype (the model casts, e.g. an f32 LoRA master weight to
// its bf16 shadow). Supported (a/b -> out): f32 -> f32 (strict fp32, no TF32), bf16 -> bf16 or f32,
// f16 -> f16 or f32. Column-block views (ld > cols) and unaligned block offsets are fine: the minimum
// alignment of each pointer and leading dimension is passed to the heuristic. Heuristic results are
// cached per problem in the context.
//
// matmul_epilogue fuses what follows a linear layer's product into the same call with cuBLASLt's
// epilogues: BIAS (the bias add), GELU_AUX_BIAS (bias, then the tanh GELU, keeping its input in aux for
// the backward) and DGELU (the product times gelu'(aux): the GELU's input gradient). Each saves one
// read and one write of the (rows, cols) output.
#include <cstdlib>
#include <cstring>
#include <string>

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

// What one cuBLASLt call does after the product: nothing (a plain matmul) or one of its epilogues.
struct LtEpilogue {
  cublasLtEpilogue_t kind = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;  // (out.cols) in out's dtype: cuBLASLt's bias runs along its rows, our columns
  void* aux = nullptr;         // (out.rows, out.cols), ld aux_ld: the GELU's input, written or read
  int64_t aux_ld = 0;
};

static void check_shapes(const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a, bool trans_b,
                         const char* op) {
  const int64_t M = out.rows, N = out.cols;
  const int64_t K = trans_a ? a.rows : a.cols;
  const int64_t a_m = trans_a ? a.cols : a.rows;
  const int64_t b_k = trans_b ? b.cols : b.rows, b_n = trans_b ? b.rows : b.cols;
  auto dims = [](const MatRef& m) { return "(" + std::to_string(m.rows) + ", " + std::to_string(m.cols) + ")"; };
  cuda_require(a_m == M && b_k == K && b_n == N, op,
               "shapes do not match: out " + dims(out) + ", a " + dims(a) + (trans_a ? "^T" : "") + ", b " +
                   dims(b) + (trans_b ? "^T" : ""));
  cuda_require(a.dtype == b.dtype, op,
               std::string("a is ") + dtype_name(a.dtype) + " but b is " + dtype_name(b.dtype) +
                   ": cast one first (operands must share a dtype)");
  bool ok = (a.dtype == DType::f32 && out.dtype == DType::f32) ||
            ((a.dtype == DType::bf16 || a.dtype == DType::f16) && (out.dtype == a.dtype || out.dtype == DType::f32));
  cuda_require(ok, op,
               std::string("unsupported dtypes: ") + dtype_name(a.dtype) + " operands into " + dtype_name(out.dtype));
  cuda_require(a.ld >= a.cols && b.ld >= b.cols && out.ld >= out.cols, op, "ld smaller than cols");
}

// out = alpha op(a) op(b) + beta out, then the epilogue, in one cublasLtMatmul; M, N, K > 0, shapes checked.
// Returns false, having run nothing, when cuBLASLt has no algorithm for an epilogue (remembered per
// problem); for a plain product that is an error.
static bool lt_matmul(CudaContext& ctx, const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a,
                      bool trans_b, float alpha, float beta, const LtEpilogue& ep) {
  const int64_t M = out.rows, N = out.cols, K = trans_a ? a.rows : a.cols;
  const bool plain = ep.kind == CUBLASLT_EPILOGUE_DEFAULT;
  const int64_t align_first = alignment_bytes(b), align_second = alignment_bytes(a), align_out = alignment_bytes(out);
  // The heuristic depends on the epilogue pointers' alignment too.
  const uint64_t ep_bits = reinterpret_cast<uintptr_t>(ep.bias) | reinterpret_cast<uintptr_t>(ep.aux) |
                           uint64_t(ep.aux_ld * int64_t(dtype_size(out.dtype))) | 256u;
  std::array<int64_t, 16> key = {int64_t(a.dtype), int64_t(out.dtype), trans_a, trans_b, M, N, K, a.ld, b.ld, out.ld,
                                 align_first, align_second, align_out, beta != 0.0f, int64_t(ep.kind),
                                 plain ? 0 : int64_t(ep_bits & (~ep_bits + 1))};
  auto found = ctx.matmul_algos.find(key);
  if (found != ctx.matmul_algos.end() && !found->second.found) return false;

  const cudaDataType_t ab_type = cuda_data_type(a.dtype), c_type = cuda_data_type(out.dtype);
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;   // cuBLASLt's A is our b
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our a
  LtDescriptors d;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  if (!plain) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep.kind, sizeof(ep.kind)));
    if (ep.bias)
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ep.bias, sizeof(ep.bias)));
    if (ep.aux) {
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &ep.aux,
                                                  sizeof(ep.aux)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ep.aux_ld,
                                                  sizeof(ep.aux_ld)));
    }
  }
  // Column-major views: a row-major (rows, cols, ld) matrix is a column-major (cols, rows, ld) one.
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, ab_type, uint64_t(b.cols), uint64_t(b.rows), b.ld));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, ab_type, uint64_t(a.cols), uint64_t(a.rows), a.ld));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, c_type, uint64_t(out.cols), uint64_t(out.rows), out.ld));

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
    cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(ctx.lt, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &result, &returned);
    if (plain) {
      CUBLAS_CHECK(status);
      cuda_require(returned > 0, "matmul",
                   "cuBLASLt has no algorithm for M=" + std::to_string(M) + " N=" + std::to_string(N) +
                       " K=" + std::to_string(K) + " (" + dtype_name(a.dtype) + " -> " + dtype_name(out.dtype) + ")");
    }
    CudaContext::LtAlgo algo;
    algo.found = status == CUBLAS_STATUS_SUCCESS && returned > 0;
    algo.algo = result.algo;
    found = ctx.matmul_algos.emplace(key, algo).first;
    if (!algo.found) return false;
  }
  CUBLAS_CHECK(cublasLtMatmul(ctx.lt, d.op, &alpha, b.data, d.a, a.data, d.b, &beta, out.data, d.c, out.data, d.c,
                              &found->second.algo, ctx.lt_workspace, ctx.lt_workspace_bytes, ctx.stream));
  return true;
}

void matmul(CudaContext& ctx, const MatRef& out, const MatRef& a, const MatRef& b, bool trans_a, bool trans_b,
            float alpha, float beta) {
  check_shapes(out, a, b, trans_a, trans_b, "matmul");
  const int64_t K = trans_a ? a.rows : a.cols;
  if (out.rows == 0 || out.cols == 0) return;
  if (K == 0) {
    launch_scale_mat(ctx.stream, out, beta);
    return;
  }
  lt_matmul(ctx, out, a, b, trans_a, trans_b, alpha, beta, LtEpilogue{});
}

bool matmul_epilogue(CudaContext& ctx, Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
                     Epilogue epilogue, const Tensor& bias, Tensor& aux) {
  const MatRef o = mat(out), ma = mat(a), mb = mat(b);
  check_shapes(o, ma, mb, trans_a, trans_b, "matmul_epilogue");
  const bool uses_aux = epilogue != Epilogue::bias;
  cuda_require(!uses_aux || aux.shape == out.shape, "matmul_epilogue",
               "aux must have out's shape " + out.shape_str() + ", got " + aux.shape_str());
  cuda_require(bias.empty() || bias.numel() == o.cols, "matmul_epilogue",
               "bias has " + std::to_string(bias.numel()) + " elements for " + std::to_string(o.cols) + " columns");
  cuda_require(epilogue != Epilogue::bias || !bias.empty(), "matmul_epilogue", "the bias epilogue needs a bias");
  cuda_require(epilogue != Epilogue::dgelu || bias.empty(), "matmul_epilogue", "dgelu takes no bias");
  static const bool disabled = [] {
    const char* v = std::getenv("LORA_EPILOGUES");
    return v && std::string(v) == "off";
  }();
  if (disabled) return false;
  const int64_t K = trans_a ? ma.rows : ma.cols;
  // cuBLASLt takes the bias and the GELU input in the output's dtype, the latter with a leading dimension
  // that is a multiple of 8 elements; it takes no empty product.
  if (o.rows == 0 || o.cols == 0 || K == 0 || (!bias.empty() && bias.dtype != out.dtype) ||
      (uses_aux && (aux.dtype != out.dtype || o.cols % 8 != 0)))
    return false;
  LtEpilogue ep;
  ep.bias = bias.empty() ? nullptr : bias.data;
  if (uses_aux) {
    ep.aux = aux.data;
    ep.aux_ld = o.cols;
  }
  switch (epilogue) {
    case Epilogue::bias: ep.kind = CUBLASLT_EPILOGUE_BIAS; break;
    case Epilogue::bias_gelu: ep.kind = bias.empty() ? CUBLASLT_EPILOGUE_GELU_AUX : CUBLASLT_EPILOGUE_GELU_AUX_BIAS; break;
    case Epilogue::dgelu: ep.kind = CUBLASLT_EPILOGUE_DGELU; break;
  }
  return lt_matmul(ctx, o, ma, mb, trans_a, trans_b, 1.0f, 0.0f, ep);
}

}  // namespace cuda_ops
}  // namespace lora
