// Datasets: source parsing and templates, line-numbered errors, truncation, the HDF5 cache (reuse,
// invalidation, corrupt files, out-of-vocabulary ids), and batch streams (coverage, padding, targets,
// determinism, resume). A fake tokenizer (one token per byte, EOS = 256, optionally a BOS) keeps these
// tests independent of the real tokenizers; one test checks the BOS rule on the LLaMA 3 and Qwen2
// fixture tokenizers against HF's ids.
#include <doctest/doctest.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/data/dataset.h"
#include "core/base/error.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {

class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(std::string fingerprint = "bytes-v1", int32_t eos = 256, int32_t bos = -1)
      : fingerprint_(std::move(fingerprint)), eos_(eos), bos_(bos) {}
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id < 256) s += char(id);
    return s;
  }
  std::string token_text(int32_t id) const override { return decode({id}); }
  int32_t eos_id() const override { return eos_; }
  int32_t bos_id() const override { return bos_; }
  int vocab_size() const override { return 257; }
  std::string fingerprint() const override { return fingerprint_; }
  std::string kind() const override { return "bytes"; }

 private:
  std::string fingerprint_;
  int32_t eos_, bos_;
};

const int32_t EOS = 256;

// A scratch directory for this process, removed at exit.
struct ScratchDir {
  fs::path path;
  ScratchDir() : path(fs::temp_directory_path() / ("lora_test_dataset_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

fs::path test_dir() {
  static ScratchDir dir;
  return dir.path;
}

std::string write_file(const std::string& name, const std::string& text) {
  fs::path p = test_dir() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

// The message and hint of the lora::Error f throws, or "<no error>".
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return std::string(e.what()) + " | hint: " + e.hint();
  }
  return "<no error>";
}

std::vector<int32_t> ids_of(const std::string& s) { return ByteTokenizer().encode(s); }

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int32_t> span_vec(TokenSpan s) { return std::vector<int32_t>(s.begin(), s.end()); }

// n examples with lengths 2..(2 + n % 13), prompt length 1, for stream tests.
std::shared_ptr<const Dataset> synthetic_dataset(int n) {
  DatasetTables t;
  t.offsets.push_back(0);
  for (int i = 0; i < n; ++i) {
    int len = 2 + (i * 7) % 13;
    for (int k = 0; k < len; ++k) t.tokens.push_back((i + k) % 200);
    t.offsets.push_back(int64_t(t.tokens.size()));
    t.prompt_lengths.push_back(1);
    t.labels.push_back(NAN);
    t.source_lines.push_back(i + 1);
    t.prompt_texts.push_back("p" + std::to_string(i));
    t.completion_texts.push_back("c");
  }
  DatasetInfo info;
  info.eos_id = EOS;
  return std::make_shared<const Dataset>(Dataset::from_tables(std::move(t), info, 257));
}

std::vector<Batch> take(BatchStream& s, int count) {
  std::vector<Batch> out;
  for (int i = 0; i < count; ++i) {
    Batch b;
    REQUIRE(s.next(b));
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace

TEST_CASE("e2e: prompt = mr + eos, completion = ' ' + text + eos, blank lines skipped") {
  std::string path = write_file("small.txt",
                                "name : A | food : B||A serves B . \n"
                                "\n"
                                "  name : C||C is nice .\r\n");
  DatasetInfo info;
  DatasetTables t = dataset_tokenize(path, "auto", ByteTokenizer(), 512, &info);
  CHECK(info.format == "e2e");
  REQUIRE(t.prompt_lengths.size() == 2);
  Dataset d = Dataset::from_tables(t, info, 257);
  CHECK(span_vec(d.tokens(0)) == concat(concat(ids_of("name : A | food : B"), {EOS}), concat(ids_of(" A serves B ."), {EOS})));
  CHECK(d.prompt_length(0) == int32_t(std::string("name : A | food : B").size()) + 1);
  CHECK(d.prompt_text(0) == "name : A | food : B");
  CHECK(d.completion_text(0) == "A serves B .");
  CHECK(d.source_line(0) == 1);
  CHECK(d.source_line(1) == 3);
  CHECK(d.prompt_text(1) == "name : C");
  CHECK(span_vec(d.tokens(1)).back() == EOS);
  CHECK(std::isnan(d.label(0)));
  CHECK(info.source_hash.rfind("fnv1a64:", 0) == 0);
  CHECK(info.n_truncated == 0);
}

TEST_CASE("jsonl: prompt/completion carries no loss on the prompt, text carries loss everywhere") {
  std::string path = write_file("small.jsonl",
                                "{\"prompt\": \"Q: hi\", \"completion\": \" A: yo\"}\n"
                                "\n"
                                "{\"text\": \"abc\", \"label\": 2, \"id\": 7}\n");
  DatasetInfo info;
  DatasetTables tables = dataset_tokenize(path, "auto", ByteTokenizer(), 512, &info);
  Dataset d = Dataset::from_tables(std::move(tables), info, 257);
  CHECK(info.format == "jsonl");
  REQUIRE(d.size() == 2);
  CHECK(span_vec(d.tokens(0)) == concat(ids_of("Q: hi A: yo"), {EOS}));
  CHECK(d.prompt_length(0) == 5);
  CHECK(d.prompt_length(1) == 0);
  CHECK(span_vec(d.tokens(1)) == std::vector<int32_t>{'a', 'b', 'c', EOS});
  CHECK(d.label(1) == 2.0f);
  CHECK(d.source_line(1) == 3);

  Batch b = batch_build(d, {0, 1});
  CHECK(b.B == 2);
  CHECK(b.T == 12);  // "Q: hi A: yo" + eos
  const int32_t* tok = b.tokens.i32();
  const int32_t* tgt = b.targets.i32();
  // Example 0: positions 0..3 predict prompt tokens (no loss); position 4 predicts ' ' (first completion token).
  for (int t = 0; t < 4; ++t) CHECK(tgt[t] == DATASET_IGNORE_INDEX);
  CHECK(tgt[4] == ' ');
  CHECK(tgt[10] == EOS);
  CHECK(tgt[11] == DATASET_IGNORE_INDEX);
  // Example 1: every next token is a target; padded with eos and ignored past its length.
  CHECK(tgt[12 + 0] == 'b');
  CHECK(tgt[12 + 1] == 'c');
  CHECK(tgt[12 + 2] == EOS);
  for (int t = 3; t < 12; ++t) CHECK(tgt[12 + t] == DATASET_IGNORE_INDEX);
  for (int t = 4; t < 12; ++t) CHECK(tok[12 + t] == EOS);
  CHECK(b.lengths.i32()[0] == 12);
  CHECK(b.lengths.i32()[1] == 4);
  CHECK(b.n_loss_tokens == 7 + 3);
}

TEST_CASE("a tokenizer's BOS begins every e2e and jsonl example and belongs to the prompt") {
  const int32_t BOS = 255;  // a byte id stands in for LLaMA 3's <|begin_of_text|>
  ByteTokenizer tok("bytes-bos", EOS, BOS);
  std::string e2e = write_file("bos.txt", "name : A||A is good . \n");
  DatasetInfo info;
  Dataset d = Dataset::from_tables(dataset_tokenize(e2e, "auto", tok, 512, &info), info, 257);
  CHECK(span_vec(d.tokens(0)) == concat(concat(concat({BOS}, ids_of("name : A")), {EOS}), concat(ids_of(" A is good ."), {EOS})));
  CHECK(d.prompt_length(0) == 1 + 8 + 1);
  CHECK(info.template_name.find("[bos]") != std::string::npos);

  std::string jsonl = write_file("bos.jsonl", "{\"prompt\": \"Q\", \"completion\": \" A\"}\n{\"text\": \"ab\"}\n");
  Dataset j = Dataset::from_tables(dataset_tokenize(jsonl, "auto", tok, 512, &info), info, 257);
  CHECK(span_vec(j.tokens(0)) == std::vector<int32_t>{BOS, 'Q', ' ', 'A', EOS});
  CHECK(j.prompt_length(0) == 2);
  CHECK(span_vec(j.tokens(1)) == std::vector<int32_t>{BOS, 'a', 'b', EOS});
  CHECK(j.prompt_length(1) == 1);
  // Every token of a text example still carries loss: the BOS predicts the first one.
  Batch b = batch_build(j, {1});
  CHECK(b.targets.i32()[0] == 'a');
  CHECK(b.n_loss_tokens == 3);

  // Without a BOS nothing changes (ByteTokenizer() above and in the other tests).
  CHECK(span_vec(Dataset::from_tables(dataset_tokenize(jsonl, "auto", ByteTokenizer(), 512, &info), info, 257)
                     .tokens(1)) == std::vector<int32_t>{'a', 'b', EOS});
}

TEST_CASE("LLaMA 3 and Qwen2 tokenizers: an example's prompt is what HF's tokenizer(prompt) gives") {
  using json = nlohmann::json;
  const std::string prompt = "Hello, World! It's 2024.", completion = " 1234567 kaleidoscope";
  std::string path = write_file("hf.jsonl", json({{"prompt", prompt}, {"completion", completion}}).dump() + "\n");
  for (const char* name : {"llama3", "qwen2"}) {
    CAPTURE(name);
    const std::string dir = std::string(LORA_FIXTURES) + "/tokenizer/";
    auto tok = tokenizer_load(dir + name);
    std::ifstream in(dir + "reference_" + name + ".json");
    json ref = json::parse(in);
    std::vector<int32_t> hf_prompt;
    for (const json& item : ref["strings"])
      if (item["text"] == prompt) hf_prompt = item["ids"].get<std::vector<int32_t>>();
    REQUIRE(!hf_prompt.empty());
    CHECK((hf_prompt.front() == tok->bos_id()) == (std::string(name) == "llama3"));
    DatasetInfo info;
    Dataset d = Dataset::from_tables(dataset_tokenize(path, "jsonl", *tok, 512, &info), info, tok->vocab_size());
    std::vector<int32_t> ids = span_vec(d.tokens(0));
    REQUIRE(d.prompt_length(0) == int32_t(hf_prompt.size()));
    CHECK(std::vector<int32_t>(ids.begin(), ids.begin() + d.prompt_length(0)) == hf_prompt);
    CHECK(ids == concat(concat(hf_prompt, tok->encode(completion)), {tok->eos_id()}));
  }
}

TEST_CASE("SentencePiece (LLaMA 1/2, Mistral): every example begins with <s>, as HF's LlamaTokenizer puts it") {
  auto tok = tokenizer_load(std::string(LORA_FIXTURES) + "/tokenizer/sp");
  REQUIRE(tok->bos_id() == 1);
  std::string path = write_file("sp.txt", "name : Alimentum||There is a pub . \n");
  DatasetInfo info;
  Dataset d = Dataset::from_tables(dataset_tokenize(path, "e2e", *tok, 512, &info), info, tok->vocab_size());
  const std::vector<int32_t> prompt = concat(concat({tok->bos_id()}, tok->encode("name : Alimentum")), {tok->eos_id()});
  CHECK(d.prompt_length(0) == int32_t(prompt.size()));
  CHECK(span_vec(d.tokens(0)) == concat(concat(prompt, tok->encode(" There is a pub .")), {tok->eos_id()}));
}

TEST_CASE("malformed lines name the file and the line") {
  ByteTokenizer tok;
  auto err = [&](const std::string& name, const std::string& text, const std::string& format = "auto") {
    std::string path = write_file(name, text);
    return error_of([&] { dataset_tokenize(path, format, tok, 512, nullptr); });
  };
  std::string e = err("bad1.txt", "a||b\n\nno separator here\n");
  CHECK(e.find("bad1.txt:3:") != std::string::npos);
  CHECK(e.find("\"||\"") != std::string::npos);
  CHECK(err("bad2.txt", "a||b\nc||\n").find("bad2.txt:2: the reference text") != std::string::npos);
  CHECK(err("bad3.txt", "a||b||c\n").find("bad3.txt:1:") != std::string::npos);
  CHECK(err("bad4.jsonl", "{\"text\": \"x\"}\n{\"text\": \"y\"\n").find("bad4.jsonl:2: invalid JSON") != std::string::npos);
  CHECK(err("bad5.jsonl", "{\"prompt\": \"x\"}\n").find("bad5.jsonl:1:") != std::string::npos);
  CHECK(err("bad6.jsonl", "\n{\"prompt\": \"x\", \"completion\": 3}\n").find("bad6.jsonl:2: field \"completion\" must be a string, found number") != std::string::npos);
  CHECK(err("bad7.jsonl", "{\"prompt\": \"x\", \"completion\": \"\"}\n").find("bad7.jsonl:1: field \"completion\" is empty") != std::string::npos);
  CHECK(err("bad8.jsonl", "[1, 2]\n").find("expected a JSON object, found array") != std::string::npos);
  CHECK(err("bad9.jsonl", "{\"text\": \"x\", \"label\": \"pos\"}\n").find("\"label\" must be a number") != std::string::npos);
  CHECK(err("bad10.jsonl", "{\"foo\": \"x\"}\n").find("found neither") != std::string::npos);
  // An explicit format wins over the extension.
  CHECK(err("bad11.txt", "{\"text\": \"x\"}\n", "e2e").find("bad11.txt:1:") != std::string::npos);
  CHECK(err("bad12.txt", "a||b\n", "csv").find("unknown dataset format 'csv'") != std::string::npos);
}

TEST_CASE("e2e lines are checked as UTF-8, as JSONL lines are: file, line, byte and column") {
  ByteTokenizer tok;
  auto err = [&](const std::string& name, const std::string& text) {
    std::string path = write_file(name, text);
    return error_of([&] { dataset_tokenize(path, "auto", tok, 512, nullptr); });
  };
  CHECK(err("latin1.txt", "a||b\nCaf\xe9||c\n").find("latin1.txt:2: not valid UTF-8: byte 0xE9 at column 4") != std::string::npos);
  CHECK(err("trunc.txt", "a||b \xe2\x82\n").find("trunc.txt:1: not valid UTF-8: byte 0xE2 at column 6") != std::string::npos);
  CHECK(err("overlong.txt", "a\xc0\xaf||b\n").find("overlong.txt:1: not valid UTF-8: byte 0xC0 at column 2") != std::string::npos);
  CHECK(err("surrogate.txt", "a||\xed\xa0\x80\n").find("surrogate.txt:1: not valid UTF-8: byte 0xED at column 4") != std::string::npos);
  CHECK(err("bad.jsonl", "{\"text\": \"Caf\xe9\"}\n").find("bad.jsonl:1: invalid JSON") != std::string::npos);
  // Well-formed UTF-8 of 2, 3 and 4 bytes (and a byte-order mark) reads.
  std::string ok = write_file("utf8.txt", "\xef\xbb\xbf" "Caf\xc3\xa9 \xe2\x82\xac||\xf0\x9f\x8d\xb7 wine .\n");
  DatasetInfo info;
  dataset_tokenize(ok, "auto", tok, 512, &info);
  CHECK(info.n_examples == 1);
}

TEST_CASE("empty, blank-only and missing sources are errors") {
  ByteTokenizer tok;
  std::string empty = write_file("empty.txt", "");
  std::string blank = write_file("blank.jsonl", "\n  \n\n");
  CHECK(error_of([&] { dataset_tokenize(empty, "auto", tok, 512, nullptr); }).find("has no examples") != std::string::npos);
  CHECK(error_of([&] { dataset_tokenize(blank, "auto", tok, 512, nullptr); }).find("has no examples") != std::string::npos);
  std::string missing = (test_dir() / "nope.txt").string();
  CHECK(error_of([&] { dataset_prepare(missing, "auto", tok, 512, test_dir().string()); }).find("does not exist") != std::string::npos);
  std::string unknown = write_file("data.dat", "plain words\n");
  CHECK(error_of([&] { dataset_tokenize(unknown, "auto", tok, 512, nullptr); }).find("set data.format") != std::string::npos);
  std::string ok = write_file("ok.txt", "a||b\n");
  CHECK(error_of([&] { dataset_tokenize(ok, "auto", ByteTokenizer("no-eos", -1), 512, nullptr); })
            .find("no end-of-text token") != std::string::npos);
}

TEST_CASE("examples longer than max_length are cut after the prompt; prompts that fill it are dropped") {
  std::string path = write_file("long.txt",
                                "abc||0123456789\n"  // prompt 4, completion 12 -> 16, cut to 8
                                "abcdefgh||x\n"      // prompt 9 >= 8: dropped
                                "ab||c\n");          // prompt 3, completion 3: fits
  DatasetInfo info;
  DatasetTables tables = dataset_tokenize(path, "e2e", ByteTokenizer(), 8, &info);
  Dataset d = Dataset::from_tables(std::move(tables), info, 257);
  CHECK(info.n_truncated == 1);
  CHECK(info.n_dropped == 1);
  REQUIRE(d.size() == 2);
  CHECK(span_vec(d.tokens(0)) == std::vector<int32_t>{'a', 'b', 'c', EOS, ' ', '0', '1', '2'});
  CHECK(d.prompt_length(0) == 4);
  CHECK(d.source_line(1) == 3);
  std::string all_long = write_file("all_long.txt", "abcdefgh||x\n");
  std::string e = error_of([&] { dataset_tokenize(all_long, "e2e", ByteTokenizer(), 8, nullptr); });
  CHECK(e.find("every example") != std::string::npos);
  CHECK(e.find("max_length") != std::string::npos);
}

TEST_CASE("prepare: HDF5 round trip, reuse, and a new file for a changed source or tokenizer") {
  ByteTokenizer tok;
  fs::path cache = test_dir() / "cache";
  std::string src = write_file("train.txt", "name : A||A is good .\nname : B||B is bad .\nname : A||A is fine .\n");
  DatasetPrepareResult r1 = dataset_prepare(src, "auto", tok, 64, cache.string());
  CHECK_FALSE(r1.reused);
  CHECK(fs::exists(r1.path));
  CHECK(r1.info.n_examples == 3);
  for (const auto& entry : fs::directory_iterator(cache))
    CHECK(entry.path().string().find(".tmp") == std::string::npos);

  DatasetInfo info;
  DatasetTables expect = dataset_tokenize(src, "e2e", tok, 64, &info);
  Dataset d = Dataset::open(r1.path, 257);
  CHECK(d.tables().tokens == expect.tokens);
  CHECK(d.tables().offsets == expect.offsets);
  CHECK(d.tables().prompt_lengths == expect.prompt_lengths);
  CHECK(d.tables().source_lines == expect.source_lines);
  CHECK(d.prompt_text(2) == "name : A");
  CHECK(d.completion_text(1) == "B is bad .");
  CHECK(std::isnan(d.label(0)));
  CHECK(d.info().tokenizer_fingerprint == "bytes-v1");
  CHECK(d.info().max_length == 64);
  CHECK(d.info().eos_id == EOS);
  CHECK(d.info().source_path == src);

  DatasetPrepareResult r2 = dataset_prepare(src, "auto", tok, 64, cache.string());
  CHECK(r2.reused);
  CHECK(r2.path == r1.path);
  CHECK(r2.info.n_examples == 3);

  DatasetPrepareResult r3 = dataset_prepare(src, "auto", ByteTokenizer("bytes-v2"), 64, cache.string());
  CHECK_FALSE(r3.reused);
  CHECK(r3.path != r1.path);
  DatasetPrepareResult r4 = dataset_prepare(src, "auto", tok, 32, cache.string());
  CHECK_FALSE(r4.reused);
  CHECK(r4.path != r1.path);

  write_file("train.txt", "name : A||A is good .\nname : C||C is new .\n");
  DatasetPrepareResult r5 = dataset_prepare(src, "auto", tok, 64, cache.string());
  CHECK_FALSE(r5.reused);
  CHECK(r5.path != r1.path);
  CHECK(Dataset::open(r5.path, 257).size() == 2);

  // A prepared file given as the source is used as is, if the tokenizer matches.
  DatasetPrepareResult r6 = dataset_prepare(r5.path, "auto", tok, 64, cache.string());
  CHECK(r6.reused);
  CHECK(r6.path == r5.path);
  CHECK(error_of([&] { dataset_prepare(r5.path, "auto", ByteTokenizer("other"), 64, ""); })
            .find("another tokenizer") != std::string::npos);

  // A corrupt file under the cache name is rebuilt, with the reason reported.
  fs::resize_file(r5.path, 100);
  DatasetPrepareResult r7 = dataset_prepare(src, "auto", tok, 64, cache.string());
  CHECK_FALSE(r7.reused);
  CHECK_FALSE(r7.stale_reason.empty());
  CHECK(Dataset::open(r7.path, 257).size() == 2);
}

TEST_CASE("open: out-of-vocabulary ids, bad offsets, wrong magic and corrupt files are reported") {
  DatasetTables t;
  t.tokens = {5, 6, EOS, 7, 300, EOS};
  t.offsets = {0, 3, 6};
  t.prompt_lengths = {1, 1};
  t.labels = {NAN, NAN};
  t.source_lines = {1, 4};
  t.prompt_texts = {"a", "b"};
  t.completion_texts = {"c", "d"};
  DatasetInfo info;
  info.format = "e2e";
  info.eos_id = EOS;
  info.vocab_size = 301;
  std::string path = (test_dir() / "oov.h5").string();
  dataset_h5_write(path, t, info);
  CHECK(Dataset::open(path, 301).size() == 2);
  std::string e = error_of([&] { Dataset::open(path, 257); });
  CHECK(e.find("oov.h5") != std::string::npos);
  CHECK(e.find("example 1 (source line 4)") != std::string::npos);
  CHECK(e.find("token id 300") != std::string::npos);
  CHECK(e.find("vocabulary of 257") != std::string::npos);
  CHECK(e.find("hint: the file was tokenized with another tokenizer") != std::string::npos);

  t.tokens[4] = 7;
  t.offsets = {0, 4, 3};
  std::string bad_offsets = (test_dir() / "bad_offsets.h5").string();
  dataset_h5_write(bad_offsets, t, info);
  CHECK(error_of([&] { Dataset::open(bad_offsets, 257); }).find("offsets are not increasing at example 1") != std::string::npos);
  t.offsets = {0, 3, 7};
  std::string past_end = (test_dir() / "past_end.h5").string();
  dataset_h5_write(past_end, t, info);
  CHECK(error_of([&] { Dataset::open(past_end, 257); }).find("past the end of tokens") != std::string::npos);

  // An HDF5 file that is not ours.
  std::string foreign = (test_dir() / "foreign.h5").string();
  hid_t f = H5Fcreate(foreign.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  REQUIRE(f >= 0);
  H5Fclose(f);
  CHECK(error_of([&] { Dataset::open(foreign, 257); }).find("not a tokenized dataset") != std::string::npos);

  // Truncated and garbage files.
  t.offsets = {0, 3, 6};
  std::string good = (test_dir() / "good.h5").string();
  dataset_h5_write(good, t, info);
  fs::copy_file(good, test_dir() / "truncated.h5");
  fs::resize_file(test_dir() / "truncated.h5", fs::file_size(good) / 2);
  std::string trunc_err = error_of([&] { Dataset::open((test_dir() / "truncated.h5").string(), 257); });
  CHECK(trunc_err.find("truncated.h5") != std::string::npos);
  CHECK(trunc_err.find("hint:") != std::string::npos);
  std::string garbage = write_file("garbage.h5", "this is not hdf5 at all");
  CHECK(error_of([&] { Dataset::open(garbage, 257); }).find("not an HDF5 file") != std::string::npos);
  CHECK(error_of([&] { Dataset::open((test_dir() / "absent.h5").string(), 257); }).find("does not exist") != std::string::npos);
}

TEST_CASE("stream: every example exactly once per epoch, padding to the batch's longest, loss counts") {
  auto data = synthetic_dataset(203);
  BatchStreamOptions o;
  o.batch_size = 8;
  o.seed = 42;
  o.bucket_batches = 4;
  BatchStream s(data, o);
  CHECK(s.batches_per_epoch() == 26);  // ceil(203 / 8)
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::multiset<int64_t> seen;
    int partial = 0;
    for (int k = 0; k < 26; ++k) {
      CHECK(s.position() == StreamPosition{epoch, k});
      Batch b;
      REQUIRE(s.next(b));
      CHECK(b.position == StreamPosition{epoch, k});
      if (b.B < 8) ++partial;
      int64_t longest = 0, loss = 0;
      for (int64_t id : b.example_ids) {
        seen.insert(id);
        longest = std::max(longest, data->length(size_t(id)));
        loss += data->length(size_t(id)) - data->prompt_length(size_t(id));
      }
      CHECK(b.T == longest);
      CHECK(b.n_loss_tokens == loss);
      CHECK(b.tokens.shape == std::vector<int64_t>{b.B, b.T});
      int64_t counted = 0;
      for (int64_t i = 0; i < b.targets.numel(); ++i) counted += b.targets.i32()[i] != DATASET_IGNORE_INDEX;
      CHECK(counted == b.n_loss_tokens);
    }
    CHECK(partial == 1);
    CHECK(seen.size() == 203);
    CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 203);
  }
  CHECK(s.position() == StreamPosition{2, 0});
}

TEST_CASE("stream: length bucketing pads less than no bucketing; epochs differ") {
  auto data = synthetic_dataset(512);
  auto padding = [&](int bucket_batches) {
    int64_t pad = 0;
    for (const auto& batch : dataset_epoch_plan(*data, 8, 7, 0, true, bucket_batches)) {
      int64_t longest = 0, sum = 0;
      for (int64_t id : batch) {
        longest = std::max(longest, data->length(size_t(id)));
        sum += data->length(size_t(id));
      }
      pad += longest * int64_t(batch.size()) - sum;
    }
    return pad;
  };
  CHECK(padding(64) * 2 < padding(1));
  CHECK(dataset_epoch_plan(*data, 8, 7, 0, true) != dataset_epoch_plan(*data, 8, 7, 1, true));
  CHECK(dataset_epoch_plan(*data, 8, 7, 0, true) != dataset_epoch_plan(*data, 8, 8, 0, true));
  CHECK(dataset_epoch_plan(*data, 8, 7, 3, true) == dataset_epoch_plan(*data, 8, 7, 3, true));
}

TEST_CASE("stream: deterministic, and resuming from position() gives the same remaining batches") {
  auto data = synthetic_dataset(100);
  BatchStreamOptions o;
  o.batch_size = 6;  // 17 batches an epoch, the last of 4
  o.seed = 1234;
  o.bucket_batches = 2;
  BatchStream a(data, o);
  std::vector<Batch> first = take(a, 40);  // crosses two epoch boundaries

  BatchStream b(data, o);
  std::vector<Batch> first_b = take(b, 10);
  StreamPosition mid = b.position();
  CHECK(mid == StreamPosition{0, 10});
  o.start = mid;
  BatchStream resumed(data, o);
  std::vector<Batch> rest = take(resumed, 30);
  for (int i = 0; i < 40; ++i) {
    const Batch& x = first[size_t(i)];
    const Batch& y = i < 10 ? first_b[size_t(i)] : rest[size_t(i - 10)];
    CHECK(x.example_ids == y.example_ids);
    CHECK(x.position == y.position);
    REQUIRE(x.tokens.numel() == y.tokens.numel());
    CHECK(std::equal(x.tokens.i32(), x.tokens.i32() + x.tokens.numel(), y.tokens.i32()));
    CHECK(std::equal(x.targets.i32(), x.targets.i32() + x.targets.numel(), y.targets.i32()));
  }
  // Resuming at the end of an epoch starts the next one.
  o.start = {1, 17};
  BatchStream at_end(data, o);
  CHECK(at_end.position() == StreamPosition{2, 0});
  Batch b34;
  REQUIRE(at_end.next(b34));
  CHECK(b34.example_ids == first[34].example_ids);
  // A position past the end of an epoch (another dataset or batch size) is refused.
  o.start = {0, 18};
  CHECK(error_of([&] { BatchStream bad(data, o); }).find("cannot resume") != std::string::npos);
}

TEST_CASE("stream: sequential mode is one pass in file order") {
  auto data = synthetic_dataset(10);
  BatchStreamOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  BatchStream s(data, o);
  std::vector<int64_t> order;
  Batch b;
  int batches = 0;
  while (s.next(b)) {
    ++batches;
    order.insert(order.end(), b.example_ids.begin(), b.example_ids.end());
  }
  CHECK(batches == 3);
  CHECK(b.B == 2);
  CHECK(order == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK_FALSE(s.next(b));
  // A stream destroyed with batches still queued shuts down cleanly.
  BatchStreamOptions o2;
  o2.batch_size = 2;
  { BatchStream early(data, o2); }
}

TEST_CASE("e2e validation set from shared data") {
#ifdef LORA_SHARED_DATA
  std::string path = std::string(LORA_SHARED_DATA) + "/e2e/valid.txt";
#else
  std::string path;
#endif
  if (!fs::exists(path)) {
    MESSAGE("skipped: " << path << " not found");
    return;
  }
  DatasetInfo info;
  DatasetTables tables = dataset_tokenize(path, "auto", ByteTokenizer(), 1024, &info);
  Dataset d = Dataset::from_tables(std::move(tables), info, 257);
  CHECK(d.size() == 4672);
  CHECK(info.n_dropped == 0);
  CHECK(d.prompt_text(0) == "name : Alimentum | area : city centre | family friendly : no");
  std::set<std::string> mrs;
  for (size_t i = 0; i < d.size(); ++i) mrs.insert(d.prompt_text(i));
  CHECK(mrs.size() < d.size());  // several references share a meaning representation
}

}  // namespace
