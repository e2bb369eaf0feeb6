// The loops behind the CPU backend's hot ops, as a table, so that one checked wrapper
// (core/ops/backend_cpu.cpp) serves two backends: the reference (`--device ref`, the oracle of every
// test: core/ops/ops_ref.h with Real = float) and the fast default `cpu` (core/ops/backend_cpu_fast.cpp:
// vector code, threads, attention through BLAS). The wrapper checks shapes and dtypes before it calls an
// entry, so an entry may assume them; data-dependent values (targets, lengths) an entry checks itself,
// throwing std::out_of_range as the reference does. Signatures and contracts are those of the
// ops_ref.h kernels of the same name.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/ops/backend.h"

namespace lora {

struct CpuKernels {
  const char* name;          // the backend's name(): "cpu" or "ref"
  std::string (*run_note)(); // Backend::run_note
  void (*bias_add)(float* out, int64_t ldo, const float* bias, int64_t N, int64_t C);
  void (*add)(float* y, const float* a, const float* b, int64_t n, float alpha);
  void (*layernorm_forward)(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                            const float* bias, int64_t N, int64_t C, float eps);
  void (*layernorm_backward)(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                             const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C);
  void (*gelu_forward)(float* out, const float* inp, int64_t n, GeluKind kind);
  void (*gelu_backward)(float* dinp, const float* dout, const float* inp, int64_t n, GeluKind kind);
  void (*attention_forward)(float* out, int64_t ldo, const float* q, int64_t ldq, const float* k, int64_t ldk,
                            const float* v, int64_t ldv, float* probs, const AttentionShape& s,
                            const int32_t* lengths, const AttentionDropout& drop);
  void (*attention_backward)(float* dq, int64_t lddq, float* dk, int64_t lddk, float* dv, int64_t lddv,
                             const float* dout, int64_t lddo, const float* q, int64_t ldq, const float* k,
                             int64_t ldk, const float* v, int64_t ldv, const float* probs, const AttentionShape& s,
                             const AttentionDropout& drop);
  void (*cross_entropy)(float* logits, int64_t ld, float* losses, int32_t* argmax, const int32_t* targets,
                        int64_t N, int64_t V, double eps, double dscale);
  void (*dropout_apply)(float* out, const float* inp, int64_t n, float p, uint64_t seed, uint64_t offset);
};

// The reference table (ops_ref.h), and the CPU backend running a table (core/ops/backend_cpu.cpp).
const CpuKernels& cpu_ref_kernels();
std::unique_ptr<Backend> backend_cpu_with(const CpuKernels& kernels);

// The fast table (core/ops/backend_cpu_fast.cpp); entries it does not speed up are the reference's.
const CpuKernels& cpu_fast_kernels();

// The fast CPU backend (core/ops/backend_cpu_fast.cpp): the default `cpu` (backend_create), the
// reference's checks and ops with faster loops for the hot ones. (Declared here, not in backend.h, so
// that adding it did not change what every file including backend.h compiles.)
std::unique_ptr<Backend> backend_cpu_fast_create();

}  // namespace lora
