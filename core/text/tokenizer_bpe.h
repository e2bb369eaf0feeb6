// Internal to the byte-level BPE tokenizer: what core/text/tokenizer_bpe.cpp (the UTF-8 and byte tables,
// encode/decode) and core/text/tokenizer_bpe_split.cpp (the pre-tokenizers) share with
// core/text/tokenizer_bpe_load.cpp (reading the vocabulary, merges and added-token files and building the
// tables below). Not part of the public interface, which is core/text/tokenizer.h.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/text/tokenizer.h"

namespace lora {
namespace bpe {

constexpr uint32_t CP_INVALID = 0xFFFFFFFFu;  // a byte that does not start a valid UTF-8 sequence

// The code point at s[pos], advancing pos. An invalid, overlong or truncated sequence yields CP_INVALID
// and advances one byte, so every byte string splits into units that concatenate back to itself.
uint32_t utf8_next(const char* s, size_t n, size_t& pos);
void utf8_append(std::string& out, uint32_t cp);

// GPT-2's bytes_to_unicode: the printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF)
// stand for themselves; the other 68 bytes map to U+0100, U+0101, ... in byte order.
struct ByteMap {
  uint32_t byte_to_cp[256];
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
};

const ByteMap& byte_map();

// Appends the words of text[begin, end) as absolute byte ranges (core/text/tokenizer_bpe_split.cpp).
void split_words_into(const std::string& text, size_t begin, size_t end, BpeSplit split,
                      std::vector<std::pair<size_t, size_t>>& words);

// The raw bytes a vocabulary string spells; false if it holds a character outside the byte table.
bool vocab_string_to_bytes(const std::string& token, std::string& bytes);

struct AddedToken {
  std::string content;
  int32_t id;
  bool lstrip = false;      // absorbs whitespace on its left (RoBERTa's <mask>)
  bool rstrip = false;      // absorbs whitespace on its right
  bool normalized = false;  // matched in the normalized text, after the others (tokenizer.json's flag)
  std::string match;        // what is looked for in text: content, normalized where `normalized` is set
};

struct Merge {
  int32_t rank;    // line order in merges.txt: lower merges first
  int32_t result;  // id of the concatenated token
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// The tables are filled by tokenizer_bpe_load; the methods are in core/text/tokenizer_bpe.cpp.
class BpeTokenizer : public Tokenizer {
 public:
  std::vector<std::string> id_bytes;  // (V) the bytes each id decodes to
  std::vector<bool> id_present;       // (V) false for ids the files leave unused
  int32_t byte_id[256];               // id of each single-byte token
  std::unordered_map<uint64_t, Merge> merges;
  std::vector<AddedToken> added;      // matched in text before pre-tokenization
  bool add_prefix_space = false;      // tokenizer.json ByteLevel option: a space before each piece
  bool nfc = false;                   // tokenizer.json normalizer NFC (Qwen2)
  BpeSplit split = BPE_SPLIT_GPT2;    // the pre-tokenizer's pattern
  // tokenizer.json model.ignore_merges (LLaMA 3): a word that is itself in the vocabulary is that one
  // token, whatever the merges would make of it (HF `tokenizers` models/bpe/model.rs).
  bool ignore_merges = false;
  std::unordered_map<std::string, int32_t> vocab_ids;  // bytes -> id of the vocabulary's tokens, for it
  int32_t eos = -1;
  int32_t bos = -1;                   // from the post_processor: put before every example
  std::string hash_hex;

  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string token_text(int32_t id) const override;
  int32_t eos_id() const override { return eos; }
  int32_t bos_id() const override { return bos; }
  int vocab_size() const override { return static_cast<int>(id_bytes.size()); }
  std::string fingerprint() const override { return hash_hex; }
  std::string kind() const override;

 private:
  static constexpr size_t CACHE_MAX_WORDS = 1 << 16;    // cleared when full: bounded memory
  static constexpr size_t CACHE_MAX_WORD_BYTES = 256;    // longer words are rare: not cached
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  size_t checked(int32_t id) const;
  void encode_added(const std::string& text, size_t begin, size_t end, bool normalized,
                    std::vector<int32_t>& ids) const;
  void encode_piece(const std::string& text, size_t begin, size_t end, std::vector<int32_t>& ids) const;
  std::vector<int32_t> bpe_merge(const char* p, size_t len) const;
  void encode_word(const char* p, size_t len, std::vector<int32_t>& ids) const;
};

}  // namespace bpe
}  // namespace lora
