// safetensors files (https://github.com/huggingface/safetensors): read by memory-mapping, written
// crash-safely. Layout: an 8-byte little-endian u64 N, N bytes of JSON header
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, optional "__metadata__": {str: str}},
// then the byte buffer; offsets are relative to the start of the buffer.
//
// Contract: SafetensorsFile::open validates the whole header before anything is read, following the
// reference implementation's rules (header size bound, overflow-checked lengths and shape products,
// known dtypes, offsets contiguous from 0 with no gap or overlap and covering exactly the buffer, no
// duplicate names, metadata values strings). Every failure is a lora::Error naming the file and, where
// one is involved, the tensor. Entries keep the header's tensors sorted by offset.
// Also here: the bf16 / f16 <-> f32 conversions (round-to-nearest-even) that other code reuses.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/base/tensor.h"

namespace lora {

// ---- half-precision conversions ----
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN stays a (quiet) NaN
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);   // IEEE binary16, round to nearest even; overflow -> inf; subnormals kept

// ---- the file format ----
// The element types a safetensors header may name (the 1-byte-or-wider ones of the reference).
enum class StDType { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

const char* st_dtype_name(StDType dtype);   // "F32", as in the header
size_t st_dtype_size(StDType dtype);        // bytes per element
// The header spelling to the enum; false when the name is not a known dtype.
bool st_dtype_parse(const std::string& name, StDType* out);

struct SafetensorsEntry {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the buffer (after the header)

  int64_t numel() const;
  std::string shape_str() const;  // "(2, 3)"
};

class SafetensorsFile {
 public:
  // Memory-maps and validates path. Errors: lora::Error (runtime) naming the file.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // sorted by offset
  const SafetensorsEntry* find(const std::string& name) const;  // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The entry's raw little-endian bytes inside the mapping (not necessarily aligned).
  const uint8_t* bytes(const SafetensorsEntry& e) const;
  // A host f32 copy; F32, F16, BF16 and F64 convert, other dtypes are an error naming the tensor.
  Tensor to_f32(const SafetensorsEntry& e) const;
  // A host i32 copy; I32, I64 (range-checked), I16, U16, I8, U8 and BOOL convert.
  Tensor to_i32(const SafetensorsEntry& e) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<const Mapping> map_;  // shared: copies of the file object share one mapping
  const uint8_t* buffer_ = nullptr;     // start of the byte buffer (mapping + 8 + N)
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// Writes host tensors to path: f32 tensors (and host bf16/f16 ones) as float_dtype (f32, bf16 or f16),
// i32 tensors as I32, in the order given. Written to path + ".tmp", fsynced, renamed over path, and
// the directory fsynced, so a crash leaves either the old file or the new one. Errors: lora::Error.
void safetensors_write(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, DType float_dtype = DType::f32);

}  // namespace lora
