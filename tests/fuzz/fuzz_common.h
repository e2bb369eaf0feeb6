// Shared pieces of the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp): a scratch directory per process, the
// input written to files there, an input split into several files, and the rule every harness follows:
// a parser may reject its input only with lora::Error. Any other exception escapes the harness, which
// libFuzzer reports as a crash ("deadly signal" after std::terminate), as are sanitizer reports, hangs
// (-timeout) and memory blow-ups (-rss_limit_mb).
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/error.h"

namespace lora_fuzz {

// A directory of this process's own, made once and reused by every input.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path d = std::filesystem::temp_directory_path() / ("lora_fuzz_" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, const std::string& bytes) {
  std::string path = (scratch_dir() / name).string();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

// The input cut at each line "=====" (the separator and its newline dropped) into at most n parts; missing
// parts are empty. Seeds stay readable text files.
inline std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t n) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string sep = "\n=====\n";
  std::vector<std::string> parts;
  size_t begin = 0;
  while (parts.size() + 1 < n) {
    size_t at = text.find(sep, begin);
    if (at == std::string::npos) break;
    parts.push_back(text.substr(begin, at - begin));
    begin = at + sep.size();
  }
  parts.push_back(text.substr(begin));
  parts.resize(n);
  return parts;
}

// Runs f and swallows a lora::Error, the one way a parser may refuse an input. The message must not be
// empty: every refusal says what is wrong.
template <class F>
void expect_ok_or_error(F&& f) {
  try {
    f();
  } catch (const lora::Error& e) {
    if (std::string(e.what()).empty()) __builtin_trap();
  }
}

}  // namespace lora_fuzz
