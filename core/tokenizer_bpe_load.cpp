// Loading the GPT-2 byte-level BPE tokenizer (core/tokenizer_bpe.cpp runs it): reads vocab.json +
// merges.txt (HF), encoder.json + vocab.bpe (OpenAI) or tokenizer.json, then the added and special tokens
// of tokenizer.json, added_tokens.json and special_tokens_map.json, checks that they agree and builds the
// BpeTokenizer tables and fingerprint. Contract: malformed or mismatched files raise lora::Error naming
// the file (and line where one can be found) with a hint on how to fix them.
#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <sys/stat.h>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/tokenizer.h"
#include "core/tokenizer_bpe.h"

namespace lora {
using namespace bpe;  // AddedToken, BpeTokenizer and the byte table of core/tokenizer_bpe.h
namespace {

using json = nlohmann::json;

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
