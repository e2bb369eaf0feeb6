// The fast CPU backend's thread pool and the count of usable cores (core/ops/cpu_threads.h).
#include "core/ops/cpu_threads.h"

#include <cblas.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

namespace lora {
namespace {

// A cgroup quota as cores (quota / period), 0 when there is none or it cannot be read.
double cgroup_quota_cores() {
  std::ifstream v2("/sys/fs/cgroup/cpu.max");  // "max 100000" or "200000 100000"
  std::string quota;
  double period = 0;
  if (v2 >> quota >> period) return quota == "max" || period <= 0 ? 0.0 : std::atof(quota.c_str()) / period;
  std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  double q = 0, p = 0;
  if (q1 >> q && p1 >> p && q > 0 && p > 0) return q / p;
  return 0.0;
}

int env_threads(const char* name) {
  const char* s = std::getenv(name);
  if (!s || !*s) return 0;
  const int n = std::atoi(s);
  return n > 0 ? n : 0;
}

thread_local bool in_share = false;  // this thread is running a share of a parallel_for

}  // namespace

int cpu_usable_cores(std::string* why) {
  int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  std::string how = "hardware " + std::to_string(cores);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    cores = std::max(1, CPU_COUNT(&set));
    how = "affinity " + std::to_string(cores);
  }
  const double quota = cgroup_quota_cores();
  if (quota > 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, ", cgroup quota %.1f", quota);
    how += buf;
    cores = std::max(1, std::min(cores, int(std::ceil(quota - 1e-9))));
  }
  if (why) *why = how;
  return cores;
}

// One job at a time, cut into chunks that threads claim from a counter: the caller publishes the job,
// wakes the workers and claims chunks itself; a worker joins only while the job is open. When every
// chunk is claimed the caller closes the job and waits only for the workers that joined (they are
// running). So a worker the OS has not scheduled yet (cores shared with other processes) delays
// nothing: the caller does its chunks, and the worker, when it wakes, finds the job closed.
struct CpuPool::State {
  std::mutex mu;
  std::condition_variable wake, idle;
  std::vector<std::thread> workers;
  uint64_t generation = 0;
  bool open = false, stop = false;
  int active = 0;  // workers inside the open job
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, chunk = 1, chunks = 0;
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex call;  // one parallel_for at a time (two host threads may share the backend)

  void work() {
    in_share = true;
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      try {
        (*fn)(c * chunk, std::min(n, (c + 1) * chunk));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
    }
    in_share = false;
  }

  void worker() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      wake.wait(lock, [&] { return stop || (open && generation != seen); });
      if (stop) return;
      seen = generation;
      ++active;
      lock.unlock();
      work();
      lock.lock();
      if (--active == 0) idle.notify_all();
    }
  }
};

CpuPool::CpuPool(int threads, std::string origin) : state_(new State), threads_(threads), origin_(std::move(origin)) {
  for (int i = 1; i < threads_; ++i) state_->workers.emplace_back([this] { state_->worker(); });
}

CpuPool::~CpuPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->wake.notify_all();
  for (auto& t : state_->workers) t.join();
  delete state_;
}

// The pool's size, chosen once; OpenBLAS is set to it before the first product.
struct PoolSize {
  int threads;
  std::string origin;
};

static PoolSize pool_size() {
  std::string why;
  const int usable = cpu_usable_cores(&why);
  PoolSize s{env_threads("OPENBLAS_NUM_THREADS"), "OPENBLAS_NUM_THREADS"};
  if (!s.threads) s = {env_threads("OMP_NUM_THREADS"), "OMP_NUM_THREADS"};
  if (!s.threads) s = {usable, "the cores this process may use: " + why};
  openblas_set_num_threads(s.threads);
  return s;
}

CpuPool& CpuPool::get() {
  static const PoolSize size = pool_size();
  static CpuPool pool(size.threads, size.origin);
  return pool;
}

void CpuPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (threads_ <= 1 || in_share || n <= grain) {
    fn(0, n);
    return;
  }
  State& s = *state_;
  std::lock_guard<std::mutex> one(s.call);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.fn = &fn;
    s.n = n;
    // About four chunks a thread: a late thread then costs a quarter of its share, not all of it.
    s.chunk = std::max(grain, (n + 4 * threads_ - 1) / (4 * threads_));
    s.chunks = (n + s.chunk - 1) / s.chunk;
    s.next = 0;
    s.error = nullptr;
    s.open = true;
    ++s.generation;
  }
  s.wake.notify_all();
  s.work();
  std::unique_lock<std::mutex> lock(s.mu);
  s.open = false;
  s.idle.wait(lock, [&] { return s.active == 0; });
  if (s.error) std::rethrow_exception(s.error);
}

}  // namespace lora
