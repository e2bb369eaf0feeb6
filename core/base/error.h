// Errors a user can cause. Every such error is thrown as lora::Error carrying the exit code the
// command line returns (ExitCode below) and a hint on how to fix it; cli/main.cpp prints
// "error: <message>\n  hint: <hint>" to stderr and exits with the code. Never assert on user input.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace lora {

// Exit codes of the `lora` executable.
enum ExitCode : int {
  EXIT_CODE_OK = 0,
  EXIT_CODE_RUNTIME = 1,      // a file that cannot be read, a diverged run, an I/O failure
  EXIT_CODE_USAGE = 2,        // bad usage or a bad recipe
  EXIT_CODE_INTERRUPTED = 75, // stopped by SIGINT/SIGTERM after saving a checkpoint: requeue and --resume
};

class Error : public std::runtime_error {
 public:
  Error(int code, const std::string& message, std::string hint = {})
      : std::runtime_error(message), code_(code), hint_(std::move(hint)) {}
  int code() const { return code_; }
  const std::string& hint() const { return hint_; }

 private:
  int code_;
  std::string hint_;
};

// A runtime failure (exit code 1): unreadable or corrupt file, I/O error, divergence.
[[noreturn]] inline void fail_runtime(const std::string& message, const std::string& hint = {}) {
  throw Error(EXIT_CODE_RUNTIME, message, hint);
}
// A usage or recipe error (exit code 2).
[[noreturn]] inline void fail_usage(const std::string& message, const std::string& hint = {}) {
  throw Error(EXIT_CODE_USAGE, message, hint);
}

// Items as indented lines for an error message, at most max_shown of them, then "... and N more".
inline std::string error_list(const std::vector<std::string>& items, size_t max_shown = 12) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < max_shown; ++i) s += "\n  " + items[i];
  if (items.size() > max_shown) s += "\n  ... and " + std::to_string(items.size() - max_shown) + " more";
  return s;
}

}  // namespace lora
