// Loading the byte-level BPE tokenizer (core/text/tokenizer_bpe.cpp runs it): reads vocab.json + merges.txt
// (HF), encoder.json + vocab.bpe (OpenAI) or tokenizer.json, then tokenizer.json's layout (normalizer,
// pre-tokenizer, model options, post-processor) and the added and special tokens of tokenizer.json,
// added_tokens.json, special_tokens_map.json and tokenizer_config.json, checks that they agree and builds
// the BpeTokenizer tables and fingerprint. The layouts read, anything else refused with a message:
//   GPT-2, RoBERTa  no normalizer; ByteLevel with its own regex
//   Qwen2           NFC; Sequence[Split(Qwen2's pattern, Isolated), ByteLevel(use_regex false)]
//   LLaMA 3         no normalizer; the same with \p{N}{1,3}; model.ignore_merges; a TemplateProcessing
//                   post-processor "<|begin_of_text|> $A" (in a Sequence after ByteLevel)
// (NFC with the other patterns, or none with Qwen2's, is read too.) The BOS is the post-processor's.
// Contract: malformed, mismatched or unsupported files raise lora::Error naming the file (and line or
// part where one can be found) with a hint on how to fix them.
#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <sys/stat.h>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/text/tokenizer.h"
#include "core/text/tokenizer_bpe.h"

namespace lora {
using namespace bpe;  // AddedToken, BpeTokenizer and the byte table of core/text/tokenizer_bpe.h
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
  } catch (const json::exception& e) {  // out_of_range.406: a number such as 1e999
    std::string what = e.what();
    size_t at = what.find("] ");
    fail_runtime(path + ": cannot be read as JSON: " + (at == std::string::npos ? what : what.substr(at + 2)), hint);
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
  std::string quoted = json_quote(key);
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
  std::string eos_name;                  // from special_tokens_map.json, else tokenizer_config.json
  bool add_prefix_space = false;
  bool nfc = false;
  BpeSplit split = BPE_SPLIT_GPT2;
  bool ignore_merges = false;
  std::string bos_name;                  // the post-processor's token before every text; empty: none
  int32_t bos_id = -1;                   // its id, as the post-processor gives it
  std::string bos_where;                 // the file and part that name it: for messages
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
    auto where = [&] { return path + ": token " + json_quote(it.key()) + key_line(raw, it.key()); };
    if (!json_id_valid(it.value(), bound)) json_id(it.value(), where(), VOCAB_HINT, bound);
    int32_t id = static_cast<int32_t>(it.value().get<int64_t>());
    auto dup = seen.emplace(id, it.key());
    if (!dup.second) {
      fail_runtime(where() + ": id " + std::to_string(id) + " is already taken by token " +
                       json_quote(dup.first->second),
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
                       ": expected two tokens separated by one space, found " + json_quote(line),
                   MERGES_HINT);
    }
    src.merges.push_back({line.substr(0, space), line.substr(space + 1),
                          path + " line " + std::to_string(line_no)});
  }
}

// ---------------------------------------------------------------------------------------------------
// tokenizer.json's layout

// The split patterns, exactly as transformers' Qwen2Tokenizer (models/qwen2/tokenization_qwen2.py) and
// Meta's LLaMA 3 tokenizer.json write them; core/text/tokenizer_bpe_split.cpp matches them by hand.
const char* QWEN2_PATTERN =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* LLAMA3_PATTERN =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* LAYOUT_HINT =
    "lora reads byte-level BPE tokenizers in GPT-2's, RoBERTa's, Qwen2's and LLaMA 3's layouts, as their "
    "releases ship them; for SentencePiece models provide tokenizer.model";

// A JSON value for a message, cut to a readable length.
std::string brief(const json& j) {
  std::string s = j.dump();
  return s.size() <= 300 ? s : s.substr(0, 300) + "...";
}

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : "";
}

// An optional boolean option; anything but true, false or null is an error.
bool bool_of(const json& j, const char* key, bool fallback, const std::string& where) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) {
    fail_runtime(where + ": " + key + " must be true or false, found " + brief(j[key]), LAYOUT_HINT);
  }
  return j[key].get<bool>();
}

void normalizer_read(const json& norm, const std::string& where, BpeSources& src) {
  if (norm.is_null()) return;
  if (type_of(norm) == "NFC") {
    src.nfc = true;
    return;
  }
  fail_usage(where + ": unsupported normalizer " + brief(norm) +
                 ": lora supports none (GPT-2, RoBERTa, LLaMA 3) or {\"type\": \"NFC\"} (Qwen2)",
             LAYOUT_HINT);
}

void pre_tokenizer_read(const json& pre, const std::string& where, BpeSources& src) {
  if (type_of(pre) == "ByteLevel" && bool_of(pre, "use_regex", true, where)) {  // GPT-2's own regex
    src.add_prefix_space = bool_of(pre, "add_prefix_space", false, where);
    return;
  }
  const json& list = type_of(pre) == "Sequence" && pre.contains("pretokenizers") ? pre["pretokenizers"] : json();
  if (list.is_array() && list.size() == 2 && type_of(list[0]) == "Split" && type_of(list[1]) == "ByteLevel" &&
      !bool_of(list[1], "use_regex", true, where)) {
    const json& split = list[0];
    const json& pattern = split.contains("pattern") ? split["pattern"] : json();
    std::string regex = pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()
                            ? pattern["Regex"].get<std::string>()
                            : "";
    if (regex == QWEN2_PATTERN) {
      src.split = BPE_SPLIT_QWEN2;
    } else if (regex == LLAMA3_PATTERN) {
      src.split = BPE_SPLIT_LLAMA3;
    } else {
      fail_usage(where + ": unsupported Split pattern " + brief(pattern) +
                     ": lora matches exactly two, Qwen2's {\"Regex\": " + json_quote(QWEN2_PATTERN) +
                     "} and LLaMA 3's, the same with \\p{N}{1,3} in place of \\p{N}",
                 LAYOUT_HINT);
    }
    if (!split.contains("behavior") || split["behavior"] != "Isolated" || bool_of(split, "invert", false, where)) {
      fail_usage(where + ": the Split must have \"behavior\": \"Isolated\" and \"invert\": false, found " +
                     brief(split),
                 LAYOUT_HINT);
    }
    if (bool_of(list[1], "add_prefix_space", false, where)) {
      fail_usage(where + ": ByteLevel after Split with \"add_prefix_space\": true (a space before every word) "
                     "is not supported; Qwen2's and LLaMA 3's releases have false",
                 LAYOUT_HINT);
    }
    return;
  }
  fail_usage(where + ": unsupported pre_tokenizer " + brief(pre) +
                 ": lora supports ByteLevel with its own regex (GPT-2, RoBERTa) and Sequence[Split(Qwen2's or "
                 "LLaMA 3's pattern, Isolated), ByteLevel(use_regex false)] (Qwen2, LLaMA 3)",
             LAYOUT_HINT);
}

// The post-processor: only the token it puts before a single text matters (a BOS); ByteLevel changes
// offsets, not ids, and RoBERTa's <s> A </s> is laid out by the GLUE template itself.
void post_processor_read(const json& post, const std::string& where, BpeSources& src) {
  std::string type = type_of(post);
  if (post.is_null() || type == "ByteLevel" || type == "RobertaProcessing") return;
  if (type == "Sequence" && post.contains("processors") && post["processors"].is_array()) {
    for (size_t k = 0; k < post["processors"].size(); k++) {
      post_processor_read(post["processors"][k], where + ".processors[" + std::to_string(k) + "]", src);
    }
    return;
  }
  const std::string supported =
      ": lora supports none, ByteLevel, RobertaProcessing, and TemplateProcessing whose single template is "
      "$A or one special token then $A (LLaMA 3's \"<|begin_of_text|> $A\"), alone or in a Sequence";
  if (type != "TemplateProcessing") {
    fail_usage(where + ": unsupported post_processor " + brief(post) + supported, LAYOUT_HINT);
  }
  const json& single = post.contains("single") ? post["single"] : json();
  auto is_text = [](const json& piece) {
    return piece.is_object() && piece.contains("Sequence") && piece["Sequence"].is_object() &&
           piece["Sequence"].contains("id") && piece["Sequence"]["id"] == "A";
  };
  if (single.is_array() && single.size() == 1 && is_text(single[0])) return;
  bool bos_first = single.is_array() && single.size() == 2 && is_text(single[1]) && single[0].is_object() &&
                   single[0].contains("SpecialToken") && single[0]["SpecialToken"].is_object() &&
                   single[0]["SpecialToken"].contains("id") && single[0]["SpecialToken"]["id"].is_string();
  if (!bos_first) {
    fail_usage(where + ": unsupported TemplateProcessing, single template " + brief(single) + supported,
               LAYOUT_HINT);
  }
  if (!src.bos_name.empty()) {
    fail_usage(where + ": a second TemplateProcessing puts another token before the text" + supported,
               LAYOUT_HINT);
  }
  std::string name = single[0]["SpecialToken"]["id"].get<std::string>();
  std::string entry_where = where + " special_tokens[" + json_quote(name) + "]";
  const json& specials = post.contains("special_tokens") ? post["special_tokens"] : json();
  const json& entry = specials.is_object() && specials.contains(name) ? specials[name] : json();
  const json& ids = entry.is_object() && entry.contains("ids") ? entry["ids"] : json();
  if (!ids.is_array() || ids.size() != 1) {
    fail_runtime(entry_where + ": expected {\"ids\": [one id], ...} for the token before the text, found " +
                     brief(entry),
                 "tokenizer.json is HF `tokenizers`' format; re-save it with save_pretrained");
  }
  src.bos_name = name;
  src.bos_id = json_id(ids[0], entry_where + ".ids[0]", LAYOUT_HINT, INT32_MAX);
  src.bos_where = entry_where;
}

// tokenizer.json: the model (when no vocab/merges files), its added tokens and its layout.
void tokenizer_json_read(const std::string& path, bool want_model, BpeSources& src) {
  std::string raw = tokenizer_file_read(path);
  const std::string hint = "tokenizer.json is HF `tokenizers`' format; re-save it with save_pretrained";
  json doc = json_parse_file(path, raw, hint);
  json_require_object(doc, path, hint);

  normalizer_read(doc.contains("normalizer") ? doc["normalizer"] : json(), path + " normalizer", src);
  pre_tokenizer_read(doc.contains("pre_tokenizer") ? doc["pre_tokenizer"] : json(), path + " pre_tokenizer", src);
  post_processor_read(doc.contains("post_processor") ? doc["post_processor"] : json(), path + " post_processor",
                      src);
  const json& model = doc.contains("model") ? doc["model"] : json();
  src.ignore_merges = bool_of(model, "ignore_merges", false, path + " model");

  if (want_model) {
    if (!model.is_object() || (model.contains("type") && model["type"] != "BPE") || !model.contains("vocab") ||
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
      a.lstrip = bool_of(t, "lstrip", false, where);
      a.rstrip = bool_of(t, "rstrip", false, where);
      a.normalized = bool_of(t, "normalized", false, where);
      src.added.push_back(a);
    }
  }
}

// A special token named in special_tokens_map.json or tokenizer_config.json: a string or {"content": ...};
// false for null. Its id is resolved against the vocabulary and added tokens later.
bool special_token_read(const json& v, const std::string& where, const std::string& hint, AddedToken& a) {
  if (v.is_null()) return false;
  if (v.is_string()) {
    a.content = v.get<std::string>();
  } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    a.content = v["content"].get<std::string>();
    a.lstrip = bool_of(v, "lstrip", false, where);
    a.rstrip = bool_of(v, "rstrip", false, where);
  } else {
    fail_runtime(where + ": expected a token string or {\"content\": ...}, found " + v.dump(), hint);
  }
  a.id = -1;
  return !a.content.empty();
}

// tokenizer_config.json (transformers): its bos_token and eos_token are special tokens (transformers adds
// them where tokenizer.json lacks them), and eos_token is the end of text where special_tokens_map.json
// names none. Its add_bos_token is not read: transformers 5 takes the BOS from tokenizer.json's
// post_processor alone (checked: 5.23 gives the same ids with add_bos_token true, false or absent).
void tokenizer_config_read(const std::string& dir, BpeSources& src) {
  std::string path = dir + "/tokenizer_config.json";
  if (!file_exists(path)) return;
  std::string raw = tokenizer_file_read(path);
  const std::string hint = "tokenizer_config.json is transformers' tokenizer settings; re-save it with "
                           "save_pretrained";
  json doc = json_parse_file(path, raw, hint);
  json_require_object(doc, path, hint);
  AddedToken eos;
  if (doc.contains("eos_token") && special_token_read(doc["eos_token"], path + ": eos_token", hint, eos)) {
    src.added.push_back(eos);
    if (src.eos_name.empty()) src.eos_name = eos.content;
  }
  AddedToken bos;
  if (doc.contains("bos_token") && special_token_read(doc["bos_token"], path + ": bos_token", hint, bos)) {
    src.added.push_back(bos);
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
        std::string where = path + ": token " + json_quote(it.key()) + key_line(raw, it.key());
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
    if (!special_token_read(v, path + ": " + name, hint, a)) return;
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
  tokenizer_config_read(dir, src);
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
  tok->nfc = src.nfc;
  tok->split = src.split;
  tok->ignore_merges = src.ignore_merges;
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
      fail_runtime("added token " + json_quote(a.content) + " has id " + std::to_string(a.id) + ", which " +
                       vocab_name + " gives to " + json_quote(*taken->second),
                   "the tokenizer files come from different models; use one model's files together");
    }
    if (a.id < 0) {
      if (added_has(added, a.content)) continue;
      if (in_vocab == src.vocab.end()) {
        fail_runtime(dir + "/special_tokens_map.json or tokenizer_config.json: special token " +
                         json_quote(a.content) + " is neither in " + vocab_name + " nor an added token",
                     "add it to added_tokens.json with its id, or remove it from the file that names it");
      }
      a.id = in_vocab->second;
    }
    if (in_vocab != src.vocab.end() && in_vocab->second != a.id) {
      fail_runtime("added token " + json_quote(a.content) + " has id " + std::to_string(a.id) + " but " +
                       vocab_name + " gives it id " + std::to_string(in_vocab->second),
                   "the tokenizer files come from different models; use one model's files together");
    }
    if (added_has(added, a.content)) continue;
    // Added ids follow the vocabulary closely; a far one is a corrupt file, not a table to allocate.
    int64_t bound = static_cast<int64_t>(src.vocab.size()) + static_cast<int64_t>(src.added.size()) + 1024;
    if (a.id >= bound) {
      fail_runtime("added token " + json_quote(a.content) + " has id " + std::to_string(a.id) +
                       ", far beyond the vocabulary of " + std::to_string(src.vocab.size()) + " tokens",
                   "check the ids in tokenizer.json / added_tokens.json");
    }
    for (const AddedToken& b : added) {
      if (b.id == a.id) {
        fail_runtime("added tokens " + json_quote(b.content) + " and " + json_quote(a.content) +
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
  for (AddedToken& a : added) {
    tok->id_bytes[a.id] = a.content;
    tok->id_present[a.id] = true;
    // Tokens matched in normalized text are looked for in their normalized form (tokenizers'
    // AddedVocabulary normalizes them too). Without a normalizer the flag only orders the two passes.
    a.match = a.normalized && src.nfc ? unicode_nfc(a.content) : a.content;
    h = tokenizer_hash(std::to_string(a.id) + "\t" + a.content + "\t" + (a.lstrip ? "l" : "") +
                           (a.rstrip ? "r" : "") + (a.normalized && src.nfc ? "n" : "") + "\n",
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
      fail_runtime(vocab_name + ": the single-byte token " + json_quote(name) + " (byte " +
                       std::to_string(b) + ") is missing",
                   "a byte-level BPE vocabulary holds all 256 single-byte tokens; the file is truncated or "
                   "not a byte-level BPE vocabulary");
    }
    tok->byte_id[b] = it->second;
  }

  // The layout's options; GPT-2's defaults add nothing, so its fingerprint is the one it always had.
  std::string options = "merges\n";
  if (src.add_prefix_space) options += "prefix-space\n";
  if (src.split != BPE_SPLIT_GPT2) options += src.split == BPE_SPLIT_QWEN2 ? "split qwen2\n" : "split llama3\n";
  if (src.nfc) options += "nfc\n";
  if (src.ignore_merges) options += "ignore-merges\n";
  h = tokenizer_hash(options, h);
  int32_t rank = 0;
  for (const MergeLine& m : src.merges) {
    auto left = src.vocab.find(m.left), right = src.vocab.find(m.right);
    auto result = src.vocab.find(m.left + m.right);
    const std::string* missing = left == src.vocab.end() ? &m.left
                                 : right == src.vocab.end() ? &m.right
                                 : nullptr;
    if (missing || result == src.vocab.end()) {
      std::string what = missing ? *missing : m.left + m.right;
      fail_runtime(m.where + ": token " + json_quote(what) + (missing ? "" : " (the merge's result)") +
                       " is not in " + vocab_name,
                   "merges and vocabulary must come from the same model release");
    }
    // A repeated merge keeps its first (lowest) rank.
    tok->merges.emplace(pair_key(left->second, right->second), Merge{rank++, result->second});
    h = tokenizer_hash(m.left + " " + m.right + "\n", h);
  }
  if (src.ignore_merges) {
    for (auto& kv : src.vocab) {
      std::string bytes;
      if (vocab_string_to_bytes(kv.first, bytes)) tok->vocab_ids.emplace(bytes, kv.second);
    }
  }

  if (!src.bos_name.empty()) {
    int32_t id = src.bos_id;
    if (id >= size || !tok->id_present[id]) {
      fail_runtime(src.bos_where + ": the token before every text, " + json_quote(src.bos_name) + " (id " +
                       std::to_string(id) + "), is neither in " + vocab_name + " nor an added token",
                   "the tokenizer files come from different models; use one model's files together");
    }
    tok->bos = id;
    h = tokenizer_hash("bos " + std::to_string(id) + "\n", h);
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
