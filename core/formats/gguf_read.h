// Reading GGUF files (llama.cpp's format) for `lora info`: the header, every metadata key/value and the
// tensor infos, with every length and offset checked against the file size. Tensor data is not read.
//
// Layout (GGUF v2/v3, little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; each
// metadata pair is a string key (u64 length + bytes), a u32 value type and the value (arrays: u32
// element type, u64 count, the elements); each tensor info is a string name, u32 n_dims, n_dims u64 dims
// in ggml order (innermost first), u32 ggml type, u64 offset from the start of the aligned data section.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lora {

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // dims in ggml order: ne[0] is the innermost (row-major shape reversed)
  uint32_t type = 0;         // ggml type id (0 F32, 1 F16, 30 BF16, ...)
  uint64_t offset = 0;       // bytes from the start of the data section
};

struct GgufFile {
  std::string path;
  uint32_t version = 0;
  nlohmann::ordered_json metadata;  // key -> value (strings, numbers, booleans, arrays), in file order
  std::vector<GgufTensorInfo> tensors;
  uint64_t file_bytes = 0;
};

// Reads the header, metadata and tensor infos. Arrays longer than max_array elements keep their first
// max_array elements (the count is kept as "<key>.__count"). Errors: lora::Error (runtime) naming the
// file and what is wrong (bad magic, unsupported version, truncated, unknown value type).
GgufFile gguf_file_read(const std::string& path, size_t max_array = 16);

// "F32", "F16", "Q8_0", ... for a ggml type id; "type N" for ids not listed.
std::string gguf_type_name(uint32_t type);

}  // namespace lora
