// What a run reports while it trains: one JSON object a line in <output>/metrics.jsonl, and on the
// terminal either a progress bar redrawn in place (stderr is a terminal) or plain periodic lines fit
// for a batch-job log (not a terminal, or log.progress: plain).
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace lora {

class TrainLog {
 public:
  // mode: "auto", "bar", "plain" or "none" (no step lines; events such as evaluations still print).
  // metrics_path: "" for no file (dry runs).
  TrainLog(const std::string& mode, const std::string& metrics_path, int64_t total_steps, bool append);
  ~TrainLog();
  // A training step's figures; `print` asks for a plain line (every log.every steps).
  void step(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s, bool print);
  // Any other record (evaluation, events): written to metrics.jsonl and printed as a line. A failed
  // write to metrics.jsonl (a full disk) is a lora::Error naming it, not a torn line and a run that goes on.
  void record(const nlohmann::json& j, const std::string& line);
  // A message for the terminal that must not be torn by the progress bar.
  void message(const std::string& line);
  void finish();
  // Also hands every line the console shows to echo (train.log): messages, records, and plain step lines,
  // which with the progress bar are made (not shown) every log.every steps in place of the redraws.
  void echo_to(std::function<void(const std::string&)> echo) { echo_ = std::move(echo); }

 private:
  void write_json(const nlohmann::json& j);
  void clear_bar();
  bool bar_ = false, quiet_ = false, bar_shown_ = false;
  std::FILE* metrics_ = nullptr;
  std::string metrics_path_;
  int64_t total_ = 0;
  std::chrono::steady_clock::time_point start_;
  int64_t start_step_ = -1;
  std::function<void(const std::string&)> echo_;
};

// Cuts a metrics.jsonl back for a run resumed at `step`: records are kept up to the first one of a later
// step or one that is not a whole JSON object (torn by a kill), the rest dropped; rewritten crash-safely.
// Returns the number of lines dropped (0: the file is left as it is, or is absent).
int64_t metrics_truncate(const std::string& path, int64_t step);

// "1h02m", "3m07s", "12s"
std::string format_duration(double seconds);

}  // namespace lora
