// Tokenizers: GPT-2 byte-level BPE (vocab.json + merges.txt, or OpenAI's encoder.json + vocab.bpe; also
// RoBERTa's) and SentencePiece (tokenizer.model, LLaMA family). One interface; tokenizer_load picks the
// kind from the files present in a directory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lora {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of text. Special tokens written in the text (e.g. "<|endoftext|>") map to their ids.
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string token_text(int32_t id) const = 0;  // one token, printable, for --dry-run
  virtual int32_t eos_id() const = 0;
  virtual int vocab_size() const = 0;
  // A stable hash of the vocabulary and merges/model (hex), recorded in tokenized datasets.
  virtual std::string fingerprint() const = 0;
  virtual std::string kind() const = 0;  // "gpt2-bpe" or "sentencepiece"
};

// Loads the tokenizer found in dir. Errors (lora::Error) name the directory and the files looked for.
std::unique_ptr<Tokenizer> tokenizer_load(const std::string& dir);

}  // namespace lora
