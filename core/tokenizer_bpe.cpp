// GPT-2 byte-level BPE (Radford et al., 2019; openai/gpt-2 src/encoder.py, as HF `tokenizers` runs it):
// also RoBERTa's. Text is split at added/special tokens, each piece is split into words by the GPT-2
// pattern (bpe_split_words), each word's UTF-8 bytes start as single-byte tokens and are merged by merge
// rank, lowest first. Token strings in the files spell bytes through GPT-2's byte-to-unicode table.
// Contract: ids equal HF `tokenizers`' for the same files; decode(encode(s)) == s for any byte string;
// encode is thread-safe (the word cache has a mutex); malformed files raise lora::Error naming file/line.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <queue>
#include <sys/stat.h>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/tokenizer.h"

namespace lora {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// UTF-8 and GPT-2's byte-to-unicode table

constexpr uint32_t CP_INVALID = 0xFFFFFFFFu;  // a byte that does not start a valid UTF-8 sequence

// The code point at s[pos], advancing pos. An invalid, overlong or truncated sequence yields CP_INVALID
// and advances one byte, so every byte string splits into units that concatenate back to itself.
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

// GPT-2's bytes_to_unicode: the printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF)
// stand for themselves; the other 68 bytes map to U+0100, U+0101, ... in byte order.
struct ByteMap {
  uint32_t byte_to_cp[256];
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
};

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

// ---------------------------------------------------------------------------------------------------
// The tokenizer

struct AddedToken {
  std::string content;
  int32_t id;
  bool lstrip = false;  // absorbs whitespace on its left (RoBERTa's <mask>)
  bool rstrip = false;  // absorbs whitespace on its right
};

struct Merge {
  int32_t rank;    // line order in merges.txt: lower merges first
  int32_t result;  // id of the concatenated token
};

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

class BpeTokenizer : public Tokenizer {
 public:
  std::vector<std::string> id_bytes;  // (V) the bytes each id decodes to
  std::vector<bool> id_present;       // (V) false for ids the files leave unused
  int32_t byte_id[256];               // id of each single-byte token
  std::unordered_map<uint64_t, Merge> merges;
  std::vector<AddedToken> added;      // matched in text before pre-tokenization
  bool add_prefix_space = false;      // tokenizer.json ByteLevel option: a space before each piece
  int32_t eos = -1;
  std::string hash_hex;

  std::vector<int32_t> encode(const std::string& text) const override {
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

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (int32_t id : ids) out += id_bytes[checked(id)];
    return out;
  }

  std::string token_text(int32_t id) const override {
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

  int32_t eos_id() const override { return eos; }
  int vocab_size() const override { return static_cast<int>(id_bytes.size()); }
  std::string fingerprint() const override { return hash_hex; }
  std::string kind() const override { return "gpt2-bpe"; }

 private:
  static constexpr size_t CACHE_MAX_WORDS = 1 << 16;    // cleared when full: bounded memory
  static constexpr size_t CACHE_MAX_WORD_BYTES = 256;    // longer words are rare: not cached
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  size_t checked(int32_t id) const {
    if (id < 0 || id >= vocab_size() || !id_present[id]) {
      fail_runtime("token id " + std::to_string(id) + " is not in the vocabulary (" +
                       std::to_string(vocab_size()) + " ids)",
                   "the ids were made with a different tokenizer; re-tokenize the data with this model's");
    }
    return static_cast<size_t>(id);
  }

  void encode_piece(const std::string& text, size_t begin, size_t end, std::vector<int32_t>& ids) const {
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
  std::vector<int32_t> bpe_merge(const char* p, size_t len) const {
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

  void encode_word(const char* p, size_t len, std::vector<int32_t>& ids) const {
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
};

// ---------------------------------------------------------------------------------------------------
// Loading

bool file_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// 1-based line of byte offset `at` in raw.
size_t line_of(const std::string& raw, size_t at) {
  at = std::min(at, raw.size());
  return 1 + static_cast<size_t>(std::count(raw.begin(), raw.begin() + at, '\n'));
}

json json_parse_file(const std::string& path, const std::string& raw, const std::string& hint) {
  try {
    return json::parse(raw);
  } catch (const json::parse_error& e) {
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line L, column C: ..."
    size_t at = what.find("] ");
    fail_runtime(path + ": not valid JSON: " + (at == std::string::npos ? what : what.substr(at + 2)), hint);
  }
}

void json_require_object(const json& doc, const std::string& path, const std::string& hint) {
  if (!doc.is_object()) {
    fail_runtime(path + ": expected a JSON object, found " + std::string(doc.type_name()), hint);
  }
}

bool added_has(const std::vector<AddedToken>& added, const std::string& content) {
  for (const AddedToken& a : added) {
    if (a.content == content) return true;
  }
  return false;
}

// " (line N)" where the key first appears in raw as a JSON object key, empty if it cannot be found.
std::string key_line(const std::string& raw, const std::string& key) {
  std::string quoted = json(key).dump();
  for (size_t at = raw.find(quoted); at != std::string::npos; at = raw.find(quoted, at + 1)) {
    size_t after = raw.find_first_not_of(" \t\r\n", at + quoted.size());
    if (after != std::string::npos && raw[after] == ':') {
      return " (line " + std::to_string(line_of(raw, at)) + ")";
    }
  }
  return "";
}

bool json_id_valid(const json& value, int64_t bound) {
  return value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() < bound;
}

// A token id from JSON: a non-negative integer below the bound that keeps tables small.
int32_t json_id(const json& value, const std::string& where, const std::string& hint, int64_t bound) {
  if (!json_id_valid(value, bound)) {
    fail_runtime(where + ": expected a token id (an integer in [0, " + std::to_string(bound) + ")), found " +
                     value.dump(),
                 hint);
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

struct MergeLine {
  std::string left, right;
  std::string where;  // "merges.txt line 12": for messages
};

struct BpeSources {
  std::map<std::string, int32_t> vocab;  // vocabulary string -> id
  std::vector<MergeLine> merges;         // in rank order
  std::vector<AddedToken> added;
  std::string eos_name;                  // from special_tokens_map.json, if it names one
  bool add_prefix_space = false;
};

const char* VOCAB_HINT =
    "a byte-level BPE vocabulary is one JSON object mapping each token string to its integer id "
    "(HF vocab.json or OpenAI encoder.json); re-download it from the model's release";

void vocab_read(const json& object, const std::string& path, const std::string& raw, BpeSources& src) {
  if (!object.is_object()) {
    fail_runtime(path + ": expected a JSON object mapping tokens to ids, found " +
                     std::string(object.type_name()),
                 VOCAB_HINT);
  }
  int64_t bound = 2 * static_cast<int64_t>(object.size()) + 1024;  // ids may leave a few holes, no more
  std::unordered_map<int32_t, std::string> seen;
  for (auto it = object.begin(); it != object.end(); ++it) {
    // The message names the line, found by a search of the text: only on the error path.
    auto where = [&] { return path + ": token " + json(it.key()).dump() + key_line(raw, it.key()); };
    if (!json_id_valid(it.value(), bound)) json_id(it.value(), where(), VOCAB_HINT, bound);
    int32_t id = static_cast<int32_t>(it.value().get<int64_t>());
    auto dup = seen.emplace(id, it.key());
    if (!dup.second) {
      fail_runtime(where() + ": id " + std::to_string(id) + " is already taken by token " +
                       json(dup.first->second).dump(),
                   "every token needs its own id; the file is corrupt or was edited by hand");
    }
    src.vocab[it.key()] = id;
  }
}

const char* MERGES_HINT =
    "merges.txt (OpenAI: vocab.bpe) holds an optional '#version' first line, then one merge a line: "
    "two tokens of vocab.json separated by one space, in merge order";

void merges_read(const std::string& path, const std::string& raw, BpeSources& src) {
  size_t line_no = 0;
  for (size_t pos = 0; pos < raw.size();) {
    size_t eol = raw.find('\n', pos);
    if (eol == std::string::npos) eol = raw.size();
    std::string line = raw.substr(pos, eol - pos);
    pos = eol + 1;
    line_no++;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      fail_runtime(path + " line " + std::to_string(line_no) +
                       ": expected two tokens separated by one space, found " + json(line).dump(),
                   MERGES_HINT);
    }
    src.merges.push_back({line.substr(0, space), line.substr(space + 1),
                          path + " line " + std::to_string(line_no)});
  }
}

// tokenizer.json: the model (when no vocab/merges files), its added tokens and pre-tokenizer options.
void tokenizer_json_read(const std::string& path, bool want_model, BpeSources& src) {
  std::string raw = tokenizer_file_read(path);
  const std::string hint = "tokenizer.json is HF `tokenizers`' format; re-save it with save_pretrained";
  json doc = json_parse_file(path, raw, hint);
  json_require_object(doc, path, hint);

  // Only the GPT-2 setup is implemented: no normalizer, a ByteLevel pre-tokenizer with the GPT-2 pattern.
  const json& norm = doc.contains("normalizer") ? doc["normalizer"] : json();
  const json& pre = doc.contains("pre_tokenizer") ? doc["pre_tokenizer"] : json();
  bool byte_level = pre.is_object() && pre.value("type", "") == "ByteLevel" && pre.value("use_regex", true);
  if (!norm.is_null() || !byte_level) {
    fail_usage(path + ": unsupported tokenizer: expected no normalizer and a ByteLevel pre-tokenizer (GPT-2, "
                   "RoBERTa), found normalizer " + norm.dump() + " and pre_tokenizer " + pre.dump(),
               "byte-level BPE models other than GPT-2's layout are not supported; for SentencePiece "
               "models provide tokenizer.model");
  }
  src.add_prefix_space = pre.value("add_prefix_space", false);

  if (want_model) {
    const json& model = doc.contains("model") ? doc["model"] : json();
    if (!model.is_object() || model.value("type", "BPE") != "BPE" || !model.contains("vocab") ||
        !model.contains("merges") || !model["merges"].is_array()) {
      fail_usage(path + ": expected model.type \"BPE\" with model.vocab and a model.merges list", hint);
    }
    vocab_read(model["vocab"], path + " model.vocab", raw, src);
    const json& merges = model["merges"];
    for (size_t k = 0; k < merges.size(); k++) {
      std::string where = path + " model.merges[" + std::to_string(k) + "]";
      const json& m = merges[k];
      if (m.is_string()) {
        std::string line = m.get<std::string>();
        size_t space = line.find(' ');
        if (space == std::string::npos || space == 0 || line.find(' ', space + 1) != std::string::npos ||
            space + 1 == line.size()) {
          fail_runtime(where + ": expected two tokens separated by one space, found " + m.dump(), hint);
        }
        src.merges.push_back({line.substr(0, space), line.substr(space + 1), where});
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        src.merges.push_back({m[0].get<std::string>(), m[1].get<std::string>(), where});
      } else {
        fail_runtime(where + ": expected \"a b\" or [\"a\", \"b\"], found " + m.dump(), hint);
      }
    }
  }

  if (doc.contains("added_tokens")) {
    const json& list = doc["added_tokens"];
    if (!list.is_array()) fail_runtime(path + ": added_tokens must be a list", hint);
    for (size_t k = 0; k < list.size(); k++) {
      const json& t = list[k];
      std::string where = path + " added_tokens[" + std::to_string(k) + "]";
      if (!t.is_object() || !t.contains("content") || !t["content"].is_string() || !t.contains("id") ||
          t["content"].get<std::string>().empty()) {
        fail_runtime(where + ": expected an object with a non-empty \"content\" and an \"id\", found " +
                         t.dump(),
                     hint);
      }
      AddedToken a;
      a.content = t["content"].get<std::string>();
      a.id = json_id(t["id"], where, hint, INT32_MAX);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      src.added.push_back(a);
    }
  }
}

// added_tokens.json ({"token": id}) and special_tokens_map.json (the names of special tokens).
void added_files_read(const std::string& dir, BpeSources& src) {
  std::string path = dir + "/added_tokens.json";
  if (file_exists(path)) {
    std::string raw = tokenizer_file_read(path);
    const std::string hint = "added_tokens.json maps each added token string to its integer id";
    json doc = json_parse_file(path, raw, hint);
    json_require_object(doc, path, hint);
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      if (it.key().empty()) fail_runtime(path + ": an added token is the empty string", hint);
      AddedToken a;
      a.content = it.key();
      if (!json_id_valid(it.value(), INT32_MAX)) {
        std::string where = path + ": token " + json(it.key()).dump() + key_line(raw, it.key());
        json_id(it.value(), where, hint, INT32_MAX);
      }
      a.id = static_cast<int32_t>(it.value().get<int64_t>());
      src.added.push_back(a);
    }
  }
  path = dir + "/special_tokens_map.json";
  if (!file_exists(path)) return;
  std::string raw = tokenizer_file_read(path);
  const std::string hint = "special_tokens_map.json maps names (eos_token, ...) to a token string or "
                           "{\"content\": ...}";
  json doc = json_parse_file(path, raw, hint);
  json_require_object(doc, path, hint);
  auto add_special = [&](const json& v, const std::string& name) {
    AddedToken a;
    if (v.is_string()) {
      a.content = v.get<std::string>();
    } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
      a.content = v["content"].get<std::string>();
      a.lstrip = v.value("lstrip", false);
      a.rstrip = v.value("rstrip", false);
    } else {
      fail_runtime(path + ": " + name + ": expected a token string or {\"content\": ...}, found " + v.dump(),
                   hint);
    }
    if (a.content.empty()) return;
    a.id = -1;  // resolved against the vocabulary and added tokens later
    src.added.push_back(a);
    if (name == "eos_token") src.eos_name = a.content;
  };
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.value().is_array()) {
      for (const json& v : it.value()) add_special(v, it.key());
    } else {
      add_special(it.value(), it.key());
    }
  }
}

}  // namespace

std::vector<std::pair<size_t, size_t>> bpe_split_words(const std::string& text) {
  std::vector<std::pair<size_t, size_t>> words;
  split_words_into(text, 0, text.size(), words);
  return words;
}

std::unique_ptr<Tokenizer> tokenizer_bpe_load(const std::string& dir, const std::string& vocab_path,
                                              const std::string& merges_path) {
  BpeSources src;
  std::string json_path = dir + "/tokenizer.json";
  bool from_json = vocab_path.empty();
  if (!from_json) {
    std::string raw = tokenizer_file_read(vocab_path);
    vocab_read(json_parse_file(vocab_path, raw, VOCAB_HINT), vocab_path, raw, src);
    merges_read(merges_path, tokenizer_file_read(merges_path), src);
  }
  if (from_json || file_exists(json_path)) tokenizer_json_read(json_path, from_json, src);
  added_files_read(dir, src);
  const std::string vocab_name = from_json ? json_path : vocab_path;

  // Default special tokens when no file lists them: GPT-2's end of text, RoBERTa's five.
  bool roberta = src.vocab.count("<s>") && src.vocab.count("</s>");
  const char* defaults[] = {"<|endoftext|>", "<s>", "</s>", "<pad>", "<unk>", "<mask>"};
  for (const char* name : defaults) {
    bool wanted = std::strcmp(name, "<|endoftext|>") == 0 || roberta;
    if (wanted && src.vocab.count(name)) {
      AddedToken a;
      a.content = name;
      a.id = src.vocab[name];
      a.lstrip = std::strcmp(name, "<mask>") == 0;  // as HF's RobertaTokenizer sets it
      src.added.push_back(a);
    }
  }

  auto tok = std::make_unique<BpeTokenizer>();
  tok->add_prefix_space = src.add_prefix_space;
  int32_t size = 0;
  for (auto& kv : src.vocab) size = std::max(size, kv.second + 1);

  // Added tokens: the first definition of a content wins (files above come first, defaults last).
  std::unordered_map<int32_t, const std::string*> vocab_by_id;
  for (auto& kv : src.vocab) vocab_by_id[kv.second] = &kv.first;
  std::vector<AddedToken> added;
  for (AddedToken& a : src.added) {
    auto in_vocab = src.vocab.find(a.content);
    auto taken = a.id >= 0 ? vocab_by_id.find(a.id) : vocab_by_id.end();
    if (taken != vocab_by_id.end() && *taken->second != a.content) {
      fail_runtime("added token " + json(a.content).dump() + " has id " + std::to_string(a.id) + ", which " +
                       vocab_name + " gives to " + json(*taken->second).dump(),
                   "the tokenizer files come from different models; use one model's files together");
    }
    if (a.id < 0) {
      if (added_has(added, a.content)) continue;
      if (in_vocab == src.vocab.end()) {
        fail_runtime(dir + "/special_tokens_map.json: special token " + json(a.content).dump() +
                         " is neither in " + vocab_name + " nor an added token",
                     "add it to added_tokens.json with its id, or remove it from special_tokens_map.json");
      }
      a.id = in_vocab->second;
    }
    if (in_vocab != src.vocab.end() && in_vocab->second != a.id) {
      fail_runtime("added token " + json(a.content).dump() + " has id " + std::to_string(a.id) + " but " +
                       vocab_name + " gives it id " + std::to_string(in_vocab->second),
                   "the tokenizer files come from different models; use one model's files together");
    }
    if (added_has(added, a.content)) continue;
    // Added ids follow the vocabulary closely; a far one is a corrupt file, not a table to allocate.
    int64_t bound = static_cast<int64_t>(src.vocab.size()) + static_cast<int64_t>(src.added.size()) + 1024;
    if (a.id >= bound) {
      fail_runtime("added token " + json(a.content).dump() + " has id " + std::to_string(a.id) +
                       ", far beyond the vocabulary of " + std::to_string(src.vocab.size()) + " tokens",
                   "check the ids in tokenizer.json / added_tokens.json");
    }
    for (const AddedToken& b : added) {
      if (b.id == a.id) {
        fail_runtime("added tokens " + json(b.content).dump() + " and " + json(a.content).dump() +
                         " both have id " + std::to_string(a.id),
                     "every token needs its own id; check tokenizer.json / added_tokens.json");
      }
    }
    added.push_back(a);
    size = std::max(size, a.id + 1);
  }

  tok->id_bytes.assign(size, std::string());
  tok->id_present.assign(size, false);
  uint64_t h = tokenizer_hash("gpt2-bpe\nvocab\n", TOKENIZER_HASH_SEED);
  for (int32_t id = 0; id < size; id++) {
    auto it = vocab_by_id.find(id);
    if (it == vocab_by_id.end()) continue;
    const std::string& name = *it->second;
    std::string bytes;
    // A string outside the byte table (possible only for added tokens) decodes to itself.
    tok->id_bytes[id] = vocab_string_to_bytes(name, bytes) ? bytes : name;
    tok->id_present[id] = true;
    h = tokenizer_hash(std::to_string(id) + "\t" + name + "\n", h);
  }
  h = tokenizer_hash("added\n", h);
  for (const AddedToken& a : added) {
    tok->id_bytes[a.id] = a.content;
    tok->id_present[a.id] = true;
    h = tokenizer_hash(std::to_string(a.id) + "\t" + a.content + "\t" + (a.lstrip ? "l" : "") +
                           (a.rstrip ? "r" : "") + "\n",
                       h);
  }
  tok->added = added;
  std::sort(tok->added.begin(), tok->added.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });

  const ByteMap& map = byte_map();
  for (int b = 0; b < 256; b++) {
    std::string name;
    utf8_append(name, map.byte_to_cp[b]);
    auto it = src.vocab.find(name);
    if (it == src.vocab.end()) {
      fail_runtime(vocab_name + ": the single-byte token " + json(name).dump() + " (byte " +
                       std::to_string(b) + ") is missing",
                   "a byte-level BPE vocabulary holds all 256 single-byte tokens; the file is truncated or "
                   "not a byte-level BPE vocabulary");
    }
    tok->byte_id[b] = it->second;
  }

  h = tokenizer_hash(std::string("merges\n") + (src.add_prefix_space ? "prefix-space\n" : ""), h);
  int32_t rank = 0;
  for (const MergeLine& m : src.merges) {
    auto left = src.vocab.find(m.left), right = src.vocab.find(m.right);
    auto result = src.vocab.find(m.left + m.right);
    const std::string* missing = left == src.vocab.end() ? &m.left
                                 : right == src.vocab.end() ? &m.right
                                 : nullptr;
    if (missing || result == src.vocab.end()) {
      std::string what = missing ? *missing : m.left + m.right;
      fail_runtime(m.where + ": token " + json(what).dump() + (missing ? "" : " (the merge's result)") +
                       " is not in " + vocab_name,
                   "merges and vocabulary must come from the same model release");
    }
    // A repeated merge keeps its first (lowest) rank.
    tok->merges.emplace(pair_key(left->second, right->second), Merge{rank++, result->second});
    h = tokenizer_hash(m.left + " " + m.right + "\n", h);
  }
  tok->hash_hex = tokenizer_hash_hex(h);

  std::string eos_name = src.eos_name;
  if (eos_name.empty()) eos_name = src.vocab.count("<|endoftext|>") ? "<|endoftext|>" : "</s>";
  for (const AddedToken& a : added) {
    if (a.content == eos_name) tok->eos = a.id;
  }
  if (tok->eos < 0 && src.vocab.count(eos_name)) tok->eos = src.vocab[eos_name];
  return tok;
}

}  // namespace lora
