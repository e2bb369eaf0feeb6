// tokenizer_load: picks the tokenizer kind from the files present in a model directory, plus the small
// helpers the tokenizer sources share (whole-file reads, the FNV-1a fingerprint hash).
// Contract: every failure is a lora::Error that names the directory and the file names looked for.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "core/base/error.h"
#include "core/text/tokenizer.h"

namespace lora {
namespace {

bool path_is_file(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool path_is_dir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Both files of a pair, or neither; one without the other is an error naming the missing one.
bool pair_present(const std::string& dir, const char* first, const char* second) {
  bool has_first = path_is_file(dir + "/" + first);
  bool has_second = path_is_file(dir + "/" + second);
  if (has_first && has_second) return true;
  if (has_first || has_second) {
    const char* present = has_first ? first : second;
    const char* missing = has_first ? second : first;
    fail_runtime("tokenizer directory " + dir + " has " + present + " but not " + missing,
                 std::string("a byte-level BPE tokenizer needs both ") + first + " and " + second +
                     "; copy the missing file from the model's original release");
  }
  return false;
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_load(const std::string& dir) {
  if (!path_is_dir(dir)) {
    fail_runtime("tokenizer directory " + dir + " does not exist or is not a directory",
                 "point model.path at a HF-format model directory holding the tokenizer files");
  }
  if (pair_present(dir, "vocab.json", "merges.txt")) {
    return tokenizer_bpe_load(dir, dir + "/vocab.json", dir + "/merges.txt");
  }
  if (pair_present(dir, "encoder.json", "vocab.bpe")) {
    return tokenizer_bpe_load(dir, dir + "/encoder.json", dir + "/vocab.bpe");
  }
  if (path_is_file(dir + "/tokenizer.model")) return tokenizer_sp_load(dir + "/tokenizer.model");
  if (path_is_file(dir + "/tokenizer.json")) return tokenizer_bpe_load(dir, "", "");
  fail_runtime("no tokenizer found in " + dir +
                   ": looked for vocab.json + merges.txt, encoder.json + vocab.bpe, tokenizer.model "
                   "and tokenizer.json",
               "copy the tokenizer files of the model's HF release into this directory");
}

std::string tokenizer_file_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_runtime("cannot open " + path, "check that the file exists and is readable");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) fail_runtime("error while reading " + path, "check the file and the disk");
  return buf.str();
}

uint64_t tokenizer_hash(const std::string& bytes, uint64_t h) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;  // FNV-1a 64-bit prime
  }
  return h;
}

std::string tokenizer_hash_hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void tokenizer_files_copy(const std::string& src_dir, const std::string& dst_dir) {
  namespace fs = std::filesystem;
  for (const char* name : {"vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer.json",
                           "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"}) {
    fs::path src = fs::path(src_dir) / name;
    if (!fs::exists(src)) continue;
    std::error_code ec;
    fs::copy_file(src, fs::path(dst_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) fail_runtime("cannot copy '" + src.string() + "' to '" + dst_dir + "': " + ec.message());
  }
}

}  // namespace lora
