// safetensors reader (mmap + validation) and crash-safe writer; see safetensors.h for the contract.
// The validation rules follow the reference implementation (huggingface/safetensors, Rust): header
// length <= 100 MB and inside the file, header a JSON object starting with '{', dtype known, shape
// product and byte length computed with overflow checks and equal to end - begin, offsets sorted,
// contiguous from 0 and covering the buffer exactly. Duplicate names, which a JSON parser would
// silently merge, are detected while parsing (json_parse_strict).
#include "core/formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"

namespace lora {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100000000;  // the reference's MAX_HEADER_SIZE

uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

std::string errno_text() { return std::strerror(errno); }

}  // namespace

// ---- half-precision conversions ----

float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // NaN: keep it quiet
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest, ties to even; overflow carries into inf
  return uint16_t(x >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in f32
    float v = float(mant) * 5.9604644775390625e-8f;
    return bits_f32(f32_bits(v) | sign);
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u)  // inf, or NaN (kept quiet, top payload bits kept)
    return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf
  uint32_t e = ax >> 23;
  if (e < 113) {  // below 2^-14: f16 subnormal, in units of 2^-24
    if (e < 102) return sign;  // < 2^-25 rounds to zero (2^-25 itself ties to even zero)
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // 14..24
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the smallest normal: correct
    return uint16_t(sign | q);
  }
  uint32_t r = ((e - 112) << 10) | ((ax & 0x7fffffu) >> 13);
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return uint16_t(sign | r);
}

// ---- dtypes ----

namespace {
struct StDTypeInfo { StDType dtype; const char* name; size_t size; };
const StDTypeInfo kStDTypes[] = {
    {StDType::BOOL, "BOOL", 1}, {StDType::U8, "U8", 1},   {StDType::I8, "I8", 1},
    {StDType::F8_E5M2, "F8_E5M2", 1}, {StDType::F8_E4M3, "F8_E4M3", 1},
    {StDType::I16, "I16", 2},   {StDType::U16, "U16", 2}, {StDType::F16, "F16", 2},
    {StDType::BF16, "BF16", 2}, {StDType::I32, "I32", 4}, {StDType::U32, "U32", 4},
    {StDType::F32, "F32", 4},   {StDType::F64, "F64", 8}, {StDType::I64, "I64", 8},
    {StDType::U64, "U64", 8},
};
}  // namespace

const char* st_dtype_name(StDType dtype) {
  for (const auto& d : kStDTypes) if (d.dtype == dtype) return d.name;
  return "?";
}

size_t st_dtype_size(StDType dtype) {
  for (const auto& d : kStDTypes) if (d.dtype == dtype) return d.size;
  return 0;
}

bool st_dtype_parse(const std::string& name, StDType* out) {
  for (const auto& d : kStDTypes) {
    if (name == d.name) { *out = d.dtype; return true; }
  }
  return false;
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string SafetensorsEntry::shape_str() const {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ")";
  return os.str();
}

// ---- reader ----

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() { if (addr) munmap(addr, size); }
};

namespace {

// One tensor's header entry, checked; `where` is "file 'p': tensor 'name'" for messages.
SafetensorsEntry entry_parse(const std::string& name, const nlohmann::json& v, const std::string& path) {
  const std::string where = "safetensors file '" + path + "': tensor '" + name + "'";
  const std::string hint = "the file is corrupt or was not written by a safetensors writer; re-export it";
  if (!v.is_object()) fail_runtime(where + ": expected an object {dtype, shape, data_offsets}, found " +
                                   std::string(v.type_name()), hint);
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(key)) fail_runtime(where + ": missing key '" + key + "'", hint);
  }
  SafetensorsEntry e;
  e.name = name;
  const auto& dt = v["dtype"];
  if (!dt.is_string()) fail_runtime(where + ": dtype must be a string, found " + std::string(dt.type_name()), hint);
  if (!st_dtype_parse(dt.get<std::string>(), &e.dtype)) {
    std::string known;
    for (const auto& d : kStDTypes) known += std::string(known.empty() ? "" : ", ") + d.name;
    fail_runtime(where + ": unknown dtype '" + dt.get<std::string>() + "' (known: " + known + ")", hint);
  }
  const auto& shape = v["shape"];
  if (!shape.is_array()) fail_runtime(where + ": shape must be an array, found " + std::string(shape.type_name()), hint);
  uint64_t numel = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned())
      fail_runtime(where + ": shape entries must be non-negative integers, found " + d.dump(), hint);
    uint64_t n = d.get<uint64_t>();
    if (n > uint64_t(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, n, &numel))
      fail_runtime(where + ": shape " + shape.dump() + " has an element count that overflows 64 bits", hint);
    e.shape.push_back(int64_t(n));
  }
  uint64_t nbytes = 0;
  if (numel > uint64_t(std::numeric_limits<int64_t>::max()) ||
      __builtin_mul_overflow(numel, uint64_t(st_dtype_size(e.dtype)), &nbytes))
    fail_runtime(where + ": shape " + shape.dump() + " has a byte size that overflows 64 bits", hint);
  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    fail_runtime(where + ": data_offsets must be two non-negative integers [begin, end], found " + off.dump(), hint);
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.end < e.begin)
    fail_runtime(where + ": data_offsets " + off.dump() + " end before they begin", hint);
  if (e.end - e.begin != nbytes)
    fail_runtime(where + ": data_offsets " + off.dump() + " span " + std::to_string(e.end - e.begin) +
                 " bytes but " + st_dtype_name(e.dtype) + " " + e.shape_str() + " needs " +
                 std::to_string(nbytes), hint);
  return e;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const std::string where = "safetensors file '" + path + "'";
  const std::string hint = "the file is truncated or corrupt (an interrupted download or copy?); fetch it again";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_runtime("cannot open " + where + ": " + errno_text());
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_runtime("cannot read " + where + ": not a regular file");
  }
  uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail_runtime(where + " is " + std::to_string(size) + " bytes, shorter than the 8-byte header length", hint);
  }
  auto map = std::make_shared<Mapping>();
  void* addr = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int mmap_errno = errno;
  ::close(fd);
  if (addr == MAP_FAILED) fail_runtime("cannot memory-map " + where + ": " + std::strerror(mmap_errno));
  map->addr = addr;
  map->size = size;
  const uint8_t* base = static_cast<const uint8_t*>(addr);

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];  // little-endian u64
  if (n > kMaxHeaderBytes)
    fail_runtime(where + ": header length " + std::to_string(n) + " exceeds the limit of " +
                 std::to_string(kMaxHeaderBytes) + " bytes", "this is not a safetensors file, or it is corrupt");
  if (n > size - 8)
    fail_runtime(where + ": header length " + std::to_string(n) + " but only " + std::to_string(size - 8) +
                 " bytes follow the length field", hint);
  std::string text(reinterpret_cast<const char*>(base + 8), size_t(n));
  if (text.empty() || text[0] != '{')
    fail_runtime(where + ": header does not start with '{'", "this is not a safetensors file, or it is corrupt");
  nlohmann::json header = json_parse_strict(text, where + " header");
  if (!header.is_object())
    fail_runtime(where + ": header is " + std::string(header.type_name()) + ", expected a JSON object", hint);

  SafetensorsFile f;
  f.path_ = path;
  f.map_ = map;
  f.buffer_ = base + 8 + n;
  const uint64_t buffer_bytes = size - 8 - n;
  for (const auto& item : header.items()) {
    if (item.key() == "__metadata__") {
      if (item.value().is_null()) continue;
      if (!item.value().is_object())
        fail_runtime(where + ": __metadata__ must be an object of strings, found " +
                     std::string(item.value().type_name()), hint);
      for (const auto& m : item.value().items()) {
        if (!m.value().is_string())
          fail_runtime(where + ": __metadata__ value of '" + m.key() + "' must be a string, found " +
                       m.value().dump(), hint);
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    SafetensorsEntry e = entry_parse(item.key(), item.value(), path);
    if (e.end > buffer_bytes)
      fail_runtime(where + ": tensor '" + e.name + "': data_offsets [" + std::to_string(e.begin) + ", " +
                   std::to_string(e.end) + "] reach past the end of the " + std::to_string(buffer_bytes) +
                   "-byte data buffer", hint);
    f.entries_.push_back(std::move(e));
  }

  std::sort(f.entries_.begin(), f.entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  const SafetensorsEntry* prev = nullptr;
  for (const auto& e : f.entries_) {
    if (e.begin < expect)
      fail_runtime(where + ": tensor '" + e.name + "' (bytes [" + std::to_string(e.begin) + ", " +
                   std::to_string(e.end) + ")) overlaps tensor '" + prev->name + "' (ending at " +
                   std::to_string(expect) + ")", hint);
    if (e.begin > expect)
      fail_runtime(where + ": gap of " + std::to_string(e.begin - expect) + " bytes before tensor '" + e.name +
                   "' (expected it to start at byte " + std::to_string(expect) + ", found " +
                   std::to_string(e.begin) + ")", hint);
    expect = e.end;
    prev = &e;
  }
  if (expect != buffer_bytes)
    fail_runtime(where + ": tensors cover " + std::to_string(expect) + " bytes but the data buffer has " +
                 std::to_string(buffer_bytes), hint);
  for (size_t i = 0; i < f.entries_.size(); ++i) f.index_[f.entries_[i].name] = i;
  return f;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* SafetensorsFile::bytes(const SafetensorsEntry& e) const { return buffer_ + e.begin; }

Tensor SafetensorsFile::to_f32(const SafetensorsEntry& e) const {
  Tensor t = tensor_host(e.shape, DType::f32);
  float* out = t.f32();
  const uint8_t* src = bytes(e);
  const size_t n = size_t(e.numel());
  switch (e.dtype) {
    case StDType::F32: std::memcpy(out, src, n * 4); break;
    case StDType::BF16:
      for (size_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); out[i] = bf16_to_f32(h); }
      break;
    case StDType::F16:
      for (size_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); out[i] = f16_to_f32(h); }
      break;
    case StDType::F64:
      for (size_t i = 0; i < n; ++i) { double d; std::memcpy(&d, src + 8 * i, 8); out[i] = float(d); }
      break;
    default:
      fail_runtime("safetensors file '" + path_ + "': tensor '" + e.name + "' is " + st_dtype_name(e.dtype) +
                   ", expected a floating-point dtype (F32, BF16, F16 or F64)");
  }
  return t;
}

Tensor SafetensorsFile::to_i32(const SafetensorsEntry& e) const {
  Tensor t = tensor_host(e.shape, DType::i32);
  int32_t* out = t.i32();
  const uint8_t* src = bytes(e);
  const size_t n = size_t(e.numel());
  auto widen = [&](auto tag) {
    using T = decltype(tag);
    for (size_t i = 0; i < n; ++i) { T v; std::memcpy(&v, src + sizeof(T) * i, sizeof(T)); out[i] = int32_t(v); }
  };
  switch (e.dtype) {
    case StDType::I32: std::memcpy(out, src, n * 4); break;
    case StDType::I16: widen(int16_t{}); break;
    case StDType::U16: widen(uint16_t{}); break;
    case StDType::I8: widen(int8_t{}); break;
    case StDType::U8: case StDType::BOOL: widen(uint8_t{}); break;
    case StDType::I64:
      for (size_t i = 0; i < n; ++i) {
        int64_t v;
        std::memcpy(&v, src + 8 * i, 8);
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
          fail_runtime("safetensors file '" + path_ + "': tensor '" + e.name + "' element " + std::to_string(i) +
                       " = " + std::to_string(v) + " does not fit in 32 bits");
        out[i] = int32_t(v);
      }
      break;
    default:
      fail_runtime("safetensors file '" + path_ + "': tensor '" + e.name + "' is " + st_dtype_name(e.dtype) +
                   ", expected an integer dtype (I32, I64, I16, U16, I8, U8 or BOOL)");
  }
  return t;
}

// ---- writer ----

namespace {

// A file written to path.tmp and renamed over path on commit(); removed again if never committed.
// (fsutil's file_write_atomic does the same for a string; this one streams, so a multi-GB checkpoint
// is never held in memory twice.)
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail_runtime("cannot create '" + tmp_ + "': " + errno_text(),
                              "check that the directory exists and is writable");
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail_runtime("cannot write '" + tmp_ + "': " + errno_text(), "is the disk full?");
      p += w;
      n -= size_t(w);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail_runtime("cannot fsync '" + tmp_ + "': " + errno_text());
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail_runtime("cannot close '" + tmp_ + "': " + errno_text());
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail_runtime("cannot rename '" + tmp_ + "' to '" + path_ + "': " + errno_text());
    committed_ = true;
    size_t slash = path_.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      // Some file systems cannot fsync a directory (EINVAL); the rename has still happened.
      if (::fsync(dfd) != 0 && errno != EINVAL) {
        std::string err = errno_text();
        ::close(dfd);
        fail_runtime("cannot fsync directory '" + dir + "': " + err);
      }
      ::close(dfd);
    }
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

StDType st_dtype_of(DType d) {
  switch (d) {
    case DType::f32: return StDType::F32;
    case DType::bf16: return StDType::BF16;
    case DType::f16: return StDType::F16;
    case DType::i32: return StDType::I32;
  }
  return StDType::F32;
}

// Streams one tensor's bytes as `out`, converting through f32 in chunks where the dtypes differ.
void tensor_write_as(AtomicFile& file, const Tensor& t, DType out) {
  const size_t n = size_t(t.numel());
  if (t.dtype == out) { file.write(t.data, t.nbytes()); return; }
  constexpr size_t kChunk = 1 << 16;
  std::vector<uint16_t> buf(kChunk);
  std::vector<float> f(kChunk);
  for (size_t i0 = 0; i0 < n; i0 += kChunk) {
    size_t m = std::min(kChunk, n - i0);
    for (size_t i = 0; i < m; ++i) {
      const uint16_t* h = static_cast<const uint16_t*>(t.data) + i0 + i;
      f[i] = t.dtype == DType::f32 ? static_cast<const float*>(t.data)[i0 + i]
             : t.dtype == DType::bf16 ? bf16_to_f32(*h) : f16_to_f32(*h);
    }
    if (out == DType::f32) { file.write(f.data(), m * 4); continue; }
    for (size_t i = 0; i < m; ++i) buf[i] = out == DType::bf16 ? f32_to_bf16(f[i]) : f32_to_f16(f[i]);
    file.write(buf.data(), m * 2);
  }
}

}  // namespace

void safetensors_write(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, DType float_dtype) {
  if (float_dtype == DType::i32) throw std::logic_error("safetensors_write: float_dtype must be f32, bf16 or f16");
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<DType> out_dtypes;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const std::string where = "writing safetensors file '" + path + "': tensor '" + name + "'";
    if (name == "__metadata__" || header.contains(name))
      fail_runtime(where + ": the name is " + (name == "__metadata__" ? "reserved" : "given twice"));
    if (t.device != Device::cpu) throw std::logic_error(where + " is not a host tensor");
    if (t.data == nullptr && t.numel() != 0) throw std::logic_error(where + " has no data");
    DType out = t.dtype == DType::i32 ? DType::i32 : float_dtype;
    uint64_t nbytes = uint64_t(t.numel()) * dtype_size(out);
    header[name] = {{"dtype", st_dtype_name(st_dtype_of(out))},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    out_dtypes.push_back(out);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail_runtime("writing safetensors file '" + path + "': a tensor name or metadata is not valid UTF-8 (" +
                 e.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the buffer starts 8-byte aligned, as the reference does
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  AtomicFile file(path);
  file.write(len, 8);
  file.write(text.data(), text.size());
  for (size_t i = 0; i < tensors.size(); ++i) tensor_write_as(file, tensors[i].second, out_dtypes[i]);
  file.commit();
}

}  // namespace lora
