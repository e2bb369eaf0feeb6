// libFuzzer harness: tokenizer files. The input's parts (split at "=====" lines) are written as a
// tokenizer directory: by the first byte, vocab.json + merges.txt + tokenizer.json (HF), encoder.json +
// vocab.bpe (OpenAI) or tokenizer.json alone; the last part is text. A tokenizer that loads encodes the
// text and decodes the ids, which must all lie inside the vocabulary.
#include <filesystem>

#include "core/text/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

using namespace lora;
namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int layout = data[0] % 3;
  std::vector<std::string> parts = lora_fuzz::split_parts(data + 1, size - 1, 4);
  const fs::path dir = lora_fuzz::scratch_dir() / "tokenizer";
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto put = [&](const char* name, const std::string& bytes) {
    lora_fuzz::write_file((fs::path("tokenizer") / name).string(), bytes);
  };
  if (layout == 0) {
    put("vocab.json", parts[0]);
    put("merges.txt", parts[1]);
    if (!parts[2].empty()) put("tokenizer.json", parts[2]);
  } else if (layout == 1) {
    put("encoder.json", parts[0]);
    put("vocab.bpe", parts[1]);
  } else {
    put("tokenizer.json", parts[0]);
  }
  lora_fuzz::expect_ok_or_error([&] {
    std::unique_ptr<Tokenizer> tok = tokenizer_load(dir.string());
    std::vector<int32_t> ids = tok->encode(parts[3]);
    for (int32_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
    tok->decode(ids);
    for (int32_t id : ids) tok->token_text(id);
  });
  return 0;
}
