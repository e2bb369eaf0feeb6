// GPU time per op (LORA_PROFILE=1 in the environment): the profile by kernel a GPU run shows (docs/GPU.md),
// without nsys or ncu on the node. Each op of the CUDA backend is bracketed by two CUDA events
// on its stream; every few thousand ops (and at the end) the profiler waits for them and adds each
// elapsed time to its op's total. The figure is the GPU time between the op's first and last launch,
// gaps included, so an op that waits on the host shows it. The backend prints the table to stderr when
// it is destroyed (the end of a run). Off by default: then a scope costs one branch.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lora {

class OpProfiler {
 public:
  OpProfiler(cudaStream_t stream, bool enabled);
  ~OpProfiler();
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  // True when LORA_PROFILE is set to something other than "" or "0".
  static bool requested();
  bool enabled() const { return enabled_; }

  class Scope {
   public:
    Scope(OpProfiler& p, const char* op) : Scope(p, std::string(op)) {}
    Scope(OpProfiler& p, std::string op);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfiler* p_ = nullptr;  // null when disabled
    std::string op_;
    cudaEvent_t start_ = nullptr;
  };

  // The table so far: op, calls, total ms, mean us, share of the total; sorted by total time.
  std::string report();

 private:
  struct Pending {
    std::string op;
    cudaEvent_t start, end;
  };
  struct Stat {
    int64_t calls = 0;
    double ms = 0.0;
  };
  cudaEvent_t event_get();
  void fold();

  cudaStream_t stream_;
  bool enabled_;
  std::vector<Pending> pending_;
  std::vector<cudaEvent_t> spare_;
  std::map<std::string, Stat> stats_;
};

}  // namespace lora
