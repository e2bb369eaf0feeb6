// Length statistics of a tokenized dataset (see dataset_stats.h).
#include "core/data/dataset_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace lora {

using ojson = nlohmann::ordered_json;

namespace {

int64_t percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t i = size_t(std::ceil(q * double(sorted.size()))) - (q > 0 ? 1 : 0);
  return sorted[std::min(i, sorted.size() - 1)];
}

}  // namespace

LengthStats dataset_length_stats(const Dataset& d, int64_t max_length) {
  LengthStats s;
  s.examples = int64_t(d.size());
  s.tokens = d.n_tokens();
  std::vector<int64_t> len(d.size());
  for (size_t i = 0; i < d.size(); ++i) {
    len[i] = d.length(i);
    s.prompt_tokens += d.prompt_length(i);
    if (!std::isnan(d.label(i))) ++s.labelled;
  }
  if (len.empty()) return s;
  std::vector<int64_t> sorted = len;
  std::sort(sorted.begin(), sorted.end());
  s.min = sorted.front();
  s.max = sorted.back();
  s.mean = double(s.tokens) / double(s.examples);
  s.p50 = percentile(sorted, 0.5);
  s.p90 = percentile(sorted, 0.9);
  s.p99 = percentile(sorted, 0.99);
  // Eight equal bins from 1 to max_length (or the longest example when that is larger).
  const int64_t top = std::max<int64_t>({max_length, s.max, 8});
  const int64_t width = (top + 7) / 8;
  for (int b = 0; b < 8; ++b) s.histogram.push_back({std::min(top, (b + 1) * width), 0});
  for (int64_t l : len) s.histogram[size_t(std::min<int64_t>(7, (l - 1) / width))].second += 1;
  while (!s.histogram.empty() && s.histogram.back().second == 0 && s.histogram.back().first > s.max)
    s.histogram.pop_back();  // bins above the longest example say nothing
  return s;
}

ojson length_stats_json(const LengthStats& s) {
  ojson j;
  j["min"] = s.min;
  j["mean"] = std::round(s.mean * 10) / 10;
  j["p50"] = s.p50;
  j["p90"] = s.p90;
  j["p99"] = s.p99;
  j["max"] = s.max;
  ojson h = ojson::array();
  for (const auto& [upper, n] : s.histogram) h.push_back({{"upto", upper}, {"examples", n}});
  j["histogram"] = h;
  return j;
}

std::string length_stats_line(const LengthStats& s) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "lengths min %lld, mean %.1f, p50 %lld, p90 %lld, p99 %lld, max %lld", (long long)s.min,
                s.mean, (long long)s.p50, (long long)s.p90, (long long)s.p99, (long long)s.max);
  return buf;
}

std::string length_histogram_line(const LengthStats& s) {
  std::string out;
  int64_t lo = 1;
  for (const auto& [upper, n] : s.histogram) {
    out += (out.empty() ? "" : " | ") + std::to_string(lo) + "-" + std::to_string(upper) + ": " + std::to_string(n);
    lo = upper + 1;
  }
  return out;
}

}  // namespace lora
