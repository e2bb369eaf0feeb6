// `lora info`: what a path is and what it holds, as one JSON object (inspect_path) and as a human
// summary rendered from that object (inspect_text), so the two never disagree.
//
// Kinds, told apart by content, not by name alone:
//   run         a directory `lora train` wrote: recipe.yaml plus checkpoints/ or metrics.jsonl
//   adapter     a directory with adapter_config.json (+ adapter_model.safetensors), ours or PEFT's
//   model       a HF checkpoint directory: config.json + model.safetensors or a sharded index
//   dataset     a tokenized dataset file (HDF5, core/data/dataset.h), e.g. from data.cache_dir
//   safetensors a .safetensors file (or any file whose header parses as one)
//   gguf        a GGUF file (e.g. from `lora export --to gguf`)
// A path that does not exist or cannot be read is a runtime error (exit 1); a path of another kind
// is a usage error (exit 2) naming what was expected.
//
// The length statistics it shows of a tokenized dataset are core/data/dataset_stats.h's.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/dataset.h"
#include "core/data/dataset_stats.h"

namespace lora {

enum class InspectKind { run, adapter, model, tokenizer, dataset, safetensors, gguf };

struct InspectOptions {
  bool all = false;       // list every tensor and metadata value (default: the first max_list)
  size_t max_list = 20;   // entries listed when not `all`
};

// Which kind path is (see above); lora::Error when it is none of them.
InspectKind inspect_kind(const std::string& path);
// Everything `lora info` shows about path: {"kind": ..., "path": ..., ...}; the keys per kind are
// documented beside each inspect_* function in core/commands/inspect*.cpp.
nlohmann::ordered_json inspect_path(const std::string& path, const InspectOptions& options = {});
// The human summary of an inspect_path object.
std::string inspect_text(const nlohmann::ordered_json& info);

// The kinds one at a time (inspect_path dispatches to them).
nlohmann::ordered_json inspect_model(const std::string& dir);
nlohmann::ordered_json inspect_tokenizer(const std::string& dir);  // a directory of tokenizer files alone
nlohmann::ordered_json inspect_adapter(const std::string& dir);
nlohmann::ordered_json inspect_run(const std::string& dir);
nlohmann::ordered_json inspect_dataset(const std::string& path);
nlohmann::ordered_json inspect_safetensors(const std::string& path, const InspectOptions& options);
nlohmann::ordered_json inspect_gguf(const std::string& path, const InspectOptions& options);

// True when the file starts with the HDF5 signature (tokenized datasets are HDF5).
bool path_is_hdf5(const std::string& path);

}  // namespace lora
