// See train_log.h.
#include "core/train/train_log.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/base/error.h"
#include "core/base/fsutil.h"

namespace lora {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  long t = long(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

TrainLog::TrainLog(const std::string& mode, const std::string& metrics_path, int64_t total_steps, bool append)
    : total_(total_steps), start_(std::chrono::steady_clock::now()) {
  quiet_ = mode == "none";
  bar_ = mode == "bar" || (mode == "auto" && isatty(STDERR_FILENO));
  if (!metrics_path.empty()) {
    metrics_path_ = metrics_path;
    metrics_ = std::fopen(metrics_path.c_str(), append ? "a" : "w");
    if (!metrics_)
      fail_runtime("cannot write '" + metrics_path + "': " + std::strerror(errno),
                   "check that the output directory is writable");
  }
}

TrainLog::~TrainLog() {
  if (metrics_) std::fclose(metrics_);
}

void TrainLog::write_json(const nlohmann::json& j) {
  if (!metrics_) return;
  errno = 0;
  if (std::fprintf(metrics_, "%s\n", j.dump().c_str()) < 0 || std::fflush(metrics_) != 0) {
    const int err = errno;
    std::fclose(metrics_);
    metrics_ = nullptr;
    fail_runtime("writing '" + metrics_path_ + "' failed: " + (err ? std::strerror(err) : "unknown error"),
                 "free disk space, then continue the run with --resume (its last checkpoint is intact)");
  }
}

int64_t metrics_truncate(const std::string& path, int64_t step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return 0;
  const std::string text = file_read(path);
  std::string kept;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    if (end == std::string::npos) break;  // no newline: torn by a kill
    const nlohmann::json j = nlohmann::json::parse(text.begin() + std::ptrdiff_t(pos), text.begin() + std::ptrdiff_t(end),
                                                   nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) break;
    if (j.contains("step") && (!j["step"].is_number_integer() || j["step"].get<int64_t>() > step)) break;
    kept.append(text, pos, end + 1 - pos);
    pos = end + 1;
  }
  if (kept.size() == text.size()) return 0;
  int64_t dropped = 0;
  for (size_t i = kept.size(); i < text.size(); ++i) dropped += text[i] == '\n';
  if (!text.empty() && text.back() != '\n') dropped += 1;
  file_write_atomic(path, kept);
  return dropped;
}

void TrainLog::clear_bar() {
  if (bar_shown_) {
    std::fprintf(stderr, "\r\033[K");
    bar_shown_ = false;
  }
}

void TrainLog::step(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s, bool print) {
  auto now = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(now - start_).count();
  if (start_step_ < 0) start_step_ = step - 1;
  double per_step = elapsed / double(std::max<int64_t>(1, step - start_step_));
  double eta = per_step * double(total_ - step);
  write_json({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
              {"tokens_per_s", tokens_per_s}, {"elapsed_s", elapsed}});
  if (quiet_) return;
  if (print && (echo_ || !bar_)) {
    char line[256];
    std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s  elapsed %s  eta %s",
                  (long long)step, (long long)total_, loss, lr, grad_norm, tokens_per_s, format_duration(elapsed).c_str(),
                  format_duration(eta).c_str());
    if (echo_) echo_(line);
    if (!bar_) std::fprintf(stderr, "%s\n", line);
  }
  if (bar_) {
    const int width = 24;
    int filled = total_ > 0 ? int(width * double(step) / double(total_)) : 0;
    std::string bar(size_t(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r\033[Kstep %lld/%lld [%s] loss %.4f | %.0f tok/s | ETA %s", (long long)step,
                 (long long)total_, bar.c_str(), loss, tokens_per_s, format_duration(eta).c_str());
    std::fflush(stderr);
    bar_shown_ = true;
  }
}

void TrainLog::record(const nlohmann::json& j, const std::string& line) {
  write_json(j);
  message(line);
}

void TrainLog::message(const std::string& line) {
  if (line.empty()) return;  // log.progress: none silences the step lines only, not events
  clear_bar();
  std::fprintf(stderr, "%s\n", line.c_str());
  if (echo_) echo_(line);
}

void TrainLog::finish() { clear_bar(); }

}  // namespace lora
