// The cuBLASLt functions cuda/matmul.cu calls, emulated on the CPU for tests/emu (see cuda_emu.h):
// D = alpha op(A) op(B) + beta C on column-major matrices, as cuBLASLt documents it, accumulated in
// double and rounded once to D's type, then the epilogues matmul.cu uses, as cublasLt.h documents them:
// BIAS (a bias vector in D's type along D's rows, added to every column), GELU_AUX / GELU_AUX_BIAS (the
// GELU's input, bias included, stored in D's type in the aux matrix, GELU of the unrounded value in D)
// and DGELU (the product times GELU'(aux)); the GELU is the tanh form. It checks what cuBLASLt would
// refuse: shapes that do not chain, leading dimensions smaller than a column, mixed A/B types, C and D
// differing in layout, an aux leading dimension that is not a multiple of 8 or is shorter than D's
// rows, a missing bias or aux pointer, and operands that lie outside device allocations.
#include <cublasLt.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/emu/cuda_emu.h"

namespace lora_emu {
bool is_device(const void* p, size_t bytes);
}

namespace {

struct Desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  void* aux = nullptr;
  int64_t aux_ld = 0;
};

struct Layout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};

size_t type_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

double load(const void* p, cudaDataType_t t, int64_t i) {
  switch (t) {
    case CUDA_R_16BF: return double(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
    case CUDA_R_16F: return double(__half2float(static_cast<const __half*>(p)[i]));
    default: return double(static_cast<const float*>(p)[i]);
  }
}

void store(void* p, cudaDataType_t t, int64_t i, double x) {
  switch (t) {
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(float(x)); break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half_rn(float(x)); break;
    default: static_cast<float*>(p)[i] = float(x); break;
  }
}

cublasStatus_t refuse(const std::string& why) {
  std::fprintf(stderr, "lora_emu: cublasLtMatmul refused: %s\n", why.c_str());
  return CUBLAS_STATUS_INVALID_VALUE;
}

bool known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

// The tanh form of GELU and its derivative.
double gelu_tanh(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}
double gelu_tanh_grad(double x) {
  const double c = std::sqrt(2.0 / M_PI), u = c * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
}

// Bytes a column-major (rows, cols, ld) matrix spans.
size_t span_bytes(const Layout& l) { return ((l.cols - 1) * uint64_t(l.ld) + l.rows) * type_size(l.type); }

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  static int dummy;
  *handle = reinterpret_cast<cublasLtHandle_t>(&dummy);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasLtGetStatusString(cublasStatus_t status) {
  return status == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE (emulated)";
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(new Desc{compute, scale});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete reinterpret_cast<Desc*>(desc);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  Desc* d = reinterpret_cast<Desc*>(desc);
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA || attr == CUBLASLT_MATMUL_DESC_TRANSB) {
    if (bytes != sizeof(cublasOperation_t)) return refuse("transpose attribute of the wrong size");
    cublasOperation_t op;
    std::memcpy(&op, buf, sizeof(op));
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return refuse("a transpose other than N or T");
    (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->trans_a : d->trans_b) = op;
    return CUBLAS_STATUS_SUCCESS;
  }
  auto take = [&](void* dst, size_t size) {
    if (bytes != size) return refuse("attribute " + std::to_string(int(attr)) + " of the wrong size");
    std::memcpy(dst, buf, size);
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
      uint32_t e = 0;
      if (cublasStatus_t st = take(&e, sizeof(e)); st != CUBLAS_STATUS_SUCCESS) return st;
      d->epilogue = cublasLtEpilogue_t(e);
      switch (d->epilogue) {
        case CUBLASLT_EPILOGUE_DEFAULT: case CUBLASLT_EPILOGUE_BIAS: case CUBLASLT_EPILOGUE_GELU_AUX:
        case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: case CUBLASLT_EPILOGUE_DGELU:
          return CUBLAS_STATUS_SUCCESS;
        default: return refuse("epilogue " + std::to_string(e) + " is not emulated");
      }
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return take(&d->bias, sizeof(d->bias));
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return take(&d->aux, sizeof(d->aux));
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return take(&d->aux_ld, sizeof(d->aux_ld));
    default: return refuse("matmul descriptor attribute " + std::to_string(int(attr)) + " is not emulated");
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!known_type(type)) return refuse("matrix type " + std::to_string(int(type)) + " is not emulated");
  if (ld < int64_t(rows)) return refuse("ld " + std::to_string(ld) + " < rows " + std::to_string(rows));
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete reinterpret_cast<Layout*>(layout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  static int dummy;
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(&dummy);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                    const void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (requested < 1) return refuse("requested no algorithm");
  std::memset(&results[0], 0, sizeof(results[0]));
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t computeDesc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void*, size_t,
                              cudaStream_t stream) {
  const Desc& d = *reinterpret_cast<const Desc*>(computeDesc);
  const Layout& la = *reinterpret_cast<const Layout*>(Adesc);
  const Layout& lb = *reinterpret_cast<const Layout*>(Bdesc);
  const Layout& lc = *reinterpret_cast<const Layout*>(Cdesc);
  const Layout& ld = *reinterpret_cast<const Layout*>(Ddesc);
  if (!algo) return refuse("no algorithm");
  if (d.compute != CUBLAS_COMPUTE_32F || d.scale != CUDA_R_32F) return refuse("compute/scale type other than 32F");
  if (la.type != lb.type) return refuse("A and B of different types");
  if (lc.type != ld.type || lc.rows != ld.rows || lc.cols != ld.cols || lc.ld != ld.ld)
    return refuse("C and D layouts differ");
  if (la.type == CUDA_R_32F && ld.type != CUDA_R_32F) return refuse("32F operands into a 16-bit output");
  const bool ta = d.trans_a == CUBLAS_OP_T, tb = d.trans_b == CUBLAS_OP_T;
  const uint64_t m = ta ? la.cols : la.rows, k = ta ? la.rows : la.cols;
  const uint64_t kb = tb ? lb.cols : lb.rows, n = tb ? lb.rows : lb.cols;
  if (k != kb || m != ld.rows || n != ld.cols)
    return refuse("shapes do not chain: op(A) " + std::to_string(m) + "x" + std::to_string(k) + ", op(B) " +
                  std::to_string(kb) + "x" + std::to_string(n) + ", D " + std::to_string(ld.rows) + "x" +
                  std::to_string(ld.cols));
  if (m == 0 || n == 0 || k == 0) return refuse("an empty dimension (cuBLASLt does not take K = 0)");
  if (!lora_emu::is_device(A, span_bytes(la)) || !lora_emu::is_device(B, span_bytes(lb)) ||
      !lora_emu::is_device(D, span_bytes(ld)))
    return refuse("an operand extends outside device allocations");
  const bool has_bias = d.epilogue == CUBLASLT_EPILOGUE_BIAS || d.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool gelu = d.epilogue == CUBLASLT_EPILOGUE_GELU_AUX || d.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool dgelu = d.epilogue == CUBLASLT_EPILOGUE_DGELU;
  if (has_bias && (!d.bias || !lora_emu::is_device(d.bias, m * type_size(ld.type))))
    return refuse("the bias epilogue's bias pointer is unset or outside device allocations");
  if (gelu || dgelu) {
    if (d.aux_ld % 8 != 0 || d.aux_ld < int64_t(m))
      return refuse("aux ld " + std::to_string(d.aux_ld) + ": must be a multiple of 8 and at least D's rows " +
                    std::to_string(m));
    if (!d.aux || !lora_emu::is_device(d.aux, span_bytes(Layout{ld.type, m, n, d.aux_ld})))
      return refuse("the aux pointer is unset or its matrix lies outside device allocations");
  }
  lora_emu::record_work(stream, "cublasLtMatmul", {A, B, C, D, d.bias, d.aux});
  const float a_scale = *static_cast<const float*>(alpha), b_scale = *static_cast<const float*>(beta);
  std::vector<double> col(m);
  for (uint64_t j = 0; j < n; ++j) {
    std::fill(col.begin(), col.end(), 0.0);
    for (uint64_t p = 0; p < k; ++p) {
      const double bv = load(B, lb.type, tb ? int64_t(p * lb.ld + j) : int64_t(j * lb.ld + p));
      for (uint64_t i = 0; i < m; ++i) col[i] += load(A, la.type, ta ? int64_t(i * la.ld + p) : int64_t(p * la.ld + i)) * bv;
    }
    for (uint64_t i = 0; i < m; ++i) {
      const int64_t o = int64_t(j * ld.ld + i);
      double v = double(a_scale) * col[i];
      if (b_scale != 0.0f) v += double(b_scale) * load(C, lc.type, o);  // beta 0: C is not read (may be NaN)
      if (has_bias) v += load(d.bias, ld.type, int64_t(i));
      const int64_t x = int64_t(j * d.aux_ld + i);
      if (gelu) {
        store(d.aux, ld.type, x, v);
        v = gelu_tanh(v);
      } else if (dgelu) {
        v *= gelu_tanh_grad(load(d.aux, ld.type, x));
      }
      store(D, ld.type, o, v);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
