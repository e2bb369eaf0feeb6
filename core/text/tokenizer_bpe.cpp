// Byte-level BPE (Radford et al., 2019; openai/gpt-2 src/encoder.py), as HF `tokenizers` runs it: GPT-2's
// and RoBERTa's, Qwen2's and LLaMA 3's. As tokenizers' AddedVocabulary::extract_and_normalize does, text
// is split at the added tokens matched in the raw text, each piece between is normalized (NFC for Qwen2)
// and split at the added tokens matched in normalized text; each remaining piece is split into words by
// the layout's pattern (core/text/tokenizer_bpe_split.cpp), and each word's UTF-8 bytes start as single-byte
// tokens and are merged by merge rank, lowest first (LLaMA 3's ignore_merges first takes a word that is
// itself in the vocabulary whole). Token strings in the files spell bytes through GPT-2's
// byte-to-unicode table. This file: the UTF-8 and byte tables and encode/decode. Reading the files and
// building the tables: core/text/tokenizer_bpe_load.cpp; what they share: core/text/tokenizer_bpe.h.
// Contract: ids equal HF `tokenizers`' for the same files (without the post-processor's BOS, which is
// bos_id()); decode(encode(s)) == s for any byte string without a normalizer, == NFC(s) with NFC; encode
// is thread-safe (the word cache has a mutex).
#include <cstdio>
#include <functional>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/base/error.h"
#include "core/text/tokenizer.h"
#include "core/text/tokenizer_bpe.h"

namespace lora {
namespace bpe {

// ---------------------------------------------------------------------------------------------------
// UTF-8 and GPT-2's byte-to-unicode table

uint32_t utf8_next(const char* s, size_t n, size_t& pos) {
  unsigned char c = static_cast<unsigned char>(s[pos]);
  if (c < 0x80) return s[pos++];
  int len;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
  else { pos++; return CP_INVALID; }
  if (pos + len > n) { pos++; return CP_INVALID; }
  for (int k = 1; k < len; k++) {
    unsigned char cc = static_cast<unsigned char>(s[pos + k]);
    if ((cc & 0xC0) != 0x80) { pos++; return CP_INVALID; }
    cp = (cp << 6) | (cc & 0x3F);
  }
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { pos++; return CP_INVALID; }
  pos += len;
  return cp;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

const ByteMap& byte_map() {
  static const ByteMap map = [] {
    ByteMap m;
    uint32_t next = 0x100;
    for (int b = 0; b < 256; b++) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      m.byte_to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      m.cp_to_byte[m.byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
    return m;
  }();
  return map;
}

// The raw bytes a vocabulary string spells; false if it holds a character outside the byte table.
bool vocab_string_to_bytes(const std::string& token, std::string& bytes) {
  const ByteMap& map = byte_map();
  bytes.clear();
  size_t pos = 0;
  while (pos < token.size()) {
    auto it = map.cp_to_byte.find(utf8_next(token.data(), token.size(), pos));
    if (it == map.cp_to_byte.end()) return false;
    bytes += static_cast<char>(it->second);
  }
  return true;
}

namespace {

// Byte length of the whitespace character ending at text[end], 0 if none (for lstrip of added tokens).
size_t space_len_before(const std::string& text, size_t lo, size_t end) {
  for (size_t len = 1; len <= 4 && len <= end - lo; len++) {
    size_t pos = end - len;
    unsigned char c = static_cast<unsigned char>(text[pos]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back for the lead
    uint32_t cp = utf8_next(text.data(), end, pos);
    return (pos == end && cp != CP_INVALID && unicode_is_space(cp)) ? len : 0;
  }
  return 0;
}

size_t space_len_at(const std::string& text, size_t pos, size_t end) {
  size_t next = pos;
  uint32_t cp = utf8_next(text.data(), end, next);
  return (cp != CP_INVALID && unicode_is_space(cp)) ? next - pos : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// The tokenizer: encode and decode

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  encode_added(text, 0, text.size(), false, ids);
  return ids;
}

// Splits text[begin, end) at the added tokens of one pass (normalized: those matched in normalized text)
// and encodes the pieces between: in the first pass they are normalized and go through the second, in
// the second they are pre-tokenized. Matches are leftmost, the longest where several start at one byte.
void BpeTokenizer::encode_added(const std::string& text, size_t begin, size_t end, bool normalized,
                                std::vector<int32_t>& ids) const {
  auto encode_between = [&](size_t from, size_t to) {
    if (from >= to) return;
    if (normalized) {
      encode_piece(text, from, to, ids);
    } else if (nfc) {
      std::string norm = unicode_nfc(text.substr(from, to - from));
      encode_added(norm, 0, norm.size(), true, ids);
    } else {
      encode_added(text, from, to, true, ids);
    }
  };
  const std::string_view view = std::string_view(text).substr(0, end);
  std::vector<size_t> next_at(added.size(), 0);  // each token's next occurrence at or after pos, or npos
  std::vector<bool> searched(added.size(), false);
  size_t pos = begin;
  while (pos < end) {
    const AddedToken* hit = nullptr;
    size_t hit_at = std::string::npos;
    for (size_t k = 0; k < added.size(); k++) {
      const AddedToken& t = added[k];
      if (t.normalized != normalized) continue;
      if (!searched[k] || next_at[k] < pos) {
        next_at[k] = view.find(t.match, pos);
        searched[k] = true;
      }
      size_t at = next_at[k];
      bool longer = at == hit_at && at != std::string::npos && t.match.size() > hit->match.size();
      if (at < hit_at || longer) {
        hit = &t;
        hit_at = at;
      }
    }
    if (!hit) break;
    size_t piece_end = hit_at;
    size_t next = hit_at + hit->match.size();
    if (hit->lstrip) {
      while (size_t len = space_len_before(text, pos, piece_end)) piece_end -= len;
    }
    if (hit->rstrip) {
      while (next < end) {
        size_t len = space_len_at(text, next, end);
        if (len == 0) break;
        next += len;
      }
    }
    encode_between(pos, piece_end);
    ids.push_back(hit->id);
    pos = next;
  }
  encode_between(pos, end);
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += id_bytes[checked(id)];
  return out;
}

std::string BpeTokenizer::token_text(int32_t id) const {
  const std::string& bytes = id_bytes[checked(id)];
  std::string out;
  for (size_t pos = 0; pos < bytes.size();) {
    size_t start = pos;
    uint32_t cp = utf8_next(bytes.data(), bytes.size(), pos);
    char buf[8];
    if (cp == '\n') out += "\\n";
    else if (cp == '\t') out += "\\t";
    else if (cp == '\\') out += "\\\\";
    else if (cp == CP_INVALID || cp < 0x20 || cp == 0x7F) {
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(bytes[start]));
      out += buf;
    } else {
      out.append(bytes, start, pos - start);
    }
  }
  return out;
}

std::string BpeTokenizer::kind() const {
  static const char* names[] = {"gpt2-bpe", "qwen2-bpe", "llama3-bpe"};
  bool nfc_usual = split == BPE_SPLIT_QWEN2;  // Qwen2's layout normalizes; GPT-2's and LLaMA 3's do not
  return std::string(names[split]) + (nfc == nfc_usual ? "" : nfc ? " with NFC" : " without NFC");
}

size_t BpeTokenizer::checked(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !id_present[id]) {
    fail_runtime("token id " + std::to_string(id) + " is not in the vocabulary (" +
                     std::to_string(vocab_size()) + " ids)",
                 "the ids were made with a different tokenizer; re-tokenize the data with this model's");
  }
  return static_cast<size_t>(id);
}

void BpeTokenizer::encode_piece(const std::string& text, size_t begin, size_t end,
                                std::vector<int32_t>& ids) const {
  if (begin >= end) return;
  std::vector<std::pair<size_t, size_t>> words;
  if (add_prefix_space && text[begin] != ' ') {
    std::string spaced = " " + text.substr(begin, end - begin);
    split_words_into(spaced, 0, spaced.size(), split, words);
    for (auto& w : words) encode_word(spaced.data() + w.first, w.second - w.first, ids);
    return;
  }
  split_words_into(text, begin, end, split, words);
  for (auto& w : words) encode_word(text.data() + w.first, w.second - w.first, ids);
}

// BPE on one word: the lowest-ranked adjacent pair merges first, the leftmost among equals, until no
// pair has a merge. Symbols form a linked list and candidate pairs a min-heap, so a word of n bytes
// costs O(n log n) (a 100k-letter word is fine); this is also the order HF `tokenizers` merges in.
std::vector<int32_t> BpeTokenizer::bpe_merge(const char* p, size_t len) const {
  struct Candidate {
    int32_t rank, pos, left, right, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  int32_t n = static_cast<int32_t>(len);
  std::vector<int32_t> sym(n), next(n), prev(n);  // (n) ids and links; sym -1 once merged away
  for (int32_t k = 0; k < n; k++) {
    sym[k] = byte_id[static_cast<unsigned char>(p[k])];
    next[k] = k + 1 < n ? k + 1 : -1;
    prev[k] = k - 1;
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    auto it = merges.find(pair_key(sym[pos], sym[next[pos]]));
    if (it != merges.end()) heap.push({it->second.rank, pos, sym[pos], sym[next[pos]], it->second.result});
  };
  for (int32_t k = 0; k + 1 < n; k++) push(k);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    int32_t right = next[c.pos];
    if (sym[c.pos] != c.left || right < 0 || sym[right] != c.right) continue;  // stale
    sym[c.pos] = c.result;
    sym[right] = -1;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  std::vector<int32_t> out;
  for (int32_t k = 0; k >= 0 && k < n; k = next[k]) out.push_back(sym[k]);
  return out;
}

void BpeTokenizer::encode_word(const char* p, size_t len, std::vector<int32_t>& ids) const {
  std::string key(p, len);
  if (ignore_merges) {
    auto whole = vocab_ids.find(key);
    if (whole != vocab_ids.end()) {
      ids.push_back(whole->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> syms = bpe_merge(p, len);
  ids.insert(ids.end(), syms.begin(), syms.end());
  if (len > CACHE_MAX_WORD_BYTES) return;
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() >= CACHE_MAX_WORDS) cache.clear();
  cache.emplace(std::move(key), std::move(syms));
}

}  // namespace bpe
}  // namespace lora
