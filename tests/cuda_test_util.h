// What the CUDA op tests share (tests/test_cuda_ops.cpp, tests/test_cuda_head.cpp and their _emu builds):
// the tolerance per activation dtype, in one place; the seed of the fresh random inputs; the one
// comparison helper. Header-only, for tests.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lora_test {

using lora::DType;
using lora::Tensor;

// The tolerances, in one place. An element fails when |got - want| > tol * (|want| + max|want|/16): relative,
// with a floor set by the tensor's own scale for elements near zero.
//   f32:  fp32 rounding (6e-8) over reductions of up to a few hundred terms in another order.
//   bf16: 8 mantissa bits; rounding the output alone costs up to 2^-9 = 2e-3 relative.
//   f16:  11 mantissa bits; rounding the output alone costs up to 2^-12 = 2.4e-4 relative.
inline double tolerance(DType act) {
  switch (act) {
    case DType::bf16: return 1e-2;
    case DType::f16: return 2e-3;
    default: return 1e-5;
  }
}

// The activation dtypes the CUDA tests run: f32, bf16 and f16, or those LORA_TEST_DTYPES names
// (comma-separated, e.g. "f32" or "bf16,f16"), so that the low-precision repeats on the slow CPU emulation
// can run in a tier of their own (tests/CMakeLists.txt). An unknown name is a failure, not a silent skip.
inline std::vector<DType> test_activations() {
  const DType all[] = {DType::f32, DType::bf16, DType::f16};
  const char* env = std::getenv("LORA_TEST_DTYPES");
  if (!env || !*env) return {std::begin(all), std::end(all)};
  std::vector<DType> picked;
  std::stringstream names(env);
  for (std::string name; std::getline(names, name, ',');) {
    bool known = false;
    for (DType d : all)
      if (name == lora::dtype_name(d)) picked.push_back(d), known = true;
    if (!known) {
      std::fprintf(stderr, "LORA_TEST_DTYPES: unknown dtype '%s' (f32, bf16 or f16)\n", name.c_str());
      std::exit(2);
    }
  }
  return picked;
}

inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    const char* s = std::getenv("LORA_TEST_SEED");
    return s ? std::strtoull(s, nullptr, 10) : uint64_t(std::random_device{}()) << 32 | std::random_device{}();
  }();
  return seed;
}

// One comparison: max abs and rel error and the first mismatching index.
inline void check_close(const std::string& what, const Tensor& got, const Tensor& want, double tol) {
  REQUIRE_MESSAGE(got.numel() == want.numel(), what << ": numel " << got.numel() << " vs " << want.numel());
  const float* g = got.f32();
  const float* w = want.f32();
  const int64_t n = want.numel();
  double scale = 0.0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(double(w[i])));
  const double floor = scale / 16.0;
  double max_abs = 0.0, max_rel = 0.0;
  int64_t first_bad = -1, bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::fabs(double(g[i]) - double(w[i]));
    const bool ok = std::isfinite(g[i]) && err <= tol * (std::fabs(double(w[i])) + floor);
    if (std::isfinite(err)) {
      max_abs = std::max(max_abs, err);
      if (std::fabs(w[i]) > floor) max_rel = std::max(max_rel, err / std::fabs(double(w[i])));
    }
    if (!ok) {
      ++bad;
      if (first_bad < 0) first_bad = i;
    }
  }
  std::ostringstream os;
  os << what << ": n=" << n << " max_abs=" << max_abs << " max_rel=" << max_rel << " tol=" << tol;
  if (bad) os << " | " << bad << " mismatches, first at " << first_bad << ": got " << g[first_bad] << ", want "
              << w[first_bad];
  CHECK_MESSAGE(bad == 0, os.str());
}

}  // namespace lora_test
