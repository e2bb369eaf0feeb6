// SplitMix64, the one definition every generator of lora uses: Rng (core/base/rng.h), the epoch shuffles
// (core/data/dataset_stream.cpp), the training step's dropout keys, and the counter-based dropout masks
// (rng_uniform in core/ops/backend.h), which run in CUDA device code too. A header of its own so that
// backend.h, included by every op, gets this function and nothing else.
#pragma once
#include <cstdint>

namespace lora {

// SplitMix64 (Steele, Lea, Flood 2014): z advanced by the golden-ratio increment, then the finaliser, a
// bijective 64-bit mix.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline uint64_t rng_mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace lora
