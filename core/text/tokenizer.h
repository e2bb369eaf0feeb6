// Tokenizers: byte-level BPE (vocab.json + merges.txt, OpenAI's encoder.json + vocab.bpe, or an HF
// tokenizer.json) in three layouts: GPT-2's (also RoBERTa's), Qwen2's (NFC, its own split pattern) and
// LLaMA 3's (its split pattern, whole-word vocabulary matches, <|begin_of_text|> in front); and
// SentencePiece (tokenizer.model, LLaMA 1/2 family). One interface; tokenizer_load picks the kind from
// the files present in a directory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lora {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of text. Special tokens written in the text (e.g. "<|endoftext|>") map to their ids.
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string token_text(int32_t id) const = 0;  // one token, printable, for --dry-run
  virtual int32_t eos_id() const = 0;   // -1 when the vocabulary has no end-of-text token
  // The id HF's tokenizer(text) puts in front of every text (LLaMA 3's <|begin_of_text|>, from
  // tokenizer.json's post_processor), -1 when it adds none. encode() never adds it; datasets put it
  // first in every example, so that a prompt's ids are what tokenizer(prompt) gives.
  virtual int32_t bos_id() const { return -1; }
  virtual int vocab_size() const = 0;
  // A stable hash of the vocabulary and merges/model (hex), recorded in tokenized datasets.
  virtual std::string fingerprint() const = 0;
  // "gpt2-bpe", "qwen2-bpe", "llama3-bpe" (byte-level BPE, by split pattern; " with NFC" or " without
  // NFC" follows where the normalizer is not that layout's) or "sentencepiece".
  virtual std::string kind() const = 0;
};

// Loads the tokenizer found in dir. Errors (lora::Error) name the directory and the files looked for.
// Looked for, in this order: vocab.json + merges.txt (HF), encoder.json + vocab.bpe (OpenAI),
// tokenizer.model (SentencePiece), tokenizer.json (HF, byte-level BPE models only). A tokenizer.json
// beside vocab.json + merges.txt still gives the normalizer, pre-tokenizer, post-processor and added tokens.
std::unique_ptr<Tokenizer> tokenizer_load(const std::string& dir);

// The two kinds, for callers that know what they hold (core/text/tokenizer_bpe.cpp,
// core/text/tokenizer_sp.cpp). vocab_path/merges_path may be empty to read the model from dir/tokenizer.json.
// Added and special tokens come from dir's tokenizer.json, added_tokens.json and special_tokens_map.json when
// present.
std::unique_ptr<Tokenizer> tokenizer_bpe_load(const std::string& dir, const std::string& vocab_path,
                                              const std::string& merges_path);
std::unique_ptr<Tokenizer> tokenizer_sp_load(const std::string& model_path);

// The split patterns of byte-level BPE pre-tokenizers, by the models that brought them
// (core/text/tokenizer_bpe_split.cpp has each pattern).
enum BpeSplit : uint8_t { BPE_SPLIT_GPT2, BPE_SPLIT_QWEN2, BPE_SPLIT_LLAMA3 };

// A pre-tokenizer: splits text into the words BPE runs on, as byte ranges [first, second). Exposed for
// tests. Bytes that are not valid UTF-8 count as symbols (neither letter, number nor space).
std::vector<std::pair<size_t, size_t>> bpe_split_words(const std::string& text, BpeSplit split = BPE_SPLIT_GPT2);

// Unicode Normalization Form C of text (utf8proc; core/text/unicode_nfc.cpp). Bytes that are not valid UTF-8
// are kept as they are, and the valid runs between them are normalized on their own.
std::string unicode_nfc(const std::string& text);

// Unicode classes of a code point (tables generated into core/text/unicode_tables.cpp).
bool unicode_is_letter(uint32_t cp);  // general category L*: \p{L}
bool unicode_is_number(uint32_t cp);  // general category N*: \p{N}
bool unicode_is_space(uint32_t cp);   // the White_Space property: \s

// Helpers shared by the tokenizer sources (core/text/tokenizer.cpp).
std::string tokenizer_file_read(const std::string& path);      // whole file; lora::Error if unreadable
uint64_t tokenizer_hash(const std::string& bytes, uint64_t h);  // FNV-1a 64, continuing from h
constexpr uint64_t TOKENIZER_HASH_SEED = 0xcbf29ce484222325ull; // FNV-1a offset basis
std::string tokenizer_hash_hex(uint64_t h);                      // 16 lowercase hex digits

// Copies the tokenizer files (vocab.json, merges.txt, tokenizer.json, tokenizer.model, ...) found in
// src_dir into dst_dir, so a written model directory is complete.
void tokenizer_files_copy(const std::string& src_dir, const std::string& dst_dir);

}  // namespace lora
