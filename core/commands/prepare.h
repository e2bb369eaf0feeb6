// `lora prepare`: tokenizes a recipe's datasets into data.cache_dir ahead of a run (say, on a login node
// before a cluster job), with the very calls `lora train` makes (session_split_prepare), so train finds
// the same cache files and reuses them. Reports per split the cache file, whether it was already up to
// date, counts and the example lengths.
#pragma once
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/data/dataset_stats.h"
#include "core/session/recipe.h"

namespace lora {

struct PrepareSplit {
  std::string split;             // "train" or "eval"
  std::string source;            // data.train or data.eval as resolved
  DatasetPrepareResult result;   // cache path, reused or not (and why it was rebuilt), counts
  LengthStats stats;             // example lengths of the cached file
  std::string note;              // the line train prints for this split
};

struct PrepareReport {
  std::string tokenizer_dir, tokenizer_kind;
  int tokenizer_vocab = 0;
  std::vector<PrepareSplit> splits;
};

// split: "train", "eval" or "all" (train, and eval when data.eval is set). Validates the recipe as
// train does (data.train is not required for "eval"); errors are lora::Error.
PrepareReport prepare_run(const Recipe& recipe, const std::string& split);
std::string prepare_report_text(const PrepareReport& report);

}  // namespace lora
