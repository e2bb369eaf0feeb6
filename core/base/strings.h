// Small string helpers shared across core/ (one definition each).
#pragma once
#include <string>
#include <vector>

namespace lora {

inline bool starts_with(const std::string& s, const std::string& head) { return s.compare(0, head.size(), head) == 0; }

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// s without the leading and trailing characters of ws (by default spaces, tabs, CR and LF).
inline std::string trim(const std::string& s, const char* ws = " \t\r\n") {
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The items with sep between each two ("a, b, c").
inline std::string join(const std::vector<std::string>& items, const std::string& sep = " ") {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

}  // namespace lora
