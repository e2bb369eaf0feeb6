// The official E2E scorer's file readers (measure_scores.read_lines), for the metric tests: one
// prediction a line; references one a line, their groups (one group a prediction) separated by blank
// lines; every line stripped of surrounding whitespace.
#pragma once
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/metrics/metrics.h"

namespace lora_test {

inline std::string scorer_file_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot read " << path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::string scorer_strip(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

inline std::vector<std::string> scorer_read_predictions(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(scorer_file_text(path));
  for (std::string line; std::getline(in, line);) out.push_back(scorer_strip(line));
  return out;
}

inline lora::References scorer_read_references(const std::string& path) {
  lora::References out(1);
  std::istringstream in(scorer_file_text(path));
  for (std::string line; std::getline(in, line);) {
    line = scorer_strip(line);
    if (line.empty()) out.emplace_back();
    else out.back().push_back(line);
  }
  if (out.back().empty()) out.pop_back();
  return out;
}

}  // namespace lora_test
