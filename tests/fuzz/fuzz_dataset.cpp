// libFuzzer harness: the dataset readers. The first byte picks the source: E2E text (`MR||text` lines,
// .txt), JSONL (prompt/completion, text, or classification records) or a GLUE TSV; the rest is the file,
// tokenized with a byte tokenizer (one id per byte, EOS 256) into the tables the HDF5 cache stores, whose
// invariants are checked.
#include "core/data/dataset.h"
#include "core/text/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

using namespace lora;

namespace {

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id < 256) s += char(id);
    return s;
  }
  std::string token_text(int32_t id) const override { return decode({id}); }
  int32_t eos_id() const override { return 256; }
  int vocab_size() const override { return 257; }
  std::string fingerprint() const override { return "bytes-fuzz"; }
  std::string kind() const override { return "bytes"; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const char* const kNames[3] = {"data.txt", "data.jsonl", "data.tsv"};
  const std::string path =
      lora_fuzz::write_file(kNames[data[0] % 3], std::string(reinterpret_cast<const char*>(data + 1), size - 1));
  lora_fuzz::expect_ok_or_error([&] {
    DatasetInfo info;
    DatasetTables t = dataset_tokenize(path, "auto", ByteTokenizer(), 64, &info);
    const size_t n = t.prompt_lengths.size();
    if (t.offsets.size() != n + 1 || t.labels.size() != n || t.source_lines.size() != n) __builtin_trap();
    if (t.offsets.front() != 0 || size_t(t.offsets.back()) != t.tokens.size()) __builtin_trap();
    for (size_t i = 0; i < n; ++i) {
      const int64_t len = t.offsets[i + 1] - t.offsets[i];
      if (len < 0 || len > 64 || t.prompt_lengths[i] < 0 || t.prompt_lengths[i] > len) __builtin_trap();
    }
    for (int32_t id : t.tokens)
      if (id < 0 || id > 256) __builtin_trap();
  });
  return 0;
}
