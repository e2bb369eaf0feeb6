// OpProfiler (cuda/profile.cuh).
#include "cuda/profile.cuh"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "cuda/common.cuh"

namespace lora {

static constexpr size_t kFoldEvery = 4096;  // pending ops before the profiler waits and folds them

bool OpProfiler::requested() {
  const char* env = std::getenv("LORA_PROFILE");
  return env && *env && std::strcmp(env, "0") != 0;
}

OpProfiler::OpProfiler(cudaStream_t stream, bool enabled) : stream_(stream), enabled_(enabled) {}

OpProfiler::~OpProfiler() {
  if (!enabled_) return;
  if (!pending_.empty() || !stats_.empty()) std::fprintf(stderr, "%s", report().c_str());
  for (cudaEvent_t e : spare_) cudaEventDestroy(e);  // no throwing from a destructor
}

cudaEvent_t OpProfiler::event_get() {
  if (!spare_.empty()) {
    cudaEvent_t e = spare_.back();
    spare_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

void OpProfiler::fold() {
  if (pending_.empty()) return;
  CUDA_CHECK(cudaEventSynchronize(pending_.back().end));
  for (const Pending& p : pending_) {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, p.start, p.end));
    Stat& s = stats_[p.op];
    ++s.calls;
    s.ms += ms;
    spare_.push_back(p.start);
    spare_.push_back(p.end);
  }
  pending_.clear();
}

OpProfiler::Scope::Scope(OpProfiler& p, std::string op) {
  if (!p.enabled_) return;
  p_ = &p;
  op_ = std::move(op);
  start_ = p.event_get();
  CUDA_CHECK(cudaEventRecord(start_, p.stream_));
}

OpProfiler::Scope::~Scope() {
  if (!p_) return;
  try {  // a failure here surfaces at the next checked call; a destructor must not throw
    cudaEvent_t end = p_->event_get();
    if (cudaEventRecord(end, p_->stream_) != cudaSuccess) return;
    p_->pending_.push_back({std::move(op_), start_, end});
    if (p_->pending_.size() >= kFoldEvery && std::uncaught_exceptions() == 0) p_->fold();
  } catch (const std::exception&) {
  }
}

std::string OpProfiler::report() {
  fold();
  std::vector<std::pair<std::string, Stat>> rows(stats_.begin(), stats_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double total = 0.0;
  for (const auto& r : rows) total += r.second.ms;
  std::string out = "CUDA op profile (LORA_PROFILE): GPU time per op, " + std::to_string(rows.size()) + " kinds\n";
  char line[256];
  std::snprintf(line, sizeof line, "  %-44s %9s %12s %11s %7s\n", "op", "calls", "total ms", "mean us", "share");
  out += line;
  for (const auto& [op, s] : rows) {
    std::snprintf(line, sizeof line, "  %-44s %9lld %12.3f %11.2f %6.1f%%\n", op.c_str(), (long long)s.calls, s.ms,
                  1000.0 * s.ms / double(std::max<int64_t>(1, s.calls)), total > 0 ? 100.0 * s.ms / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-44s %9s %12.3f\n", "total", "", total);
  out += line;
  return out;
}

}  // namespace lora
