// The tokenized dataset file (HDF5, serial C API): writing it crash-safely, reading it back, and the
// validation every Dataset goes through (table shapes, offsets, prompt lengths, every id against the
// model's vocabulary). Layout and attributes are listed in dataset.h. HDF5's own error stack printing
// is switched off: every failure becomes one lora::Error naming the file.
#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/base/error.h"
#include "core/data/dataset.h"

namespace lora {

namespace {

const char* HINT_REBUILD = "delete the file and run `lora prepare` (or the training run) again to rebuild it";

void h5_quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// Owns one HDF5 identifier and closes it with the matching function.
class H5Handle {
 public:
  H5Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~H5Handle() {
    if (id_ >= 0) close_(id_);
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  hid_t release() {
    hid_t id = id_;
    id_ = -1;
    return id;
  }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// ---- writing ----

void write_check(bool ok, const std::string& path, const std::string& what) {
  if (!ok) fail_runtime("cannot write dataset file '" + path + "': " + what, "check free disk space and permissions");
}

template <typename T>
void write_array(hid_t file, const std::string& path, const char* name, hid_t mem_type, hid_t file_type,
                 const T* data, size_t n) {
  hsize_t dims[1] = {hsize_t(n)};
  H5Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  H5Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  write_check(space.ok() && dcpl.ok(), path, std::string("dataspace of ") + name);
  if (n > 0) {
    hsize_t chunk[1] = {hsize_t(std::min<size_t>(n, size_t(1) << 16))};
    H5Pset_chunk(dcpl.get(), 1, chunk);
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) H5Pset_deflate(dcpl.get(), 4);
  }
  H5Handle dset(H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  write_check(dset.ok(), path, std::string("creating table ") + name);
  if (n > 0)
    write_check(H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, path,
                std::string("writing table ") + name);
}

void write_texts(hid_t file, const std::string& path, const std::string& name,
                 const std::vector<std::string>& texts) {
  std::string bytes;
  std::vector<int64_t> offsets{0};
  for (const std::string& s : texts) {
    bytes += s;
    offsets.push_back(int64_t(bytes.size()));
  }
  write_array(file, path, (name + "_bytes").c_str(), H5T_NATIVE_UINT8, H5T_STD_U8LE,
              reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  write_array(file, path, (name + "_offsets").c_str(), H5T_NATIVE_INT64, H5T_STD_I64LE, offsets.data(),
              offsets.size());
}

void write_attr_string(hid_t file, const std::string& path, const char* name, const std::string& value) {
  H5Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), value.size() + 1);
  H5Tset_strpad(type.get(), H5T_STR_NULLTERM);
  H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  write_check(attr.ok() && H5Awrite(attr.get(), type.get(), value.c_str()) >= 0, path,
              std::string("attribute ") + name);
}

void write_attr_int(hid_t file, const std::string& path, const char* name, int64_t value) {
  H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attr(H5Acreate2(file, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  write_check(attr.ok() && H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) >= 0, path,
              std::string("attribute ") + name);
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// ---- reading ----

[[noreturn]] void fail_file(const std::string& path, const std::string& what, const std::string& hint = HINT_REBUILD) {
  fail_runtime("dataset file '" + path + "': " + what, hint);
}

H5Handle file_open(const std::string& path) {
  h5_quiet();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    fail_runtime("dataset file '" + path + "' does not exist",
                 "run `lora prepare` to tokenize the source, or check the path");
  if (H5Fis_hdf5(path.c_str()) <= 0)
    fail_file(path, "not an HDF5 file (truncated, corrupt, or not a tokenized dataset)");
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) fail_file(path, "HDF5 cannot open it (truncated or corrupt)");
  return H5Handle(file.release(), H5Fclose);
}

bool attr_exists(hid_t file, const char* name) { return H5Aexists(file, name) > 0; }

std::string read_attr_string(hid_t file, const std::string& path, const char* name) {
  if (!attr_exists(file, name)) fail_file(path, std::string("attribute '") + name + "' is missing");
  H5Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  H5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!attr.ok() || !type.ok() || H5Tget_class(type.get()) != H5T_STRING)
    fail_file(path, std::string("attribute '") + name + "' is not a string");
  std::string value;
  if (H5Tis_variable_str(type.get()) > 0) {
    char* s = nullptr;
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    if (H5Aread(attr.get(), mem.get(), &s) < 0) fail_file(path, std::string("cannot read attribute '") + name + "'");
    value = s ? s : "";
    H5free_memory(s);
  } else {
    std::vector<char> buf(H5Tget_size(type.get()) + 1, '\0');
    if (H5Aread(attr.get(), type.get(), buf.data()) < 0)
      fail_file(path, std::string("cannot read attribute '") + name + "'");
    value = buf.data();
  }
  return value;
}

int64_t read_attr_int(hid_t file, const std::string& path, const char* name) {
  if (!attr_exists(file, name)) fail_file(path, std::string("attribute '") + name + "' is missing");
  H5Handle attr(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  H5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!attr.ok() || !type.ok() || H5Tget_class(type.get()) != H5T_INTEGER)
    fail_file(path, std::string("attribute '") + name + "' is not an integer");
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0)
    fail_file(path, std::string("cannot read attribute '") + name + "'");
  return value;
}

DatasetInfo read_info(hid_t file, const std::string& path) {
  DatasetInfo info;
  info.path = path;
  if (!attr_exists(file, "magic") || read_attr_string(file, path, "magic") != DATASET_MAGIC)
    fail_file(path, std::string("not a tokenized dataset (attribute magic is not \"") + DATASET_MAGIC + "\")",
              "point data.train / data.eval at a source file or a file written by `lora prepare`");
  int64_t version = read_attr_int(file, path, "format_version");
  if (version != DATASET_FORMAT_VERSION)
    fail_file(path, "format_version is " + std::to_string(version) + ", this build reads version " +
                        std::to_string(DATASET_FORMAT_VERSION),
              "delete the file and tokenize the source again with this version of lora");
  info.format = read_attr_string(file, path, "format");
  info.template_name = read_attr_string(file, path, "template");
  info.source_path = read_attr_string(file, path, "source_path");
  info.source_hash = read_attr_string(file, path, "source_hash");
  info.tokenizer_fingerprint = read_attr_string(file, path, "tokenizer_fingerprint");
  info.vocab_size = read_attr_int(file, path, "vocab_size");
  info.eos_id = read_attr_int(file, path, "eos_id");
  info.max_length = read_attr_int(file, path, "max_length");
  info.n_truncated = read_attr_int(file, path, "n_truncated");
  info.n_dropped = read_attr_int(file, path, "n_dropped");
  info.n_examples = read_attr_int(file, path, "n_examples");
  info.n_tokens = read_attr_int(file, path, "n_tokens");
  return info;
}

template <typename T>
std::vector<T> read_array(hid_t file, const std::string& path, const std::string& name, hid_t mem_type,
                          H5T_class_t want_class) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) fail_file(path, "table '" + name + "' is missing");
  H5Handle dset(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.ok()) fail_file(path, "cannot open table '" + name + "'");
  H5Handle type(H5Dget_type(dset.get()), H5Tclose);
  H5Handle space(H5Dget_space(dset.get()), H5Sclose);
  if (!type.ok() || H5Tget_class(type.get()) != want_class)
    fail_file(path, "table '" + name + "' has the wrong element type (expected " +
                        (want_class == H5T_INTEGER ? "integers" : "floats") + ")");
  if (!space.ok() || H5Sget_simple_extent_ndims(space.get()) != 1)
    fail_file(path, "table '" + name + "' is not one-dimensional");
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  std::vector<T> out(static_cast<size_t>(n));
  if (n > 0 && H5Dread(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail_file(path, "cannot read table '" + name + "' (truncated or corrupt)");
  return out;
}

std::vector<std::string> read_texts(hid_t file, const std::string& path, const std::string& name) {
  std::vector<uint8_t> bytes = read_array<uint8_t>(file, path, name + "_bytes", H5T_NATIVE_UINT8, H5T_INTEGER);
  std::vector<int64_t> offsets = read_array<int64_t>(file, path, name + "_offsets", H5T_NATIVE_INT64, H5T_INTEGER);
  if (offsets.empty() || offsets[0] != 0 || offsets.back() != int64_t(bytes.size()))
    fail_file(path, "table '" + name + "_offsets' does not span '" + name + "_bytes'");
  std::vector<std::string> texts;
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    if (offsets[i + 1] < offsets[i])
      fail_file(path, "table '" + name + "_offsets' decreases at entry " + std::to_string(i + 1));
    texts.emplace_back(reinterpret_cast<const char*>(bytes.data()) + offsets[i], size_t(offsets[i + 1] - offsets[i]));
  }
  return texts;
}

// Every check Dataset::open and Dataset::from_tables make. where names the file for messages.
void tables_validate(const DatasetTables& t, const DatasetInfo& info, int vocab_size, const std::string& where) {
  if (vocab_size <= 0) fail_usage("dataset '" + where + "' opened with vocab_size " + std::to_string(vocab_size));
  size_t n = t.prompt_lengths.size();
  if (n == 0) fail_file(where, "has no examples", "check the source file it was made from");
  auto check_size = [&](const char* name, size_t got, size_t want) {
    if (got != want)
      fail_file(where, std::string("table '") + name + "' has " + std::to_string(got) + " entries, expected " +
                           std::to_string(want) + " (one per example" + (want == n + 1 ? ", plus one)" : ")"));
  };
  if (info.n_examples != int64_t(n) || info.n_tokens != int64_t(t.tokens.size()))
    fail_file(where, "attributes n_examples / n_tokens (" + std::to_string(info.n_examples) + " / " +
                         std::to_string(info.n_tokens) + ") do not match the tables (" + std::to_string(n) +
                         " / " + std::to_string(t.tokens.size()) + ")");
  check_size("offsets", t.offsets.size(), n + 1);
  check_size("labels", t.labels.size(), n);
  check_size("source_lines", t.source_lines.size(), n);
  check_size("prompt_text_offsets", t.prompt_texts.size() + 1, n + 1);
  check_size("completion_text_offsets", t.completion_texts.size() + 1, n + 1);
  if (t.offsets[0] != 0) fail_file(where, "offsets[0] is " + std::to_string(t.offsets[0]) + ", expected 0");
  for (size_t i = 0; i < n; ++i) {
    if (t.offsets[i + 1] <= t.offsets[i])
      fail_file(where, "offsets are not increasing at example " + std::to_string(i) + " (" +
                           std::to_string(t.offsets[i]) + " then " + std::to_string(t.offsets[i + 1]) + ")");
    if (t.offsets[i + 1] > int64_t(t.tokens.size()))
      fail_file(where, "offsets[" + std::to_string(i + 1) + "] = " + std::to_string(t.offsets[i + 1]) +
                           " is past the end of tokens (" + std::to_string(t.tokens.size()) + " ids)");
    int64_t len = t.offsets[i + 1] - t.offsets[i];
    if (t.prompt_lengths[i] < 0 || t.prompt_lengths[i] >= len)
      fail_file(where, "example " + std::to_string(i) + " has prompt length " + std::to_string(t.prompt_lengths[i]) +
                           ", expected 0 to " + std::to_string(len - 1) + " (its length is " + std::to_string(len) + ")");
  }
  if (t.offsets[n] != int64_t(t.tokens.size()))
    fail_file(where, "offsets end at " + std::to_string(t.offsets[n]) + " but tokens holds " +
                         std::to_string(t.tokens.size()) + " ids");
  const std::string hint_vocab = "the file was tokenized with another tokenizer than the model's: run `lora prepare` "
                                 "with the model's tokenizer, or delete '" + where + "' to have it rebuilt";
  if (info.eos_id < 0 || info.eos_id >= vocab_size)
    fail_file(where, "eos_id " + std::to_string(info.eos_id) + " is outside the model's vocabulary of " +
                         std::to_string(vocab_size) + " ids", hint_vocab);
  for (size_t i = 0; i < n; ++i) {
    for (int64_t k = t.offsets[i]; k < t.offsets[i + 1]; ++k) {
      int32_t id = t.tokens[size_t(k)];
      if (id < 0 || id >= vocab_size)
        fail_file(where, "example " + std::to_string(i) + " (source line " + std::to_string(t.source_lines[i]) +
                             ") has token id " + std::to_string(id) + " at position " +
                             std::to_string(k - t.offsets[i]) + ", outside the model's vocabulary of " +
                             std::to_string(vocab_size) + " ids",
                  hint_vocab);
    }
  }
}

}  // namespace

void dataset_h5_write(const std::string& path, const DatasetTables& t, const DatasetInfo& info) {
  h5_quiet();
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());  // one per writing process
  {
    H5Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    write_check(file.ok(), tmp, "cannot create the file");
    hid_t f = file.get();
    write_attr_string(f, tmp, "magic", DATASET_MAGIC);
    write_attr_int(f, tmp, "format_version", DATASET_FORMAT_VERSION);
    write_attr_string(f, tmp, "format", info.format);
    write_attr_string(f, tmp, "template", info.template_name);
    write_attr_string(f, tmp, "source_path", info.source_path);
    write_attr_string(f, tmp, "source_hash", info.source_hash);
    write_attr_string(f, tmp, "tokenizer_fingerprint", info.tokenizer_fingerprint);
    write_attr_int(f, tmp, "vocab_size", info.vocab_size);
    write_attr_int(f, tmp, "eos_id", info.eos_id);
    write_attr_int(f, tmp, "max_length", info.max_length);
    write_attr_int(f, tmp, "n_truncated", info.n_truncated);
    write_attr_int(f, tmp, "n_dropped", info.n_dropped);
    write_attr_int(f, tmp, "n_examples", int64_t(t.prompt_lengths.size()));
    write_attr_int(f, tmp, "n_tokens", int64_t(t.tokens.size()));
    write_array(f, tmp, "tokens", H5T_NATIVE_INT32, H5T_STD_I32LE, t.tokens.data(), t.tokens.size());
    write_array(f, tmp, "offsets", H5T_NATIVE_INT64, H5T_STD_I64LE, t.offsets.data(), t.offsets.size());
    write_array(f, tmp, "prompt_lengths", H5T_NATIVE_INT32, H5T_STD_I32LE, t.prompt_lengths.data(),
                t.prompt_lengths.size());
    write_array(f, tmp, "labels", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, t.labels.data(), t.labels.size());
    write_array(f, tmp, "source_lines", H5T_NATIVE_INT64, H5T_STD_I64LE, t.source_lines.data(),
                t.source_lines.size());
    write_texts(f, tmp, "prompt_text", t.prompt_texts);
    write_texts(f, tmp, "completion_text", t.completion_texts);
    write_check(H5Fclose(file.release()) >= 0, tmp, "closing the file");
  }
  fsync_path(tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail_runtime("cannot rename '" + tmp + "' to '" + path + "'", "check permissions of the cache directory");
  }
  fsync_path(std::filesystem::path(path).parent_path().empty() ? "." : std::filesystem::path(path).parent_path().string());
}

DatasetInfo dataset_h5_read_info(const std::string& path) {
  H5Handle file = file_open(path);
  return read_info(file.get(), path);
}

Dataset Dataset::open(const std::string& h5_path, int vocab_size) {
  H5Handle file = file_open(h5_path);
  hid_t f = file.get();
  DatasetInfo info = read_info(f, h5_path);
  DatasetTables t;
  t.tokens = read_array<int32_t>(f, h5_path, "tokens", H5T_NATIVE_INT32, H5T_INTEGER);
  t.offsets = read_array<int64_t>(f, h5_path, "offsets", H5T_NATIVE_INT64, H5T_INTEGER);
  t.prompt_lengths = read_array<int32_t>(f, h5_path, "prompt_lengths", H5T_NATIVE_INT32, H5T_INTEGER);
  if (H5Lexists(f, "labels", H5P_DEFAULT) > 0)
    t.labels = read_array<float>(f, h5_path, "labels", H5T_NATIVE_FLOAT, H5T_FLOAT);
  else
    t.labels.assign(t.prompt_lengths.size(), NAN);
  t.source_lines = read_array<int64_t>(f, h5_path, "source_lines", H5T_NATIVE_INT64, H5T_INTEGER);
  t.prompt_texts = read_texts(f, h5_path, "prompt_text");
  t.completion_texts = read_texts(f, h5_path, "completion_text");
  tables_validate(t, info, vocab_size, h5_path);
  Dataset d;
  d.tables_ = std::move(t);
  d.info_ = std::move(info);
  return d;
}

Dataset Dataset::from_tables(DatasetTables tables, DatasetInfo info, int vocab_size) {
  info.n_examples = int64_t(tables.prompt_lengths.size());
  info.n_tokens = int64_t(tables.tokens.size());
  tables_validate(tables, info, vocab_size, info.path.empty() ? std::string("<in memory>") : info.path);
  Dataset d;
  d.tables_ = std::move(tables);
  d.info_ = std::move(info);
  return d;
}

TokenSpan Dataset::tokens(size_t i) const {
  int64_t b = tables_.offsets.at(i), e = tables_.offsets.at(i + 1);
  return TokenSpan{tables_.tokens.data() + b, e - b};
}

}  // namespace lora
