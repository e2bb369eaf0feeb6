// HF checkpoint directories: config.json plus model.safetensors, or shards listed
// by model.safetensors.index.json. Pickled weights (pytorch_model.bin, *.pt, *.pth, *.ckpt) are never
// loaded: a directory holding only those is refused with a conversion hint.
//
// Contract: open() parses the config and opens (mmaps and validates) every safetensors file before
// returning, so a bad shard fails at once, not halfway through loading. Names given to has()/get() are
// without the family prefix ("h.0.attn.c_attn.weight"); the lookup also tries the prefixed form
// (the family's prefix, Family::prefix: "transformer." for GPT-2) and the name as stored, so
// both spellings work. get() returns a host f32 copy and checks its shape; errors are lora::Error
// naming the tensor, the files searched and the closest stored name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/base/tensor.h"
#include "core/formats/model_config.h"
#include "core/formats/safetensors.h"

namespace lora {

class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const;
  // Host f32 copy of a tensor whose shape must equal expected_shape.
  Tensor get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // The stored shape of a tensor (errors like get() when it is missing).
  std::vector<int64_t> shape(const std::string& name) const;
  std::vector<std::string> names() const;  // as stored (with any prefix), sorted
  std::vector<std::string> files() const;  // the weight files opened (paths)

 private:
  struct Location { size_t file = 0, entry = 0; };  // indices: files_[file].entries()[entry]
  const Location* locate(const std::string& name) const;
  const Location& locate_or_fail(const std::string& name) const;

  std::string dir_;
  std::string index_path_;  // empty when unsharded
  ModelConfig config_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, Location> tensors_;  // stored name -> where
};

// The family's tensor-name prefix in HF checkpoints (Family::prefix), or "" for an unknown family.
std::string checkpoint_prefix(const std::string& family);

// Writes a HF-layout directory: config.json (model_config_to_json, plus torch_dtype) and the tensors,
// names as given, as dtype (f32, bf16 or f16; i32 tensors stay I32). With shard_bytes > 0 and more data
// than that, shards model-00001-of-0000N.safetensors plus model.safetensors.index.json; otherwise
// model.safetensors. Creates dir if needed; each file is written crash-safely, the index last.
void checkpoint_write(const std::string& dir, const ModelConfig& config,
                      const std::vector<std::pair<std::string, Tensor>>& tensors, DType dtype,
                      size_t shard_bytes = 0);

}  // namespace lora
