// See gguf_read.h. Written from the GGUF format description (ggml docs/gguf.md); value type ids:
// 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array, 10 u64, 11 i64, 12 f64.
#include "core/formats/gguf_read.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "core/base/fsutil.h"

namespace lora {

namespace {

constexpr uint64_t kMaxCount = uint64_t(1) << 40;  // bounds counts before anything is reserved

// Reads the file front to back through a stream (the header only: tensor data may be gigabytes).
class Cursor {
 public:
  Cursor(std::ifstream& in, uint64_t size, const std::string& path) : in_(in), size_(size), path_(path) {}
  template <class T> T get() {
    T v;
    read(&v, sizeof(T));
    return v;
  }
  std::string bytes(uint64_t n) {
    if (n > size_ - p_) fail("unexpected end of file");
    std::string v(size_t(n), '\0');
    read(v.data(), size_t(n));
    return v;
  }
  // GGUF strings are UTF-8; stray bytes become U+FFFD, so that metadata and names print and dump as JSON.
  std::string str() { return utf8_sanitize(bytes(get<uint64_t>())); }
  uint64_t count(const char* what) {
    uint64_t n = get<uint64_t>();
    if (n > kMaxCount || n > size_) fail("implausible " + std::string(what) + " count " + std::to_string(n));
    return n;
  }
  [[noreturn]] void fail(const std::string& what) const {
    fail_runtime("GGUF file '" + path_ + "': " + what + " (at byte " + std::to_string(p_) + ")",
                 "the file is truncated or not a GGUF file; write it again with `lora export --to gguf`");
  }

 private:
  void read(void* dst, size_t n) {
    if (n > size_ - p_ || !in_.read(static_cast<char*>(dst), std::streamsize(n))) fail("unexpected end of file");
    p_ += n;
  }
  std::ifstream& in_;
  uint64_t size_;
  const std::string& path_;
  uint64_t p_ = 0;
};

nlohmann::ordered_json read_value(Cursor& c, uint32_t type, size_t max_array, uint64_t* array_count) {
  switch (type) {
    case 0: return c.get<uint8_t>();
    case 1: return c.get<int8_t>();
    case 2: return c.get<uint16_t>();
    case 3: return c.get<int16_t>();
    case 4: return c.get<uint32_t>();
    case 5: return c.get<int32_t>();
    case 6: return c.get<float>();
    case 7: return c.get<uint8_t>() != 0;
    case 8: return c.str();
    case 10: return c.get<uint64_t>();
    case 11: return c.get<int64_t>();
    case 12: return c.get<double>();
    case 9: {
      uint32_t elem = c.get<uint32_t>();
      if (elem == 9) c.fail("nested arrays are not supported");
      uint64_t n = c.count("array element");
      if (array_count) *array_count = n;
      nlohmann::ordered_json arr = nlohmann::ordered_json::array();
      for (uint64_t i = 0; i < n; ++i) {
        nlohmann::ordered_json v = read_value(c, elem, max_array, nullptr);
        if (i < max_array) arr.push_back(std::move(v));
      }
      return arr;
    }
    default: c.fail("unknown metadata value type " + std::to_string(type));
  }
}

}  // namespace

std::string gguf_type_name(uint32_t type) {
  static const char* names[] = {"F32",  "F16",  "Q4_0", "Q4_1", "type 4", "type 5", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",   "Q8_K",   "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
                                "IQ1_M", "BF16"};
  if (type < sizeof(names) / sizeof(names[0])) return names[type];
  return "type " + std::to_string(type);
}

GgufFile gguf_file_read(const std::string& path, size_t max_array) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in) fail_runtime("cannot read '" + path + "'", "check that the file exists and is readable");
  GgufFile g;
  g.path = path;
  g.file_bytes = size;
  Cursor c(in, size, path);
  char magic[4] = {};
  if (size >= 4) std::memcpy(magic, c.bytes(4).data(), 4);
  if (std::memcmp(magic, "GGUF", 4) != 0)
    fail_runtime("'" + path + "' is not a GGUF file (it does not start with \"GGUF\")",
                 "lora info reads GGUF files such as those `lora export --to gguf` writes");
  g.version = c.get<uint32_t>();
  if (g.version < 2 || g.version > 3)
    fail_runtime("GGUF file '" + path + "' has version " + std::to_string(g.version) + "; versions 2 and 3 are read",
                 "convert it with a current llama.cpp");
  const uint64_t n_tensors = c.count("tensor"), n_kv = c.count("metadata");
  g.metadata = nlohmann::ordered_json::object();
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.str();
    uint32_t type = c.get<uint32_t>();
    uint64_t n = 0;
    g.metadata[key] = read_value(c, type, max_array, &n);
    if (type == 9 && n > max_array) g.metadata[key + ".__count"] = n;
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.str();
    uint32_t nd = c.get<uint32_t>();
    if (nd > 8) c.fail("tensor '" + t.name + "' has " + std::to_string(nd) + " dimensions");
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(c.get<uint64_t>());
    t.type = c.get<uint32_t>();
    t.offset = c.get<uint64_t>();
    if (t.offset > g.file_bytes) c.fail("tensor '" + t.name + "' has offset " + std::to_string(t.offset) + " past the end");
    g.tensors.push_back(std::move(t));
  }
  return g;
}

}  // namespace lora
