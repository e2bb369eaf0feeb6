// The glue dataset format (core/dataset_glue.cpp): RoBERTa's <s> A </s></s> B </s> layout, GLUE field
// detection in JSONL and TSV, header-less TSV by column numbers, string labels (label_names and GLUE's
// NLI names), longest_first truncation, format detection, the cache key and line-numbered errors. A
// byte tokenizer with <s> and </s> as single ids keeps the expected ids readable.
#include <doctest/doctest.h>

#include <cmath>

#include "core/dataset.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {

constexpr int32_t BOS = 257, EOS = 258;  // <s>, </s>; bytes are their own ids

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    if (text == "<s>") return {BOS};
    if (text == "</s>") return {EOS};
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s += id < 256 ? std::string(1, char(id)) : "";
    return s;
  }
  std::string token_text(int32_t id) const override { return decode({id}); }
  int32_t eos_id() const override { return EOS; }
  int vocab_size() const override { return 259; }
  std::string fingerprint() const override { return "bytes-roberta-v1"; }
  std::string kind() const override { return "bytes"; }
};

std::vector<int32_t> ids_of(const DatasetTables& t, size_t i) {
  return std::vector<int32_t>(t.tokens.begin() + t.offsets[i], t.tokens.begin() + t.offsets[i + 1]);
}

std::vector<int32_t> bytes(const std::string& s) { return ByteTokenizer().encode(s); }

std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

DatasetTables tokenize(const fs::path& p, int max_length = 64, const DatasetOptions& o = {}) {
  DatasetInfo info;
  return dataset_tokenize(p.string(), "auto", ByteTokenizer(), max_length, &info, o);
}

}  // namespace

TEST_CASE("glue jsonl: pairs as <s> A </s></s> B </s>, single sentences as <s> A </s>, labels kept") {
  const std::string dir = temp_dir();
  write_text(fs::path(dir) / "pairs.jsonl", R"({"sentence1": "ab", "sentence2": "c", "label": 1, "idx": 0})" "\n\n"
                                            R"({"sentence1": "d", "sentence2": "ef", "label": 0, "idx": 1})" "\n");
  CHECK(dataset_format_resolve(dir + "/pairs.jsonl", "auto") == "glue");
  DatasetInfo info;
  DatasetTables t = dataset_tokenize(dir + "/pairs.jsonl", "auto", ByteTokenizer(), 64, &info);
  CHECK(info.format == "glue");
  REQUIRE(t.prompt_lengths.size() == 2);
  CHECK(ids_of(t, 0) == cat({{BOS}, bytes("ab"), {EOS, EOS}, bytes("c"), {EOS}}));
  CHECK(ids_of(t, 1) == cat({{BOS}, bytes("d"), {EOS, EOS}, bytes("ef"), {EOS}}));
  CHECK(t.labels == std::vector<float>{1, 0});
  CHECK(t.source_lines == std::vector<int64_t>{1, 3});
  CHECK(t.prompt_lengths == std::vector<int32_t>{0, 0});

  write_text(fs::path(dir) / "sst2.jsonl", R"({"sentence": "good film", "label": 1})" "\n");
  DatasetTables s = tokenize(fs::path(dir) / "sst2.jsonl");
  CHECK(ids_of(s, 0) == cat({{BOS}, bytes("good film"), {EOS}}));
  // A generation JSONL stays jsonl.
  write_text(fs::path(dir) / "gen.jsonl", R"({"prompt": "a", "completion": "b", "label": 1})" "\n");
  CHECK(dataset_format_resolve(dir + "/gen.jsonl", "auto") == "jsonl");
}

TEST_CASE("glue: fields by GLUE's names (QNLI, QQP, MNLI) or as configured; NLI string labels") {
  const std::string dir = temp_dir();
  write_text(fs::path(dir) / "qnli.jsonl", R"({"question": "q?", "sentence": "s.", "label": "not_entailment"})" "\n"
                                           R"({"question": "r?", "sentence": "t.", "label": "entailment"})" "\n");
  DatasetTables q = tokenize(fs::path(dir) / "qnli.jsonl");
  CHECK(ids_of(q, 0) == cat({{BOS}, bytes("q?"), {EOS, EOS}, bytes("s."), {EOS}}));
  CHECK(q.labels == std::vector<float>{1, 0});  // entailment 0, not_entailment 1
  write_text(fs::path(dir) / "mnli.jsonl", R"({"premise": "p", "hypothesis": "h", "label": "contradiction"})" "\n"
                                           R"({"premise": "p", "hypothesis": "h", "label": "neutral"})" "\n");
  CHECK(tokenize(fs::path(dir) / "mnli.jsonl").labels == std::vector<float>{2, 1});
  DatasetOptions o;
  o.text_fields = {"hypothesis"};
  o.label_names = {"contradiction", "neutral", "entailment"};
  DatasetTables m = tokenize(fs::path(dir) / "mnli.jsonl", 64, o);
  CHECK(ids_of(m, 0) == cat({{BOS}, bytes("h"), {EOS}}));
  CHECK(m.labels == std::vector<float>{0, 1});
  // STS-B scores are floats.
  write_text(fs::path(dir) / "stsb.jsonl", R"({"sentence1": "a", "sentence2": "b", "label": 3.8})" "\n");
  CHECK(tokenize(fs::path(dir) / "stsb.jsonl").labels[0] == doctest::Approx(3.8f));
}

TEST_CASE("glue tsv: columns by the header row (MRPC, STS-B) or by number without one (CoLA)") {
  const std::string dir = temp_dir();
  write_text(fs::path(dir) / "mrpc.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t11\t12\tab\tcd\n0\t13\t14\te\tf\n");
  DatasetTables m = tokenize(fs::path(dir) / "mrpc.tsv");
  CHECK(ids_of(m, 1) == cat({{BOS}, bytes("e"), {EOS, EOS}, bytes("f"), {EOS}}));
  CHECK(m.labels == std::vector<float>{1, 0});
  CHECK(m.source_lines == std::vector<int64_t>{2, 3});
  write_text(fs::path(dir) / "stsb.tsv", "index\tsentence1\tsentence2\tscore\n0\tx\ty\t4.250\n");
  CHECK(tokenize(fs::path(dir) / "stsb.tsv").labels[0] == doctest::Approx(4.25f));
  write_text(fs::path(dir) / "cola.tsv", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tThe rode sailors.\n");
  DatasetOptions o;
  o.text_fields = {"3"};
  o.label_field = "1";
  DatasetTables c = tokenize(fs::path(dir) / "cola.tsv", 64, o);
  CHECK(ids_of(c, 0) == cat({{BOS}, bytes("The sailors rode."), {EOS}}));
  CHECK(c.labels == std::vector<float>{1, 0});
  // A row with another number of fields names its line.
  write_text(fs::path(dir) / "ragged.tsv", "sentence\tlabel\nfine\t1\nbroken\ttab\t0\n");
  CHECK(contains(error_of([&] { tokenize(fs::path(dir) / "ragged.tsv"); }).what(), "ragged.tsv:3: has 3"));
}

TEST_CASE("glue: longest_first truncation keeps the specials and cuts the longer text first") {
  const std::string dir = temp_dir();
  write_text(fs::path(dir) / "long.jsonl", R"({"sentence1": "abcdefgh", "sentence2": "xyz", "label": 0})" "\n");
  DatasetInfo info;
  DatasetTables t = dataset_tokenize(dir + "/long.jsonl", "glue", ByteTokenizer(), 12, &info);
  // Budget 12 - 4 specials = 8: the longer a loses its last 3 tokens (8 + 3 -> 5 + 3).
  CHECK(ids_of(t, 0) == cat({{BOS}, bytes("abcde"), {EOS, EOS}, bytes("xyz"), {EOS}}));
  CHECK(info.n_truncated == 1);
  DatasetTables u = dataset_tokenize(dir + "/long.jsonl", "glue", ByteTokenizer(), 8, &info);
  CHECK(ids_of(u, 0) == cat({{BOS}, bytes("ab"), {EOS, EOS}, bytes("xy"), {EOS}}));  // a tie cuts b
  CHECK(contains(error_of([&] { dataset_tokenize(dir + "/long.jsonl", "glue", ByteTokenizer(), 5, &info); }).what(),
                 "no room"));
}

TEST_CASE("glue: errors name the file and the line; the template records the fields for the cache") {
  const std::string dir = temp_dir();
  write_text(fs::path(dir) / "nolabel.jsonl", R"({"sentence": "a", "label": 1})" "\n" R"({"sentence": "b"})" "\n");
  CHECK(contains(error_of([&] { tokenize(fs::path(dir) / "nolabel.jsonl"); }).what(), "nolabel.jsonl:2: label field"));
  write_text(fs::path(dir) / "odd.jsonl", R"({"sentence": "a", "label": "maybe"})" "\n");
  Error e = error_of([&] { tokenize(fs::path(dir) / "odd.jsonl"); });
  CHECK(contains(e.what(), "odd.jsonl:1: label 'maybe'"));
  CHECK(contains(e.hint(), "data.label_names"));
  write_text(fs::path(dir) / "fields.jsonl", R"({"body": "a", "label": 1})" "\n");
  CHECK(contains(error_of([&] { dataset_tokenize(dir + "/fields.jsonl", "glue", ByteTokenizer(), 64, nullptr); }).what(),
                 "fields.jsonl:1: none of GLUE's text fields"));
  DatasetOptions o;
  o.text_fields = {"body"};
  CHECK(dataset_template_name("glue", o) != dataset_template_name("glue"));
  // The cache rebuilds a file made with other fields.
  write_text(fs::path(dir) / "two.jsonl", R"({"sentence1": "a", "sentence2": "b", "label": 1})" "\n");
  DatasetPrepareResult p1 = dataset_prepare(dir + "/two.jsonl", "auto", ByteTokenizer(), 64, dir + "/cache");
  DatasetOptions one;
  one.text_fields = {"sentence2"};
  DatasetPrepareResult p2 = dataset_prepare(dir + "/two.jsonl", "auto", ByteTokenizer(), 64, dir + "/cache", one);
  CHECK(!p2.reused);
  CHECK(contains(p2.stale_reason, "template"));
  Dataset d = Dataset::open(p2.path, 259);
  CHECK(d.length(0) == 3);
  CHECK(d.label(0) == 1.0f);
  Batch b = batch_build(d, {0});
  CHECK(b.labels.f32()[0] == 1.0f);
  (void)p1;
}

}  // namespace
