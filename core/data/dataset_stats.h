// Example-length statistics of a tokenized dataset: what `lora info` shows of a dataset, `lora prepare` of
// each split it writes, and `lora train` in its one-line note per split.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/dataset.h"

namespace lora {

// Example lengths of a tokenized dataset.
struct LengthStats {
  int64_t examples = 0, tokens = 0;
  int64_t prompt_tokens = 0;     // tokens that carry no loss
  int64_t min = 0, max = 0, p50 = 0, p90 = 0, p99 = 0;
  double mean = 0;
  int64_t labelled = 0;          // examples with a classification / regression label
  std::vector<std::pair<int64_t, int64_t>> histogram;  // (upper bound of the bin, examples), 8 equal bins
};
LengthStats dataset_length_stats(const Dataset& data, int64_t max_length);
nlohmann::ordered_json length_stats_json(const LengthStats& s);
// "lengths min 12, mean 58.6, p50 57, p90 75, p99 88, max 96" and the histogram "1-16: 3 | 17-32: 40 | ...".
std::string length_stats_line(const LengthStats& s);
std::string length_histogram_line(const LengthStats& s);

}  // namespace lora
