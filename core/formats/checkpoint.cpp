// HF checkpoint directories: open (config + every safetensors file, validated up front), tensor
// lookup with or without the family prefix, and the writer of the same layout. See checkpoint.h.
// The layout follows transformers' save_pretrained: model.safetensors, or model-0000i-of-0000N shards
// with model.safetensors.index.json {"metadata": {"total_size": bytes}, "weight_map": {name: shard}},
// each file carrying the metadata {"format": "pt"} that transformers checks when loading.
#include "core/formats/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/strings.h"
#include "core/formats/family.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kSingleFile = "model.safetensors";
const char* kIndexFile = "model.safetensors.index.json";

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// Refuses a directory with pickled weights only, naming them and how to convert them once.
[[noreturn]] void pickles_refuse(const std::string& dir, const ModelConfig& config,
                                 const std::vector<std::string>& pickles) {
  const Family* family = family_find(config.family);
  std::string auto_class = family ? family->auto_class : "AutoModelForCausalLM";
  fail_usage("model directory '" + dir + "' holds only pickled weights (" + pickles.front() +
                 (pickles.size() > 1 ? " and " + std::to_string(pickles.size() - 1) + " more" : "") +
                 "); lora never unpickles files, which can run arbitrary code",
             "convert them once to safetensors with Python: python3 -c \"from transformers import " + auto_class +
                 " as M; M.from_pretrained('" + dir + "').save_pretrained('" + dir +
                 "', safe_serialization=True)\" (use your task's Auto class if the model has another head)");
}

}  // namespace

std::string checkpoint_prefix(const std::string& family) {
  const Family* f = family_find(family);
  return f ? f->prefix : "";
}

Checkpoint Checkpoint::open(const std::string& dir) {
  Checkpoint ck;
  ck.dir_ = dir;
  ck.config_ = model_config_load(dir);
  const std::string single = dir + "/" + kSingleFile, index = dir + "/" + kIndexFile;

  if (file_exists(single)) {
    ck.files_.push_back(SafetensorsFile::open(single));
    const auto& entries = ck.files_[0].entries();
    for (size_t i = 0; i < entries.size(); ++i) ck.tensors_[entries[i].name] = Location{0, i};
    return ck;
  }

  if (file_exists(index)) {
    ck.index_path_ = index;
    json j = json_parse_strict(file_read(index), "'" + index + "'");
    const std::string where = "index '" + index + "'";
    const std::string hint = "the index and its shards must come from the same save_pretrained call";
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail_runtime(where + ": expected an object with a \"weight_map\" object of tensor name -> shard file", hint);
    std::map<std::string, size_t> shard_of;  // shard file name -> position in files_
    for (const auto& item : j["weight_map"].items()) {
      const std::string& name = item.key();
      if (!item.value().is_string())
        fail_runtime(where + ": weight_map entry '" + name + "' must be a file name, found " + item.value().dump(), hint);
      std::string shard = item.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        fail_runtime(where + ": weight_map entry '" + name + "' names '" + shard +
                         "', expected a file name inside the directory", hint);
      auto it = shard_of.find(shard);
      if (it == shard_of.end()) {
        std::string path = dir + "/" + shard;
        if (!file_exists(path))
          fail_runtime(where + " lists shard '" + shard + "' (for tensor '" + name + "'), which does not exist",
                       "the download is incomplete; fetch the missing shard");
        it = shard_of.emplace(shard, ck.files_.size()).first;
        ck.files_.push_back(SafetensorsFile::open(path));
      }
      const SafetensorsFile& file = ck.files_[it->second];
      const auto& entries = file.entries();
      const SafetensorsEntry* e = file.find(name);
      if (!e)
        fail_runtime(where + " maps tensor '" + name + "' to '" + file.path() + "', which does not contain it", hint);
      ck.tensors_[name] = Location{it->second, size_t(e - entries.data())};
    }
    if (ck.tensors_.empty()) fail_runtime(where + ": weight_map is empty", hint);
    return ck;
  }

  std::vector<std::string> pickles, others;
  std::error_code ec;
  for (const auto& ent : fs::directory_iterator(dir, ec)) {
    std::string name = ent.path().filename().string();
    if (ends_with(name, ".bin") || ends_with(name, ".pt") || ends_with(name, ".pth") || ends_with(name, ".ckpt"))
      pickles.push_back(name);
    else if (ends_with(name, ".safetensors"))
      others.push_back(name);
  }
  std::sort(pickles.begin(), pickles.end());
  std::sort(others.begin(), others.end());
  if (!others.empty())
    fail_runtime("model directory '" + dir + "' has no " + kSingleFile + " or " + kIndexFile + " (found " +
                     others.front() + (others.size() > 1 ? " and " + std::to_string(others.size() - 1) + " more" : "") +
                     ")",
                 "shards need their index file; an adapter directory is passed with --adapter, not as the model");
  if (!pickles.empty()) pickles_refuse(dir, ck.config_, pickles);
  fail_runtime("model directory '" + dir + "' has no weights (" + kSingleFile + " or " + kIndexFile + ")",
               "download the model's safetensors files next to its config.json");
}

const Checkpoint::Location* Checkpoint::locate(const std::string& name) const {
  const std::string prefix = checkpoint_prefix(config_.family);
  std::vector<std::string> tries = {name};
  if (!prefix.empty()) {
    tries.push_back(prefix + name);
    if (starts_with(name, prefix)) tries.push_back(name.substr(prefix.size()));
  }
  for (const auto& t : tries) {
    auto it = tensors_.find(t);
    if (it != tensors_.end()) return &it->second;
  }
  return nullptr;
}

const Checkpoint::Location& Checkpoint::locate_or_fail(const std::string& name) const {
  if (const Location* loc = locate(name)) return *loc;
  const std::string prefix = checkpoint_prefix(config_.family);
  std::string searched;
  if (!index_path_.empty()) {
    searched = "'" + index_path_ + "' and its " + std::to_string(files_.size()) + " shard(s)";
  } else {
    searched = "'" + files_[0].path() + "'";
  }
  std::string closest;
  size_t best = SIZE_MAX;
  for (const auto& [stored, loc] : tensors_) {
    std::string bare = !prefix.empty() && starts_with(stored, prefix) ? stored.substr(prefix.size()) : stored;
    size_t d = std::min(edit_distance(name, stored), edit_distance(name, bare));
    if (d < best) { best = d; closest = stored; }
  }
  std::string tried = prefix.empty() || starts_with(name, prefix) ? "" : " (also tried '" + prefix + name + "')";
  fail_runtime("tensor '" + name + "' not found in " + searched + tried +
                   (closest.empty() ? std::string("; the checkpoint holds no tensors")
                                    : "; closest stored name: '" + closest + "'"),
               "the weights do not match config.json (model_type " + config_.model_type +
                   "); check that they come from the same model");
}

bool Checkpoint::has(const std::string& name) const { return locate(name) != nullptr; }

std::vector<int64_t> Checkpoint::shape(const std::string& name) const {
  const Location& loc = locate_or_fail(name);
  return files_[loc.file].entries()[loc.entry].shape;
}

Tensor Checkpoint::get(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  const Location& loc = locate_or_fail(name);
  const SafetensorsFile& file = files_[loc.file];
  const SafetensorsEntry& e = file.entries()[loc.entry];
  if (e.shape != expected_shape)
    fail_runtime("tensor '" + e.name + "' in '" + file.path() + "' has shape " + e.shape_str() + ", expected " +
                     shape_text(expected_shape) + " from config.json",
                 "the weights do not match config.json (model_type " + config_.model_type +
                     "); check that they come from the same model");
  return file.to_f32(e);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, loc] : tensors_) out.push_back(name);
  return out;
}

std::vector<std::string> Checkpoint::files() const {
  std::vector<std::string> out;
  for (const auto& f : files_) out.push_back(f.path());
  return out;
}

void checkpoint_write(const std::string& dir, const ModelConfig& config,
                      const std::vector<std::pair<std::string, Tensor>>& tensors, DType dtype, size_t shard_bytes) {
  if (dtype == DType::i32) throw std::logic_error("checkpoint_write: dtype must be f32, bf16 or f16");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail_runtime("cannot create directory '" + dir + "': " + ec.message());

  std::set<std::string> seen;
  std::vector<uint64_t> sizes;
  uint64_t total = 0;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second)
      fail_runtime("writing checkpoint '" + dir + "': tensor '" + name + "' is given twice");
    sizes.push_back(uint64_t(t.numel()) * (t.dtype == DType::i32 ? 4 : dtype_size(dtype)));
    total += sizes.back();
  }

  json cfg = model_config_to_json(config);
  cfg["torch_dtype"] = dtype == DType::f32 ? "float32" : dtype == DType::bf16 ? "bfloat16" : "float16";
  file_write_atomic(dir + "/config.json", cfg.dump(2) + "\n");

  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  const std::string single = dir + "/" + kSingleFile, index = dir + "/" + kIndexFile;
  if (shard_bytes == 0 || total <= shard_bytes) {
    safetensors_write(single, tensors, meta, dtype);
    fs::remove(index, ec);  // a stale index from an earlier sharded write would contradict the new file
    return;
  }

  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  uint64_t in_shard = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!shards.back().empty() && in_shard + sizes[i] > shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(tensors[i]);
    in_shard += sizes[i];
  }
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    safetensors_write(dir + "/" + file, shards[s], meta, dtype);
    for (const auto& [name, t] : shards[s]) weight_map[name] = file;
  }
  json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  file_write_atomic(index, idx.dump(2) + "\n");
  fs::remove(single, ec);  // it would shadow the index: loaders prefer the single file
}

}  // namespace lora
