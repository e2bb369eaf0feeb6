// dataset_prepare: the tokenized-dataset cache. A source is tokenized once per (source bytes, format,
// tokenizer, max_length); the key is in the file name and, checked again, in the file's attributes, so a
// changed source or tokenizer gives a new file and a matching file is reused without tokenizing.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "core/data/dataset.h"

namespace lora {

namespace {

bool file_is_hdf5(const std::string& path) {
  static const char signature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  std::ifstream in(path, std::ios::binary);
  char head[8] = {};
  return in.read(head, 8) && std::memcmp(head, signature, 8) == 0;
}

// Why an existing cache file does not match what would be written now; empty if it matches.
std::string cache_mismatch(const DatasetInfo& have, const DatasetInfo& want) {
  if (have.source_hash != want.source_hash) return "the source's hash differs";
  if (have.format != want.format) return "the format differs";
  if (have.template_name != want.template_name) return "the tokenization template differs";
  if (have.tokenizer_fingerprint != want.tokenizer_fingerprint) return "the tokenizer fingerprint differs";
  if (have.max_length != want.max_length) return "max_length differs";
  if (have.eos_id != want.eos_id || have.vocab_size != want.vocab_size) return "the tokenizer's eos or vocabulary differs";
  return {};
}

}  // namespace

DatasetPrepareResult dataset_prepare(const std::string& source_path, const std::string& format,
                                     const Tokenizer& tok, int max_length, const std::string& cache_dir,
                                     const DatasetOptions& options) {
  namespace fs = std::filesystem;
  DatasetPrepareResult result;
  std::error_code ec;
  if (fs::is_regular_file(source_path, ec) && file_is_hdf5(source_path)) {
    result.info = dataset_h5_read_info(source_path);
    if (result.info.tokenizer_fingerprint != tok.fingerprint())
      fail_usage("dataset file '" + source_path + "' was tokenized with another tokenizer (fingerprint " +
                     result.info.tokenizer_fingerprint + ", the model's is " + tok.fingerprint() + ")",
                 "point data.train / data.eval at the text source, or prepare it with the model's tokenizer");
    result.path = source_path;
    result.reused = true;
    return result;
  }
  if (max_length < 2)
    fail_usage("data.max_length must be at least 2, found " + std::to_string(max_length),
               "a typical value is 512 for E2E");

  DatasetInfo want;
  want.format = dataset_format_resolve(source_path, format);
  want.template_name = dataset_template_name(want.format, options);
  want.source_path = source_path;
  want.source_hash = dataset_source_hash(source_path);
  want.tokenizer_fingerprint = tok.fingerprint();
  want.vocab_size = tok.vocab_size();
  want.eos_id = tok.eos_id();
  want.max_length = max_length;

  fs::path dir = cache_dir.empty() ? fs::path(source_path).parent_path() : fs::path(cache_dir);
  if (dir.empty()) dir = ".";
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    fail_runtime("cannot create the dataset cache directory '" + dir.string() + "': " + ec.message(),
                 "set data.cache_dir to a writable directory");
  std::string hash_hex = want.source_hash.substr(want.source_hash.find(':') + 1);
  std::string name = fs::path(source_path).stem().string() + "." + want.format + "." + hash_hex + "." +
                     hash_fnv1a64_hex(want.tokenizer_fingerprint) + ".L" + std::to_string(max_length) + ".h5";
  result.path = (dir / name).string();

  if (fs::exists(result.path, ec)) {
    try {
      DatasetInfo have = dataset_h5_read_info(result.path);
      result.stale_reason = cache_mismatch(have, want);
      if (result.stale_reason.empty()) {
        result.info = have;
        result.reused = true;
        return result;
      }
    } catch (const Error& e) {
      result.stale_reason = e.what();
    }
  }
  DatasetTables tables = dataset_tokenize(source_path, want.format, tok, max_length, &result.info, options);
  if (result.info.source_hash != want.source_hash)
    fail_runtime("dataset source '" + source_path + "' changed while it was being tokenized",
                 "run again once the file is no longer being written");
  dataset_h5_write(result.path, tables, result.info);
  result.info.path = result.path;
  return result;
}

}  // namespace lora
