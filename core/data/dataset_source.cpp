// Dataset sources: reads an E2E or JSONL file, checks every line, and tokenizes it into DatasetTables
// with the fixed templates described in dataset.h. Errors name the file and the 1-based line.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/strings.h"
#include "core/data/dataset.h"

namespace lora {

namespace {

const char* E2E_TEMPLATE = "e2e-v1: [bos] encode(mr) [eos] | encode(' ' + text) [eos]";
const char* JSONL_TEMPLATE = "jsonl-v1: [bos] encode(prompt) | encode(completion) [eos]; [bos] encode(text) [eos]";
const char* GLUE_TEMPLATE = "glue-v1: <s> encode(a) </s> [</s> encode(b) </s>], longest_first truncation";

// One line of a source, before tokenization.
struct SourceExample {
  int64_t line = 0;
  std::string prompt;      // no loss
  std::string completion;  // loss; gets " " in front for E2E
  float label = NAN;
};

std::string read_source(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec))
    fail_runtime("dataset source '" + path + "' does not exist",
                 "check data.train / data.eval: a path in the recipe is relative to the recipe file, a path given "
                 "with --set to the working directory");
  if (fs::is_directory(path, ec))
    fail_runtime("dataset source '" + path + "' is a directory, expected a .txt (E2E) or .jsonl file",
                 "point data.train / data.eval at the file itself");
  // A FIFO or device would block (nothing writes it) or give other bytes on the second read: the source
  // is read more than once (its hash for the cache, then its examples).
  if (!fs::is_regular_file(path, ec)) {
    const fs::file_type t = fs::status(path, ec).type();
    const char* kind = t == fs::file_type::fifo ? "a FIFO" : t == fs::file_type::socket ? "a socket"
                       : t == fs::file_type::character || t == fs::file_type::block ? "a device" : "not a regular file";
    fail_runtime("dataset source '" + path + "' is " + kind + ", expected a regular file",
                 "the data is read more than once: write it to a file first (cat " + path + " > data.jsonl)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_runtime("cannot open dataset source '" + path + "'", "check the file's permissions");
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) fail_runtime("error reading dataset source '" + path + "'", "check the file and the disk");
  return os.str();
}

// Whitespace trimmed from E2E lines and fields: C's isspace set (form feed and vertical tab too).
const char* const kSpace = " \t\r\n\f\v";

[[noreturn]] void fail_line(const std::string& path, int64_t line, const std::string& what,
                            const std::string& hint) {
  fail_runtime(path + ":" + std::to_string(line) + ": " + what, hint);
}

// The 0-based offset of the first byte of line that is not part of a well-formed UTF-8 sequence (overlong
// forms, surrogates and code points past U+10FFFF count as ill-formed, as JSON parsers count them), or npos.
size_t utf8_invalid_at(const std::string& line) {
  const auto* s = reinterpret_cast<const unsigned char*>(line.data());
  const size_t n = line.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = s[i];
    if (c < 0x80) { ++i; continue; }
    const size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || i + len > n) return i;
    uint32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return i;
    i += len;
  }
  return std::string::npos;
}

std::vector<SourceExample> parse_e2e(const std::string& path, const std::vector<std::string>& lines) {
  const std::string hint = "E2E lines read `meaning representation||reference text`, e.g. "
                           "`name : Alimentum | area : city centre||Alimentum is in the city centre .`";
  std::vector<SourceExample> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    int64_t line_no = int64_t(i) + 1;
    // UTF-8, as the JSON parser checks every JSONL line.
    if (size_t at = utf8_invalid_at(lines[i]); at != std::string::npos) {
      char byte[8];
      std::snprintf(byte, sizeof byte, "0x%02X", unsigned(static_cast<unsigned char>(lines[i][at])));
      fail_line(path, line_no, "not valid UTF-8: byte " + std::string(byte) + " at column " + std::to_string(at + 1),
                "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 " + path + " > utf8.txt");
    }
    std::string line = trim(lines[i], kSpace);
    if (line.empty()) continue;
    size_t sep = line.find("||");
    if (sep == std::string::npos)
      fail_line(path, line_no, "expected `meaning representation||reference text`, found no \"||\"", hint);
    if (line.find("||", sep + 2) != std::string::npos)
      fail_line(path, line_no, "expected one \"||\", found more than one", hint);
    SourceExample ex;
    ex.line = line_no;
    ex.prompt = trim(line.substr(0, sep), kSpace);
    ex.completion = trim(line.substr(sep + 2), kSpace);
    if (ex.prompt.empty()) fail_line(path, line_no, "the meaning representation before \"||\" is empty", hint);
    if (ex.completion.empty()) fail_line(path, line_no, "the reference text after \"||\" is empty", hint);
    out.push_back(std::move(ex));
  }
  return out;
}

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1, " prefix.
std::string json_error_text(std::string what) {
  size_t bracket = what.find("] ");
  if (what.rfind("[json.exception.", 0) == 0 && bracket != std::string::npos) what = what.substr(bracket + 2);
  const std::string line_one = "parse error at line 1, ";
  if (what.rfind(line_one, 0) == 0) what = what.substr(line_one.size());
  return what;
}

const char* json_type_name(const nlohmann::json& j) { return j.type_name(); }

std::string json_string_field(const std::string& path, int64_t line_no, const nlohmann::json& obj,
                              const char* key, const std::string& hint) {
  const nlohmann::json& v = obj.at(key);
  if (!v.is_string())
    fail_line(path, line_no, std::string("field \"") + key + "\" must be a string, found " + json_type_name(v), hint);
  return v.get<std::string>();
}

std::vector<SourceExample> parse_jsonl(const std::string& path, const std::vector<std::string>& lines) {
  const std::string hint = R"(JSONL lines read {"prompt": "...", "completion": "..."} or {"text": "..."})";
  std::vector<SourceExample> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    int64_t line_no = int64_t(i) + 1;
    if (trim(lines[i], kSpace).empty()) continue;
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      fail_line(path, line_no, "invalid JSON: " + json_error_text(e.what()), hint);
    }
    if (!obj.is_object())
      fail_line(path, line_no, std::string("expected a JSON object, found ") + json_type_name(obj), hint);
    SourceExample ex;
    ex.line = line_no;
    bool has_text = obj.contains("text"), has_prompt = obj.contains("prompt"),
         has_completion = obj.contains("completion");
    if (has_text && (has_prompt || has_completion))
      fail_line(path, line_no, "found both \"text\" and \"prompt\"/\"completion\"; expected one form", hint);
    if (has_text) {
      ex.completion = json_string_field(path, line_no, obj, "text", hint);
      if (ex.completion.empty()) fail_line(path, line_no, "field \"text\" is empty", hint);
    } else if (has_prompt || has_completion) {
      if (!has_prompt) fail_line(path, line_no, "field \"completion\" has no \"prompt\" beside it", hint);
      if (!has_completion) fail_line(path, line_no, "field \"prompt\" has no \"completion\" beside it", hint);
      ex.prompt = json_string_field(path, line_no, obj, "prompt", hint);
      ex.completion = json_string_field(path, line_no, obj, "completion", hint);
      if (ex.completion.empty()) fail_line(path, line_no, "field \"completion\" is empty", hint);
    } else {
      fail_line(path, line_no, "expected a \"text\" or \"prompt\" + \"completion\" field, found neither", hint);
    }
    if (obj.contains("label")) {
      const nlohmann::json& v = obj.at("label");
      if (!v.is_number())
        fail_line(path, line_no, std::string("field \"label\" must be a number, found ") + json_type_name(v), hint);
      ex.label = v.get<float>();
    }
    out.push_back(std::move(ex));
  }
  return out;
}

std::vector<int32_t> encode_at(const Tokenizer& tok, const std::string& text, const std::string& path,
                               int64_t line_no) {
  try {
    return tok.encode(text);
  } catch (const Error& e) {
    throw Error(e.code(), path + ":" + std::to_string(line_no) + ": " + e.what(), e.hint());
  }
}

}  // namespace

std::vector<int32_t> dataset_prompt_ids(const std::string& format, const std::string& prompt, const Tokenizer& tok) {
  if (format != "e2e" && format != "jsonl")
    throw std::logic_error("dataset_prompt_ids: format must be e2e or jsonl, not '" + format + "'");
  std::vector<int32_t> ids;
  if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());  // as HF's tokenizer(prompt) begins; no loss
  if (format == "e2e" || !prompt.empty()) {
    const std::vector<int32_t> p = tok.encode(prompt);
    ids.insert(ids.end(), p.begin(), p.end());
  }
  if (format == "e2e") ids.push_back(tok.eos_id());
  return ids;
}

std::string hash_fnv1a64_hex(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis and prime (Fowler, Noll, Vo)
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string dataset_template_name(const std::string& format, const DatasetOptions& o) {
  if (format == "glue") {
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
      return s.empty() ? std::string("auto") : s;
    };
    return std::string(GLUE_TEMPLATE) + "; text_fields " + join(o.text_fields) + "; label_field " +
           (o.label_field.empty() ? "auto" : o.label_field) + "; label_names " + join(o.label_names);
  }
  return format == "e2e" ? E2E_TEMPLATE : JSONL_TEMPLATE;
}

std::string dataset_source_hash(const std::string& source_path) {
  return "fnv1a64:" + hash_fnv1a64_hex(read_source(source_path));
}

// A JSONL source whose first record is a classification record: a label or GLUE's text fields, and
// none of the generation fields.
static bool jsonl_is_glue(const std::string& source_path) {
  for (const std::string& line : text_lines(read_source(source_path))) {
    if (trim(line, kSpace).empty()) continue;
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      return false;  // the jsonl parser reports the line
    }
    if (!obj.is_object() || obj.contains("prompt") || obj.contains("completion") || obj.contains("text")) return false;
    for (const char* key : {"label", "sentence", "sentence1", "question", "question1", "premise"})
      if (obj.contains(key)) return true;
    return false;
  }
  return false;
}

std::string dataset_format_resolve(const std::string& source_path, const std::string& format) {
  if (format == "e2e" || format == "jsonl" || format == "glue") return format;
  if (format != "auto")
    fail_usage("unknown dataset format '" + format + "' for '" + source_path + "'",
               "data.format is one of: auto, e2e, jsonl, glue");
  std::string ext = std::filesystem::path(source_path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (ext == ".jsonl" || ext == ".json") return jsonl_is_glue(source_path) ? "glue" : "jsonl";
  if (ext == ".txt") return "e2e";
  if (ext == ".tsv") return "glue";
  for (const std::string& line : text_lines(read_source(source_path))) {
    std::string t = trim(line, kSpace);
    if (t.empty()) continue;
    if (t[0] == '{') return jsonl_is_glue(source_path) ? "glue" : "jsonl";
    if (t.find("||") != std::string::npos) return "e2e";
    break;
  }
  fail_usage("cannot tell the format of dataset source '" + source_path +
                 "' from its name or its first line (neither a JSON object nor `mr||text`)",
             "set data.format to e2e, jsonl or glue");
}

DatasetTables dataset_tokenize(const std::string& source_path, const std::string& format,
                               const Tokenizer& tok, int max_length, DatasetInfo* info, const DatasetOptions& options) {
  if (max_length < 2)
    fail_usage("data.max_length must be at least 2, found " + std::to_string(max_length),
               "a typical value is 512 for E2E");
  if (tok.eos_id() < 0 || tok.eos_id() >= tok.vocab_size())
    fail_usage("the tokenizer (" + tok.kind() + ") has no end-of-text token, and datasets append one to every "
               "completion and pad with it",
               "use a tokenizer whose vocabulary defines an end-of-text token (e.g. <|endoftext|> or </s>)");
  std::string fmt = dataset_format_resolve(source_path, format);
  std::string bytes = read_source(source_path);
  if (fmt == "glue") {
    int64_t n_truncated = 0;
    DatasetTables t = dataset_tokenize_glue(source_path, bytes, tok, max_length, options, &n_truncated);
    if (info) {
      info->path.clear();
      info->format = fmt;
      info->template_name = dataset_template_name(fmt, options);
      info->source_path = source_path;
      info->source_hash = "fnv1a64:" + hash_fnv1a64_hex(bytes);
      info->tokenizer_fingerprint = tok.fingerprint();
      info->vocab_size = tok.vocab_size();
      info->eos_id = tok.eos_id();
      info->max_length = max_length;
      info->n_truncated = n_truncated;
      info->n_dropped = 0;
      info->n_examples = int64_t(t.prompt_lengths.size());
      info->n_tokens = int64_t(t.tokens.size());
    }
    return t;
  }
  std::vector<std::string> lines = text_lines(bytes);
  std::vector<SourceExample> examples = fmt == "e2e" ? parse_e2e(source_path, lines) : parse_jsonl(source_path, lines);
  if (examples.empty())
    fail_runtime("dataset source '" + source_path + "' has no examples (" + std::to_string(lines.size()) +
                     " lines, all blank)",
                 "check that data.train / data.eval point at the right file");

  const int32_t eos = tok.eos_id();
  DatasetTables t;
  t.offsets.push_back(0);
  int64_t n_truncated = 0, n_dropped = 0, first_dropped_line = 0;
  for (const SourceExample& ex : examples) {
    std::vector<int32_t> ids;
    try {
      ids = dataset_prompt_ids(fmt, ex.prompt, tok);
    } catch (const Error& e) {
      throw Error(e.code(), source_path + ":" + std::to_string(ex.line) + ": " + e.what(), e.hint());
    }
    int64_t prompt_length = int64_t(ids.size());
    std::vector<int32_t> completion =
        encode_at(tok, fmt == "e2e" ? " " + ex.completion : ex.completion, source_path, ex.line);
    ids.insert(ids.end(), completion.begin(), completion.end());
    ids.push_back(eos);
    if (prompt_length >= max_length) {
      if (!n_dropped++) first_dropped_line = ex.line;
      continue;
    }
    if (int64_t(ids.size()) > max_length) {
      ids.resize(size_t(max_length));
      ++n_truncated;
    }
    t.tokens.insert(t.tokens.end(), ids.begin(), ids.end());
    t.offsets.push_back(int64_t(t.tokens.size()));
    t.prompt_lengths.push_back(int32_t(prompt_length));
    t.labels.push_back(ex.label);
    t.source_lines.push_back(ex.line);
    t.prompt_texts.push_back(ex.prompt);
    t.completion_texts.push_back(ex.completion);
  }
  if (t.prompt_lengths.empty())
    fail_usage("every example of '" + source_path + "' was dropped: each prompt alone has max_length (" +
                   std::to_string(max_length) + ") tokens or more (first at line " +
                   std::to_string(first_dropped_line) + ")",
               "raise data.max_length or shorten the prompts");

  if (info) {
    info->path.clear();
    info->format = fmt;
    info->template_name = dataset_template_name(fmt);
    info->source_path = source_path;
    info->source_hash = "fnv1a64:" + hash_fnv1a64_hex(bytes);
    info->tokenizer_fingerprint = tok.fingerprint();
    info->vocab_size = tok.vocab_size();
    info->eos_id = eos;
    info->max_length = max_length;
    info->n_truncated = n_truncated;
    info->n_dropped = n_dropped;
    info->n_examples = int64_t(t.prompt_lengths.size());
    info->n_tokens = int64_t(t.tokens.size());
  }
  return t;
}

}  // namespace lora
