// The glue dataset format (see dataset.h): sentence classification and regression records from JSONL or
// TSV, tokenized as RoBERTa's tokenizer does it (HF RobertaTokenizer.build_inputs_with_special_tokens):
//   one text:  <s> A </s>              two texts:  <s> A </s></s> B </s>
// Records. JSONL: one object a line, the text fields strings, the label a number or a string. TSV: a
// header row naming the columns (GLUE's own train.tsv / dev.tsv), or, for files without one (CoLA),
// fields given as 0-based column numbers; fields are split at tabs, no quoting (GLUE's files are written
// so). Field names left empty are detected from the first record with GLUE's names:
//   texts  sentence1+sentence2 (MRPC's JSONL, RTE, STS-B, WNLI, MNLI's TSV), question1+question2 (QQP),
//          premise+hypothesis (MNLI's JSONL), question+sentence (QNLI), #1 String+#2 String (MRPC's TSV),
//          sentence (SST-2, CoLA's JSONL), text
//   label  label, gold_label (MNLI's TSV), is_duplicate (QQP's TSV), score (STS-B's TSV), Quality (MRPC's TSV)
// String labels map to their index in label_names; without label_names, numeric strings are numbers and
// GLUE's NLI names map as its datasets number them: entailment 0, neutral 1, contradiction 2 (MNLI), or
// entailment 0, not_entailment 1 (QNLI, RTE) when "not_entailment" occurs in the file.
// Truncation to max_length (specials included) is HF's longest_first: a token at a time from the end of
// the longer text (the second on a tie). Every record needs a label; errors name the file and line.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/data/dataset.h"

namespace lora {

namespace {

struct Record {
  int64_t line = 0;
  std::vector<std::string> texts;  // one or two
  std::string label_text;          // as written (a number's text for JSON numbers)
  bool label_is_number = false;
  double label_number = NAN;
};

bool blank(const std::string& s) { return s.find_first_not_of(" \t") == std::string::npos; }

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return out;
    start = tab + 1;
  }
}

[[noreturn]] void fail_at(const std::string& path, int64_t line, const std::string& what, const std::string& hint) {
  fail_runtime(path + ":" + std::to_string(line) + ": " + what, hint);
}

const std::vector<std::vector<std::string>>& text_candidates() {
  static const std::vector<std::vector<std::string>> c = {
      {"sentence1", "sentence2"}, {"question1", "question2"}, {"premise", "hypothesis"}, {"question", "sentence"},
      {"#1 String", "#2 String"}, {"sentence"},               {"text"}};
  return c;
}
const std::vector<std::string>& label_candidates() {
  static const std::vector<std::string> c = {"label", "gold_label", "is_duplicate", "score", "Quality"};
  return c;
}

// The fields to read, given the names a record (or the TSV header) has.
void fields_resolve(const std::vector<std::string>& names, const DatasetOptions& o, const std::string& path,
                    int64_t line, std::vector<std::string>& texts, std::string& label) {
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  std::string listed;
  for (const auto& n : names) listed += (listed.empty() ? "" : ", ") + n;
  texts = o.text_fields;
  if (texts.empty()) {
    for (const auto& cand : text_candidates())
      if (std::all_of(cand.begin(), cand.end(), has)) {
        texts = cand;
        break;
      }
    if (texts.empty())
      fail_at(path, line, "none of GLUE's text fields (sentence1/sentence2, question1/question2, premise/hypothesis, "
                          "question/sentence, sentence, text) is among the fields: " + listed,
              "name the text fields with data.text_fields, e.g. [sentence1, sentence2]");
  }
  if (texts.size() > 2)
    fail_usage("data.text_fields lists " + std::to_string(texts.size()) + " fields; a record has one or two texts",
               "name one field (a sentence) or two (a pair)");
  label = o.label_field;
  if (label.empty()) {
    for (const auto& cand : label_candidates())
      if (has(cand)) {
        label = cand;
        break;
      }
    if (label.empty())
      fail_at(path, line, "no label field (label, gold_label, is_duplicate, score, Quality) among the fields: " + listed,
              "name it with data.label_field; GLUE's test files have no labels and cannot be trained or evaluated on");
  }
  for (const auto& f : texts)
    if (!has(f)) fail_at(path, line, "text field '" + f + "' is not among the fields: " + listed, "check data.text_fields");
  if (!has(label)) fail_at(path, line, "label field '" + label + "' is not among the fields: " + listed, "check data.label_field");
}

std::vector<Record> parse_jsonl(const std::string& path, const std::vector<std::string>& lines, const DatasetOptions& o) {
  const std::string hint = R"(glue JSONL lines read {"sentence1": "...", "sentence2": "...", "label": 1})";
  std::vector<Record> out;
  std::vector<std::string> texts;
  std::string label;
  for (size_t i = 0; i < lines.size(); ++i) {
    const int64_t line_no = int64_t(i) + 1;
    if (blank(lines[i])) continue;
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      fail_at(path, line_no, std::string("invalid JSON: ") + e.what(), hint);
    }
    if (!obj.is_object()) fail_at(path, line_no, std::string("expected a JSON object, found ") + obj.type_name(), hint);
    if (out.empty()) {
      std::vector<std::string> names;
      for (auto it = obj.begin(); it != obj.end(); ++it) names.push_back(it.key());
      fields_resolve(names, o, path, line_no, texts, label);
    }
    Record r;
    r.line = line_no;
    for (const auto& f : texts) {
      auto it = obj.find(f);
      if (it == obj.end()) fail_at(path, line_no, "field \"" + f + "\" is missing", hint);
      if (!it->is_string()) fail_at(path, line_no, "field \"" + f + "\" must be a string, found " + it->type_name(), hint);
      r.texts.push_back(it->get<std::string>());
    }
    auto it = obj.find(label);
    if (it == obj.end() || it->is_null())
      fail_at(path, line_no, "label field \"" + label + "\" is missing",
              "every record needs a label (GLUE's test files have none and cannot be trained or evaluated on)");
    if (it->is_number()) {
      r.label_is_number = true;
      r.label_number = it->get<double>();
      r.label_text = it->dump();
    } else if (it->is_string()) {
      r.label_text = it->get<std::string>();
    } else {
      fail_at(path, line_no, "label field \"" + label + "\" must be a number or a string, found " + it->type_name(), hint);
    }
    out.push_back(std::move(r));
  }
  return out;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::vector<Record> parse_tsv(const std::string& path, const std::vector<std::string>& lines, const DatasetOptions& o) {
  // Header-less files (CoLA) name their fields by column number.
  bool numbered = !o.text_fields.empty() && !o.label_field.empty() && all_digits(o.label_field) &&
                  std::all_of(o.text_fields.begin(), o.text_fields.end(), all_digits);
  std::vector<Record> out;
  std::vector<std::string> header, texts;
  std::string label;
  std::vector<size_t> text_cols;
  size_t label_col = 0, ncols = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const int64_t line_no = int64_t(i) + 1;
    if (blank(lines[i])) continue;
    std::vector<std::string> cells = split_tabs(lines[i]);
    if (ncols == 0) {  // the first record fixes the columns
      ncols = cells.size();
      if (numbered) {
        for (const auto& f : o.text_fields) text_cols.push_back(size_t(std::atoll(f.c_str())));
        label_col = size_t(std::atoll(o.label_field.c_str()));
        for (size_t c : text_cols)
          if (c >= ncols) fail_at(path, line_no, "column " + std::to_string(c) + " does not exist (" + std::to_string(ncols) + " columns)", "check data.text_fields");
        if (label_col >= ncols) fail_at(path, line_no, "column " + std::to_string(label_col) + " does not exist (" + std::to_string(ncols) + " columns)", "check data.label_field");
      } else {
        header = cells;
        fields_resolve(header, o, path, line_no, texts, label);
        for (const auto& f : texts) text_cols.push_back(size_t(std::find(header.begin(), header.end(), f) - header.begin()));
        label_col = size_t(std::find(header.begin(), header.end(), label) - header.begin());
        continue;
      }
    }
    if (cells.size() != ncols)
      fail_at(path, line_no, "has " + std::to_string(cells.size()) + " tab-separated fields, the first row has " +
                                 std::to_string(ncols),
              "a tab inside a text breaks a TSV row; fix the row or convert the file to JSONL");
    Record r;
    r.line = line_no;
    for (size_t c : text_cols) r.texts.push_back(cells[c]);
    r.label_text = cells[label_col];
    if (r.label_text.empty())
      fail_at(path, line_no, "the label is empty", "every record needs a label (GLUE's test files have none)");
    out.push_back(std::move(r));
  }
  return out;
}

// Each record's label as a number: JSON numbers as they are, numeric strings parsed, other strings by
// label_names (or GLUE's NLI names).
std::vector<float> labels_resolve(const std::string& path, const std::vector<Record>& records, const DatasetOptions& o) {
  std::vector<std::string> names = o.label_names;
  if (names.empty()) {
    bool binary_nli = false;
    for (const Record& r : records) binary_nli |= r.label_text == "not_entailment";
    names = binary_nli ? std::vector<std::string>{"entailment", "not_entailment"}
                       : std::vector<std::string>{"entailment", "neutral", "contradiction"};
  }
  std::vector<float> out;
  for (const Record& r : records) {
    if (r.label_is_number) {
      out.push_back(float(r.label_number));
      continue;
    }
    auto it = std::find(names.begin(), names.end(), r.label_text);
    if (it != names.end()) {
      out.push_back(float(it - names.begin()));
      continue;
    }
    char* end = nullptr;
    const double v = std::strtod(r.label_text.c_str(), &end);
    if (end && *end == '\0' && !r.label_text.empty() && std::isfinite(v)) {
      out.push_back(float(v));
      continue;
    }
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    fail_at(path, r.line, "label '" + r.label_text + "' is neither a number nor one of the label names (" + known + ")",
            "list the task's labels in order with data.label_names, e.g. [entailment, neutral, contradiction]");
  }
  return out;
}

int32_t special_id(const Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids = tok.encode(text);
  if (ids.size() != 1)
    fail_usage("the tokenizer (" + tok.kind() + ") has no special token " + text + ", which RoBERTa's sentence "
               "template <s> A </s></s> B </s> needs",
               "use the model's own tokenizer (vocab.json + merges.txt with <s> and </s>)");
  return ids[0];
}

}  // namespace

DatasetTables dataset_tokenize_glue(const std::string& source_path, const std::string& bytes, const Tokenizer& tok,
                                    int max_length, const DatasetOptions& options, int64_t* n_truncated) {
  std::string ext = source_path.size() >= 4 ? source_path.substr(source_path.size() - 4) : "";
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  std::vector<std::string> lines = text_lines(bytes);
  std::vector<Record> records = ext == ".tsv" ? parse_tsv(source_path, lines, options) : parse_jsonl(source_path, lines, options);
  if (records.empty())
    fail_runtime("dataset source '" + source_path + "' has no records", "check that data.train / data.eval point at the right file");
  std::vector<float> labels = labels_resolve(source_path, records, options);
  const int32_t bos = special_id(tok, "<s>"), eos = special_id(tok, "</s>");
  const bool pair = records[0].texts.size() == 2;
  const int64_t specials = pair ? 4 : 2;
  if (max_length < specials + 2)
    fail_usage("data.max_length " + std::to_string(max_length) + " leaves no room for text after the " +
                   std::to_string(specials) + " special tokens",
               "GLUE recipes use 512 (RoBERTa's maximum) or 128");
  DatasetTables t;
  t.offsets.push_back(0);
  int64_t truncated = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    std::vector<int32_t> a, b;
    try {
      a = tok.encode(r.texts[0]);
      if (pair) b = tok.encode(r.texts[1]);
    } catch (const Error& e) {
      throw Error(e.code(), source_path + ":" + std::to_string(r.line) + ": " + e.what(), e.hint());
    }
    const int64_t budget = max_length - specials;
    if (int64_t(a.size() + b.size()) > budget) {
      ++truncated;
      while (int64_t(a.size() + b.size()) > budget) (a.size() > b.size() ? a : b).pop_back();
    }
    std::vector<int32_t> ids;
    ids.push_back(bos);
    ids.insert(ids.end(), a.begin(), a.end());
    ids.push_back(eos);
    if (pair) {
      ids.push_back(eos);
      ids.insert(ids.end(), b.begin(), b.end());
      ids.push_back(eos);
    }
    t.tokens.insert(t.tokens.end(), ids.begin(), ids.end());
    t.offsets.push_back(int64_t(t.tokens.size()));
    t.prompt_lengths.push_back(0);
    t.labels.push_back(labels[i]);
    t.source_lines.push_back(r.line);
    t.prompt_texts.push_back(r.texts[0]);
    t.completion_texts.push_back(pair ? r.texts[1] : std::string());
  }
  if (n_truncated) *n_truncated = truncated;
  return t;
}

}  // namespace lora
