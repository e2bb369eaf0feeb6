// GPT-2 byte-level BPE (Radford et al., 2019; openai/gpt-2 src/encoder.py, as HF `tokenizers` runs it):
// also RoBERTa's. Text is split at added/special tokens, each piece is split into words by the GPT-2
// pattern (bpe_split_words), each word's UTF-8 bytes start as single-byte tokens and are merged by merge
// rank, lowest first. Token strings in the files spell bytes through GPT-2's byte-to-unicode table.
// This file: the UTF-8 and byte tables, the pre-tokenizer and encode/decode. Reading the files and
// building the tables: core/tokenizer_bpe_load.cpp; what the two share: core/tokenizer_bpe.h.
// Contract: ids equal HF `tokenizers`' for the same files; decode(encode(s)) == s for any byte string;
// encode is thread-safe (the word cache has a mutex).
#include <cstdio>
#include <functional>
#include <mutex>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/tokenizer.h"
#include "core/tokenizer_bpe.h"

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

// ---------------------------------------------------------------------------------------------------
// The GPT-2 pre-tokenizer, by hand on code points. The pattern, tried in this order at each position:
//   's|'t|'re|'ve|'m|'ll|'d | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+

enum CharClass : uint8_t { CHAR_CLASS_LETTER, CHAR_CLASS_NUMBER, CHAR_CLASS_SPACE, CHAR_CLASS_SYMBOL };

CharClass char_class(uint32_t cp) {
  if (cp == CP_INVALID) return CHAR_CLASS_SYMBOL;
  if (unicode_is_letter(cp)) return CHAR_CLASS_LETTER;
  if (unicode_is_number(cp)) return CHAR_CLASS_NUMBER;
  if (unicode_is_space(cp)) return CHAR_CLASS_SPACE;
  return CHAR_CLASS_SYMBOL;
}

// Length in code points of the contraction at cps[i] ("'s" ... "'d"), 0 if none. Case-sensitive,
// as in the reference pattern: "'S" is not a contraction.
size_t contraction_len(const std::vector<uint32_t>& cps, size_t i) {
  size_t n = cps.size();
  if (cps[i] != '\'' || i + 1 >= n) return 0;
  uint32_t a = cps[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= n) return 0;
  uint32_t b = cps[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Appends the words of text[begin, end) as absolute byte ranges.
void split_words_into(const std::string& text, size_t begin, size_t end,
                      std::vector<std::pair<size_t, size_t>>& words) {
  std::vector<uint32_t> cps;
  std::vector<CharClass> cls;
  std::vector<size_t> offs;  // byte offset of each code point, plus end
  for (size_t pos = begin; pos < end;) {
    offs.push_back(pos);
    uint32_t cp = utf8_next(text.data(), end, pos);
    cps.push_back(cp);
    cls.push_back(char_class(cp));
  }
  offs.push_back(end);
  size_t n = cps.size();
  size_t i = 0;
  while (i < n) {
    size_t j = contraction_len(cps, i);
    if (j > 0) {
      j += i;
    } else {
      // " ?X+" for the three non-space classes: an optional leading U+0020, then a run of one class.
      size_t start = (cps[i] == ' ' && i + 1 < n && cls[i + 1] != CHAR_CLASS_SPACE) ? i + 1 : i;
      CharClass c = cls[start];
      if (c != CHAR_CLASS_SPACE) {
        j = start;
        while (j < n && cls[j] == c) j++;
      } else {
        // A whitespace run: "\s+(?!\S)" keeps its last character for the next word when a non-space
        // follows and the run is longer than one; otherwise "\s+" takes it all.
        size_t k = i;
        while (k < n && cls[k] == CHAR_CLASS_SPACE) k++;
        j = (k < n && k - i >= 2) ? k - 1 : k;
      }
    }
    words.emplace_back(offs[i], offs[j]);
    i = j;
  }
}

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

size_t space_len_at(const std::string& text, size_t pos) {
  size_t next = pos;
  uint32_t cp = utf8_next(text.data(), text.size(), next);
  return (cp != CP_INVALID && unicode_is_space(cp)) ? next - pos : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// The tokenizer: encode and decode

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    // The leftmost added token, the longest one where several start at the same byte.
    const AddedToken* hit = nullptr;
    size_t hit_at = std::string::npos;
    for (const AddedToken& t : added) {
      size_t at = text.find(t.content, pos);
      bool longer = at == hit_at && at != std::string::npos && t.content.size() > hit->content.size();
      if (at < hit_at || longer) {
        hit = &t;
        hit_at = at;
      }
    }
    if (!hit) {
      encode_piece(text, pos, text.size(), ids);
      break;
    }
    size_t piece_end = hit_at;
    size_t next = hit_at + hit->content.size();
    if (hit->lstrip) {
      while (size_t len = space_len_before(text, pos, piece_end)) piece_end -= len;
    }
    if (hit->rstrip) {
      while (next < text.size()) {
        size_t len = space_len_at(text, next);
        if (len == 0) break;
        next += len;
      }
    }
    encode_piece(text, pos, piece_end, ids);
    ids.push_back(hit->id);
    pos = next;
  }
  return ids;
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
    split_words_into(spaced, 0, spaced.size(), words);
    for (auto& w : words) encode_word(spaced.data() + w.first, w.second - w.first, ids);
    return;
  }
  split_words_into(text, begin, end, words);
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

std::vector<std::pair<size_t, size_t>> bpe_split_words(const std::string& text) {
  std::vector<std::pair<size_t, size_t>> words;
  bpe::split_words_into(text, 0, text.size(), words);
  return words;
}

}  // namespace lora
