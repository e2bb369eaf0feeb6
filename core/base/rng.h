// Host-side random numbers with a fixed, documented algorithm (SplitMix64, core/base/splitmix.h), so weight
// initialisation and shuffles are bit-identical across machines and standard libraries
// (std::normal_distribution is not).
#pragma once
#include <cmath>
#include <cstdint>

#include "core/base/splitmix.h"

namespace lora {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() { return rng_mix(state_++); }
  // Uniform in [0, 1) with 24 bits.
  float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }
  // Standard normal (Box-Muller on two uniforms in (0,1]).
  float normal() {
    double u1 = (double(next() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = double(next() >> 11) * (1.0 / 9007199254740992.0);
    return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  uint64_t state() const { return state_; }

 private:
  uint64_t state_;
};

}  // namespace lora
