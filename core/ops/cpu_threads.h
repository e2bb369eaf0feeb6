// The fast CPU backend's threads (core/ops/backend_cpu_fast.cpp): one pool for its loops, sized like
// OpenBLAS's, which is told the same count, so the two never ask for more cores than the process has.
//
// The count: OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS (what OpenBLAS itself reads), else the cores the
// process may use (cpu_usable_cores). Idle workers block on a condition variable (passive waiting: no
// spinning on cores that other processes share), and a loop never waits for a worker the OS has not
// scheduled: the calling thread claims chunks too, and does them all if no worker comes.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace lora {

// The cores this process may run on: its affinity mask (sched_getaffinity), capped by the cgroup's CPU
// quota rounded up (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us). At least 1. why, if
// not null, receives how the count was found ("affinity 2", "affinity 8, cgroup quota 2.0").
int cpu_usable_cores(std::string* why = nullptr);

class CpuPool {
 public:
  // The process's one pool, made on first use with the count above (and OpenBLAS set to it).
  static CpuPool& get();
  int threads() const { return threads_; }
  // How the count was chosen, for run_note ("2 (the cores this process may use: affinity 2)").
  const std::string& origin() const { return origin_; }
  // Calls fn(begin, end) on contiguous chunks of [0, n), none smaller than grain items (about four a
  // thread), spread over the threads that are running, and returns when all are done. The first exception
  // thrown by a chunk is rethrown here. A call from inside a chunk runs serially (no nested parallelism).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
  ~CpuPool();

 private:
  explicit CpuPool(int threads, std::string origin);
  struct State;
  State* state_;
  int threads_;
  std::string origin_;
};

}  // namespace lora
