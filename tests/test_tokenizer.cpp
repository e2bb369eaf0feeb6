// Tokenizer tests: ids against the reference implementations (HF `tokenizers` and transformers, the
// sentencepiece package) stored by scripts/make_tokenizer_fixtures.py, round trips, and the errors
// malformed or unsupported files give. Runs anywhere on the fixtures (GPT-2-style, Qwen2 and LLaMA 3
// layouts, SentencePiece) and on a vocabulary the test writes itself; the checks on the real GPT-2
// vocabulary and the whole E2E dev set need ../shared/data and report themselves skipped without it.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/text/tokenizer.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using lora::Tokenizer;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string FIXTURES = std::string(LORA_FIXTURES) + "/tokenizer";

std::string file_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void file_write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

// A fresh empty directory under the system temp dir, removed when the test ends.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "lora_test_tokenizer_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// The message of the lora::Error that f throws; fails the test if it throws nothing or something else.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const lora::Error& e) {
    return std::string(e.what()) + " | hint: " + e.hint();
  } catch (const std::exception& e) {
    FAIL("expected lora::Error, got std::exception: " << e.what());
  }
  FAIL("expected lora::Error, nothing was thrown");
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// GPT-2's byte-to-unicode table, written independently of core/text/tokenizer_bpe.cpp from the description
// in openai/gpt-2 src/encoder.py, so the test vocabulary below does not trust the code under test.
std::string byte_token(int b) {
  bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  uint32_t cp = static_cast<uint32_t>(b);
  if (!printable) {
    int n = 0;
    for (int c = 0; c < b; c++) {
      bool p = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
      if (!p) n++;
    }
    cp = 0x100 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A byte-level vocabulary: the 256 byte tokens (ids 0..255), then each merge's result, then extras.
using MergeList = std::vector<std::pair<std::string, std::string>>;

struct TinyVocab {
  json vocab = json::object();
  std::string merges = "#version: 0.2\n";
  explicit TinyVocab(const MergeList& merge_list,
            const std::vector<std::string>& extras = {"<|endoftext|>"}) {
    for (int b = 0; b < 256; b++) vocab[byte_token(b)] = b;
    for (auto& m : merge_list) {
      merges += m.first + " " + m.second + "\n";
      if (!vocab.contains(m.first + m.second)) vocab[m.first + m.second] = static_cast<int>(vocab.size());
    }
    for (auto& e : extras) vocab[e] = static_cast<int>(vocab.size());
  }
  int32_t id(const std::string& token) const { return vocab.at(token).get<int32_t>(); }
  void write(const TempDir& dir, const char* vocab_name = "vocab.json",
             const char* merges_name = "merges.txt") const {
    file_write(dir / vocab_name, vocab.dump(2));
    file_write(dir / merges_name, merges);
  }
};

const MergeList HELLO_MERGES = {
    {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"},
    {"o", "r"}, {"Ġw", "or"}, {"Ġwor", "l"}, {"Ġworl", "d"}};

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

// Compares the tokenizer's ids with every {"text", "ids"} item of a reference list.
void check_reference_items(const Tokenizer& tok, const json& items, const std::string& what) {
  REQUIRE(items.size() > 0);
  size_t mismatches = 0;
  for (const json& item : items) {
    std::string text = item["text"].get<std::string>();
    std::vector<int32_t> ours = tok.encode(text), ref = ids_of(item["ids"]);
    if (ours != ref && mismatches++ < 5) {
      CHECK_MESSAGE(ours == ref, what << ": ids differ for " << json(text).dump());
    }
  }
  CHECK_MESSAGE(mismatches == 0, what << ": " << mismatches << " of " << items.size() << " texts differ");
}

// The layouts beyond GPT-2's: fixture directory, split pattern and kind.
struct Layout {
  const char* name;
  lora::BpeSplit split;
  const char* kind;
};
const Layout LAYOUTS[] = {{"qwen2", lora::BPE_SPLIT_QWEN2, "qwen2-bpe"}, {"llama3", lora::BPE_SPLIT_LLAMA3, "llama3-bpe"}};

// What HF's tokenizer(text) gives: the BOS where the tokenizer puts one, then the ids of the text.
std::vector<int32_t> hf_ids(const Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  std::vector<int32_t> rest = tok.encode(text);
  ids.insert(ids.end(), rest.begin(), rest.end());
  return ids;
}

std::vector<std::string> words_of(const std::string& text, lora::BpeSplit split) {
  std::vector<std::string> words;
  for (auto& w : lora::bpe_split_words(text, split)) words.push_back(text.substr(w.first, w.second - w.first));
  return words;
}

// A copy of a fixture tokenizer (tokenizer.json and tokenizer_config.json) in dir, its tokenizer.json
// edited by edit.
void fixture_variant(const std::string& name, const TempDir& dir, const std::function<void(json&)>& edit) {
  json doc = json::parse(file_read(FIXTURES + "/" + name + "/tokenizer.json"));
  edit(doc);
  file_write(dir / "tokenizer.json", doc.dump(1));
  fs::copy_file(FIXTURES + "/" + name + "/tokenizer_config.json", dir / "tokenizer_config.json");
}

std::string shown(const std::string& text) { return json(text).dump(-1, ' ', false, json::error_handler_t::replace); }

std::vector<std::string> e2e_lines(const std::string& path) {
  std::string data = file_read(path);
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t eol = data.find('\n', pos);
    if (eol == std::string::npos) eol = data.size();
    lines.push_back(data.substr(pos, eol - pos));
    pos = eol + 1;
  }
  return lines;
}

}  // namespace

TEST_CASE("a vocabulary written by the test: merges apply by rank, special tokens, both file namings") {
  TempDir dir;
  TinyVocab v(HELLO_MERGES);
  v.write(dir);
  auto tok = lora::tokenizer_load(dir.path);
  CHECK(tok->kind() == "gpt2-bpe");
  CHECK(tok->vocab_size() == static_cast<int>(v.vocab.size()));
  CHECK(tok->eos_id() == v.id("<|endoftext|>"));

  CHECK(tok->encode("hello world") == std::vector<int32_t>{v.id("hello"), v.id("Ġworld")});
  CHECK(tok->encode("hello<|endoftext|>hello") ==
        std::vector<int32_t>{v.id("hello"), v.id("<|endoftext|>"), v.id("hello")});
  // "hel" has no merge for "he"+"l": "he" then "l".
  CHECK(tok->encode("hel") == std::vector<int32_t>{v.id("he"), v.id("l")});
  CHECK(tok->encode("") == std::vector<int32_t>{});
  CHECK(tok->decode(tok->encode("hello world, hello!")) == "hello world, hello!");
  CHECK(tok->token_text(v.id("Ġworld")) == " world");
  CHECK(tok->token_text(v.id("Ċ")) == "\\n");

  // Same content under OpenAI's file names: same ids and fingerprint.
  TempDir openai;
  v.write(openai, "encoder.json", "vocab.bpe");
  auto tok2 = lora::tokenizer_load(openai.path);
  CHECK(tok2->encode("hello world") == tok->encode("hello world"));
  CHECK(tok2->fingerprint() == tok->fingerprint());
  CHECK(tok->fingerprint().size() == 16);

  // Dropping one merge changes the fingerprint.
  TempDir fewer;
  TinyVocab w(HELLO_MERGES);
  w.merges = w.merges.substr(0, w.merges.rfind("Ġworl d"));
  w.write(fewer);
  CHECK(lora::tokenizer_load(fewer.path)->fingerprint() != tok->fingerprint());
}

TEST_CASE("added_tokens.json and special_tokens_map.json add tokens and name the end of text") {
  TempDir dir;
  TinyVocab v(HELLO_MERGES);
  v.write(dir);
  int32_t extra = static_cast<int32_t>(v.vocab.size());
  file_write(dir / "added_tokens.json", "{\"<extra>\": " + std::to_string(extra) + "}");
  file_write(dir / "special_tokens_map.json",
             R"({"eos_token": "<extra>", "bos_token": {"content": "<|endoftext|>"}})");
  auto tok = lora::tokenizer_load(dir.path);
  CHECK(tok->vocab_size() == extra + 1);
  CHECK(tok->eos_id() == extra);
  CHECK(tok->encode("hello<extra> world") == std::vector<int32_t>{v.id("hello"), extra, v.id("Ġworld")});
  CHECK(tok->decode({v.id("hello"), extra}) == "hello<extra>");

  file_write(dir / "special_tokens_map.json", R"({"eos_token": "<missing>"})");
  std::string msg = error_of([&] { lora::tokenizer_load(dir.path); });
  CHECK(contains(msg, "special_tokens_map.json"));
  CHECK(contains(msg, "<missing>"));

  file_write(dir / "special_tokens_map.json", "{}");
  file_write(dir / "added_tokens.json", "{\"<extra>\": " + std::to_string(v.id("he")) + "}");
  msg = error_of([&] { lora::tokenizer_load(dir.path); });
  CHECK(contains(msg, "<extra>"));
  CHECK(contains(msg, "\"he\""));
}

TEST_CASE("merge rank decides which pair merges first") {
  TempDir ab_first, bc_first;
  TinyVocab v1(MergeList{{"a", "b"}, {"b", "c"}});
  TinyVocab v2(MergeList{{"b", "c"}, {"a", "b"}});
  v1.write(ab_first);
  v2.write(bc_first);
  CHECK(lora::tokenizer_load(ab_first.path)->encode("abc") == std::vector<int32_t>{v1.id("ab"), v1.id("c")});
  CHECK(lora::tokenizer_load(bc_first.path)->encode("abc") == std::vector<int32_t>{v2.id("a"), v2.id("bc")});

  // All occurrences of the best pair merge, left to right: "aaaaa" -> aa aa a, then aaaa a.
  TempDir runs;
  TinyVocab v3(MergeList{{"a", "a"}, {"aa", "aa"}});
  v3.write(runs);
  CHECK(lora::tokenizer_load(runs.path)->encode("aaaaa") == std::vector<int32_t>{v3.id("aaaa"), v3.id("a")});
}

TEST_CASE("decode(encode(s)) == s for random bytes, invalid UTF-8 included") {
  TempDir dir;
  TinyVocab(HELLO_MERGES).write(dir);
  auto tiny = lora::tokenizer_load(dir.path);
  auto fixture = lora::tokenizer_load(FIXTURES + "/tiny");
  auto qwen2 = lora::tokenizer_load(FIXTURES + "/qwen2");
  auto llama3 = lora::tokenizer_load(FIXTURES + "/llama3");
  std::mt19937 rng(1234);
  const std::string alphabet[] = {"a", "e", "l", "h", "o", " ", "  ", "\n", "\t", "'s", "'", "1", "é",
                                  "日", "👍", "\xe2\x80", "\xff", "\x80", "<|endoftext|>", "!", "\u200d",
                                  "\r", "'S", "\u0301", "\u00c5", "<|begin_of_text|>", "<|im_end|>", "\u3000"};
  for (int trial = 0; trial < 500; trial++) {
    std::string s;
    int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; k++) {
      if (rng() % 4 == 0) s += static_cast<char>(rng() % 256);
      else s += alphabet[rng() % (sizeof alphabet / sizeof alphabet[0])];
    }
    const std::string what = shown(s);
    CHECK_MESSAGE(tiny->decode(tiny->encode(s)) == s, what);
    CHECK(fixture->decode(fixture->encode(s)) == s);
    // Qwen2 normalizes the text between special tokens; NFC of the whole is the same here, as nothing in
    // the alphabet composes with a special token's edge (U+0338 would, with '<' and '>').
    CHECK_MESSAGE(qwen2->decode(qwen2->encode(s)) == lora::unicode_nfc(s), what);
    CHECK_MESSAGE(llama3->decode(llama3->encode(s)) == s, what);
    // Words cover the text exactly, in order, for every split pattern.
    for (lora::BpeSplit split : {lora::BPE_SPLIT_GPT2, lora::BPE_SPLIT_QWEN2, lora::BPE_SPLIT_LLAMA3}) {
      size_t at = 0;
      for (auto& w : lora::bpe_split_words(s, split)) {
        CHECK(w.first == at);
        CHECK(w.second > w.first);
        at = w.second;
      }
      CHECK(at == s.size());
    }
  }
}

TEST_CASE("Unicode classes follow the Unicode character database") {
  CHECK(lora::unicode_is_letter('a'));
  CHECK(lora::unicode_is_letter(0x00E9));    // é
  CHECK(lora::unicode_is_letter(0x65E5));    // 日
  CHECK(lora::unicode_is_letter(0x01C5));    // ǅ, titlecase (Lt)
  CHECK(lora::unicode_is_letter(0x02B0));    // ʰ, modifier letter (Lm)
  CHECK(lora::unicode_is_letter(0x2070E));   // CJK extension B
  CHECK(lora::unicode_is_letter(0x31350));   // CJK extension H (Unicode 15.0)
  CHECK(lora::unicode_is_letter(0x10D4A));   // Garay (Unicode 16.0), as HF tokenizers' Oniguruma has it
  CHECK_FALSE(lora::unicode_is_letter(0x323B0));  // CJK extension J (Unicode 17.0): not yet there
  CHECK(lora::unicode_is_number(0x1E4F0));   // Nag Mundari digit zero (Unicode 15.0)
  CHECK_FALSE(lora::unicode_is_letter(0x0301));  // combining acute accent (Mn)
  CHECK_FALSE(lora::unicode_is_letter('1'));
  CHECK(lora::unicode_is_number(0x0661));    // Arabic-Indic one (Nd)
  CHECK(lora::unicode_is_number(0x216B));    // Roman numeral twelve (Nl)
  CHECK(lora::unicode_is_number(0x00BD));    // one half (No)
  CHECK_FALSE(lora::unicode_is_number('x'));
  CHECK(lora::unicode_is_space(0x3000));
  CHECK(lora::unicode_is_space(0x0085));
  CHECK(lora::unicode_is_space(0x00A0));
  CHECK_FALSE(lora::unicode_is_space(0x200B));  // zero width space is a format character
  CHECK_FALSE(lora::unicode_is_space(0x001C));  // not White_Space, though Python's isspace() says so
}

TEST_CASE("tiny byte-level BPE matches HF tokenizers (fixture, vocab.json + merges.txt and tokenizer.json)") {
  json ref = json::parse(file_read(FIXTURES + "/reference_tiny.json"));
  auto files = lora::tokenizer_load(FIXTURES + "/tiny");
  auto hf = lora::tokenizer_load(FIXTURES + "/tiny_json");
  for (const Tokenizer* tok : {files.get(), hf.get()}) {
    CHECK(tok->eos_id() == ref["eos_id"].get<int>());
    CHECK(tok->vocab_size() == ref["vocab_size"].get<int>());
    check_reference_items(*tok, ref["adversarial"], "tiny adversarial");
    check_reference_items(*tok, ref["e2e"], "tiny e2e");
  }
  CHECK(files->fingerprint() == hf->fingerprint());

  // Added tokens with lstrip/rstrip take the whitespace beside them, as HF does.
  auto special = lora::tokenizer_load(FIXTURES + "/tiny_special");
  check_reference_items(*special, ref["special"], "tiny with lstrip/rstrip added tokens");
  CHECK(special->fingerprint() != hf->fingerprint());
}

TEST_CASE("a RoBERTa-style vocabulary: </s> is the end of text, <mask> takes the space before it") {
  TempDir dir;
  TinyVocab v(HELLO_MERGES, {"<s>", "<pad>", "</s>", "<unk>", "<mask>"});
  v.write(dir);
  auto tok = lora::tokenizer_load(dir.path);
  CHECK(tok->eos_id() == v.id("</s>"));
  CHECK(tok->encode("<s>hello <mask></s>") ==
        std::vector<int32_t>{v.id("<s>"), v.id("hello"), v.id("<mask>"), v.id("</s>")});
  CHECK(tok->encode("hello </s>") == std::vector<int32_t>{v.id("hello"), v.id("Ġ"), v.id("</s>")});
}

TEST_CASE("SentencePiece matches the sentencepiece package (fixture)") {
  json ref = json::parse(file_read(FIXTURES + "/reference_sp.json"));
  auto tok = lora::tokenizer_load(FIXTURES + "/sp");
  CHECK(tok->kind() == "sentencepiece");
  CHECK(tok->eos_id() == ref["eos_id"].get<int>());
  CHECK(tok->vocab_size() == ref["vocab_size"].get<int>());
  check_reference_items(*tok, ref["adversarial"], "sp adversarial");
  check_reference_items(*tok, ref["e2e"], "sp e2e");
  for (const json& item : ref["e2e"]) {
    std::string text = item["text"].get<std::string>();
    CHECK(tok->decode(tok->encode(text)) == text);
  }
  // A control piece written in the text is its id, with the text around it encoded on its own.
  std::vector<int32_t> expect = tok->encode("name : Alimentum");
  expect.push_back(tok->eos_id());
  std::vector<int32_t> tail = tok->encode("There is");
  expect.insert(expect.end(), tail.begin(), tail.end());
  CHECK(tok->encode("name : Alimentum</s>There is") == expect);
  CHECK(tok->decode(expect) == "name : Alimentum</s>There is");
  CHECK(tok->fingerprint().size() == 16);
  CHECK(contains(error_of([&] { tok->decode({tok->vocab_size()}); }), "not in the vocabulary"));
}

TEST_CASE("SentencePiece: <s> goes first as HF's LlamaTokenizer puts it, unless tokenizer_config.json says not") {
  // transformers' LlamaTokenizer: add_bos_token defaults to true; the id is the model's <s> (1 here).
  auto tok = lora::tokenizer_load(FIXTURES + "/sp");
  CHECK(tok->bos_id() == 1);
  CHECK(tok->token_text(tok->bos_id()) == "<s>");
  TempDir d;
  fs::copy_file(FIXTURES + "/sp/tokenizer.model", d / "tokenizer.model");
  file_write(d / "tokenizer_config.json", R"({"add_bos_token": null, "eos_token": "</s>"})");
  auto same = lora::tokenizer_load(d.path);
  CHECK(same->bos_id() == 1);
  CHECK(same->fingerprint() == tok->fingerprint());
  file_write(d / "tokenizer_config.json", R"({"add_bos_token": false})");
  auto none = lora::tokenizer_load(d.path);
  CHECK(none->bos_id() == -1);
  CHECK(none->fingerprint() != tok->fingerprint());  // datasets cached with a BOS are not reused without
  CHECK(none->encode("name : Alimentum") == tok->encode("name : Alimentum"));
  file_write(d / "tokenizer_config.json", R"({"add_bos_token": "yes"})");
  const std::string e = error_of([&] { lora::tokenizer_load(d.path); });
  CHECK(contains(e, (d / "tokenizer_config.json") + ": add_bos_token must be true or false, found \"yes\""));
}

TEST_CASE("GPT-2 tokenizer matches HF tokenizers on every e2e line and the adversarial strings") {
  std::string shared = LORA_SHARED_DATA;
  if (!fs::exists(shared + "/gpt2/encoder.json") || !fs::exists(shared + "/e2e/valid.txt")) {
    MESSAGE("skipped: " << shared << "/gpt2 or /e2e is absent (the shared data folder)");
    return;
  }
  json ref = json::parse(file_read(FIXTURES + "/reference_ids.json"));
  auto tok = lora::tokenizer_load(shared + "/gpt2");
  CHECK(tok->kind() == "gpt2-bpe");
  CHECK(tok->eos_id() == ref["eos_id"].get<int>());
  CHECK(tok->vocab_size() == ref["vocab_size"].get<int>());

  check_reference_items(*tok, ref["adversarial"], "gpt2 adversarial");
  for (const json& item : ref["adversarial"]) {
    std::string text = item["text"].get<std::string>();
    CHECK(tok->decode(tok->encode(text)) == text);
    if (!item.contains("words")) continue;
    std::vector<std::string> words;
    for (auto& w : lora::bpe_split_words(text)) words.push_back(text.substr(w.first, w.second - w.first));
    CHECK_MESSAGE(words == item["words"].get<std::vector<std::string>>(), "words of " << json(text).dump());
  }

  std::vector<std::string> lines = e2e_lines(shared + "/e2e/valid.txt");
  const json& e2e_ids = ref["e2e_ids"];
  REQUIRE(lines.size() == ref["e2e_lines"].get<size_t>());
  REQUIRE(e2e_ids.size() == lines.size());
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> ours;
  for (const std::string& line : lines) ours.push_back(tok->encode(line));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("encoded " << lines.size() << " e2e lines in " << seconds << " s");
  size_t mismatches = 0, tokens = 0;
  for (size_t i = 0; i < lines.size(); i++) {
    tokens += ours[i].size();
    if (ours[i] != ids_of(e2e_ids[i]) && mismatches++ < 5) {
      CHECK_MESSAGE(false, "e2e line " << i + 1 << " differs: " << lines[i]);
    }
    if (tok->decode(ours[i]) != lines[i] && mismatches++ < 5) {
      CHECK_MESSAGE(false, "e2e line " << i + 1 << " does not round-trip");
    }
  }
  CHECK(mismatches == 0);
  CHECK(tokens > lines.size());

  // The same tokenizer from tokenizer.json alone.
  TempDir only_json;
  fs::copy_file(shared + "/gpt2/tokenizer.json", only_json / "tokenizer.json");
  auto from_json = lora::tokenizer_load(only_json.path);
  CHECK(from_json->fingerprint() == tok->fingerprint());
  check_reference_items(*from_json, ref["adversarial"], "gpt2 adversarial from tokenizer.json");
}

TEST_CASE("missing and malformed tokenizer files give errors naming the file, line and a hint") {
  std::string msg = error_of([] { lora::tokenizer_load("/nonexistent/model/dir"); });
  CHECK(contains(msg, "/nonexistent/model/dir"));

  TempDir empty;
  msg = error_of([&] { lora::tokenizer_load(empty.path); });
  CHECK(contains(msg, empty.path));
  CHECK(contains(msg, "vocab.json"));
  CHECK(contains(msg, "tokenizer.model"));

  TempDir half;
  file_write(half / "vocab.json", "{}");
  msg = error_of([&] { lora::tokenizer_load(half.path); });
  CHECK(contains(msg, "merges.txt"));

  TinyVocab v(HELLO_MERGES);
  {
    TempDir d;  // a JSON syntax error on line 3
    v.write(d);
    file_write(d / "vocab.json", "{\n  \"a\": 0,\n  \"b\" 1\n}\n");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, d / "vocab.json"));
    CHECK(contains(msg, "line 3"));
  }
  {
    TempDir d;  // an id that is not an integer
    v.write(d);
    json bad = v.vocab;
    bad["hello"] = "seven";
    file_write(d / "vocab.json", bad.dump(1));
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "vocab.json"));
    CHECK(contains(msg, "\"hello\""));
    CHECK(contains(msg, "line "));
    CHECK(contains(msg, "\"seven\""));
  }
  {
    TempDir d;  // two tokens with one id
    v.write(d);
    json bad = v.vocab;
    bad["hello"] = v.id("he");
    file_write(d / "vocab.json", bad.dump());
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "already taken"));
  }
  {
    TempDir d;  // not an object
    v.write(d);
    file_write(d / "vocab.json", "[1, 2, 3]");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "expected a JSON object"));
  }
  {
    TempDir d;  // a vocabulary without the byte tokens
    file_write(d / "vocab.json", "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    file_write(d / "merges.txt", "a b\n");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "single-byte token"));
  }
  {
    TempDir d;  // three tokens on merges line 4 (line 1 is #version)
    v.write(d);
    file_write(d / "merges.txt", "#version: 0.2\nh e\nl l\nhe ll o\n");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, d / "merges.txt"));
    CHECK(contains(msg, "line 4"));
    CHECK(contains(msg, "he ll o"));
  }
  {
    TempDir d;  // a merge of a token the vocabulary lacks
    v.write(d);
    file_write(d / "merges.txt", "#version: 0.2\nh e\nq zz\n");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "line 3"));
    CHECK(contains(msg, "\"zz\""));
  }
  {
    TempDir d;  // a merge of bytes that are not UTF-8: the message shows them as U+FFFD (found by fuzz_tokenizer)
    v.write(d);
    file_write(d / "merges.txt", "#version: 0.2\nh e\nq \xa0z\n");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "line 3"));
    CHECK(contains(msg, "\"\xef\xbf\xbdz\""));
  }
  {
    TempDir d;  // a corrupt SentencePiece model
    file_write(d / "tokenizer.model", "this is not a protobuf");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "tokenizer.model"));
  }
  {
    TempDir d;  // a tokenizer.json of another kind
    file_write(d / "tokenizer.json", R"({"normalizer": null, "pre_tokenizer": {"type": "Metaspace"},
                                        "model": {"type": "Unigram"}})");
    msg = error_of([&] { lora::tokenizer_load(d.path); });
    CHECK(contains(msg, "tokenizer.json"));
    CHECK(contains(msg, "Metaspace"));
  }
  {
    TempDir d;  // an id out of range
    v.write(d);
    auto tok = lora::tokenizer_load(d.path);
    msg = error_of([&] { tok->decode({-1}); });
    CHECK(contains(msg, "-1"));
    msg = error_of([&] { tok->token_text(tok->vocab_size()); });
    CHECK(contains(msg, "not in the vocabulary"));
  }
}

TEST_CASE("Qwen2 and LLaMA 3 layouts match HF transformers (fixtures): ids with BOS, decoded text, words") {
  for (const Layout& layout : LAYOUTS) {
    CAPTURE(layout.name);
    json ref = json::parse(file_read(FIXTURES + "/reference_" + layout.name + ".json"));
    auto tok = lora::tokenizer_load(FIXTURES + "/" + layout.name);
    CHECK(tok->kind() == layout.kind);
    CHECK(tok->vocab_size() == ref["vocab_size"].get<int>());
    CHECK(tok->eos_id() == ref["eos_id"].get<int>());
    CHECK(tok->bos_id() == ref["bos_id"].get<int>());
    size_t n = 0, bad_ids = 0, bad_text = 0, bad_words = 0;
    for (const json& item : ref["strings"]) {
      std::string text = item["text"].get<std::string>();
      std::vector<int32_t> ref_ids = ids_of(item["ids"]);
      n++;
      if (hf_ids(*tok, text) != ref_ids && bad_ids++ < 5) CHECK_MESSAGE(false, "ids differ for " << shown(text));
      if (tok->decode(ref_ids) != item["decoded"].get<std::string>() && bad_text++ < 5) {
        CHECK_MESSAGE(false, "decoded text differs for " << shown(text));
      }
      if (item.contains("words") && words_of(text, layout.split) != item["words"].get<std::vector<std::string>>() &&
          bad_words++ < 5) {
        CHECK_MESSAGE(false, "words differ for " << shown(text));
      }
    }
    CHECK_MESSAGE(bad_ids + bad_text + bad_words == 0, bad_ids << " ids, " << bad_text << " decoded texts and "
                                                               << bad_words << " word lists of " << n << " differ");
    CHECK(n > 200);
  }
  // The two layouts, and GPT-2's, differ in their fingerprints.
  CHECK(lora::tokenizer_load(FIXTURES + "/qwen2")->fingerprint() !=
        lora::tokenizer_load(FIXTURES + "/llama3")->fingerprint());
}

TEST_CASE("each rule of the Qwen2 and LLaMA 3 layouts, by itself") {
  using W = std::vector<std::string>;
  const lora::BpeSplit Q = lora::BPE_SPLIT_QWEN2, L = lora::BPE_SPLIT_LLAMA3;
  // Contractions in any case, U+017F folding to s; GPT-2's pattern is case-sensitive.
  CHECK(words_of("IT'S", Q) == W{"IT", "'S"});
  CHECK(words_of("We'Re", L) == W{"We", "'Re"});
  CHECK(words_of("SHE'LL", Q) == W{"SHE", "'LL"});
  CHECK(words_of("it'\u017ft", Q) == W{"it", "'\u017f", "t"});
  CHECK(words_of("IT'S", lora::BPE_SPLIT_GPT2) == W{"IT", "'", "S"});
  CHECK(words_of("x'Sup", Q) == W{"x", "'S", "up"});
  CHECK(words_of("x'Sup", lora::BPE_SPLIT_GPT2) == W{"x", "'", "Sup"});
  // One character before a letter run: not a newline, letter or number.
  CHECK(words_of("\thello (world)", Q) == W{"\thello", " (", "world", ")"});
  CHECK(words_of("(world", Q) == W{"(world"});
  CHECK(words_of("\nhello", Q) == W{"\n", "hello"});
  CHECK(words_of("  hello", L) == W{" ", " hello"});
  // Digits: one a word in Qwen2, up to three in LLaMA 3.
  CHECK(words_of("x1234567", Q) == W{"x", "1", "2", "3", "4", "5", "6", "7"});
  CHECK(words_of("x1234567", L) == W{"x", "123", "456", "7"});
  CHECK(words_of(" 12", L) == W{" ", "12"});
  // Symbols take an optional space before them and the newlines after them.
  CHECK(words_of(" !?\r\n\r\nx", Q) == W{" !?\r\n\r\n", "x"});
  CHECK(words_of("a.\n\nb", L) == W{"a", ".\n\n", "b"});
  // Whitespace up to its last newline; otherwise as GPT-2.
  CHECK(words_of("a \n \n b", Q) == W{"a", " \n \n", " b"});
  CHECK(words_of("a   b", Q) == W{"a", "  ", " b"});
  CHECK(words_of("a \t ", L) == W{"a", " \t "});

  // NFC (Qwen2): decomposed and precomposed text give the same ids; without the normalizer they differ.
  auto qwen2 = lora::tokenizer_load(FIXTURES + "/qwen2");
  CHECK(qwen2->encode("cafe\u0301 re\u0301sume\u0301") == qwen2->encode("caf\u00e9 r\u00e9sum\u00e9"));
  CHECK(qwen2->decode(qwen2->encode("\u212b")) == "\u00c5");
  TempDir no_nfc;
  fixture_variant("qwen2", no_nfc, [](json& doc) { doc["normalizer"] = nullptr; });
  auto raw = lora::tokenizer_load(no_nfc.path);
  CHECK(raw->kind() == "qwen2-bpe without NFC");
  CHECK(raw->encode("cafe\u0301") != raw->encode("caf\u00e9"));
  CHECK(raw->fingerprint() != qwen2->fingerprint());

  // ignore_merges (LLaMA 3): a word in the vocabulary is one token, though no merge makes it.
  auto llama3 = lora::tokenizer_load(FIXTURES + "/llama3");
  CHECK(llama3->encode(" kaleidoscope").size() == 1);
  CHECK(llama3->encode("987").size() == 1);
  TempDir merged;
  fixture_variant("llama3", merged, [](json& doc) { doc["model"]["ignore_merges"] = false; });
  auto with_merges = lora::tokenizer_load(merged.path);
  CHECK(with_merges->encode(" kaleidoscope").size() > 1);
  CHECK(with_merges->decode(with_merges->encode(" kaleidoscope")) == " kaleidoscope");
  CHECK(with_merges->fingerprint() != llama3->fingerprint());

  // BOS: the post-processor's <|begin_of_text|> (LLaMA 3); Qwen2's template adds none; without the
  // TemplateProcessing, none. encode() itself never adds it.
  json doc = json::parse(file_read(FIXTURES + "/llama3/tokenizer.json"));
  int32_t begin = -1;
  for (const json& t : doc["added_tokens"]) {
    if (t["content"] == "<|begin_of_text|>") begin = t["id"].get<int32_t>();
  }
  CHECK(begin >= 0);
  CHECK(llama3->bos_id() == begin);
  CHECK(llama3->encode("hi").front() != begin);
  CHECK(qwen2->bos_id() == -1);
  TempDir no_bos;
  fixture_variant("llama3", no_bos, [](json& d) { d["post_processor"] = d["post_processor"]["processors"][0]; });
  auto plain = lora::tokenizer_load(no_bos.path);
  CHECK(plain->bos_id() == -1);
  CHECK(plain->encode("hello world") == llama3->encode("hello world"));
  CHECK(plain->fingerprint() != llama3->fingerprint());
  TempDir other_bos;  // a TemplateProcessing alone, naming another token
  fixture_variant("llama3", other_bos, [&](json& d) {
    json t = d["post_processor"]["processors"][1];
    t["single"][0]["SpecialToken"]["id"] = "<|eot_id|>";
    t["special_tokens"] = {{"<|eot_id|>", {{"id", "<|eot_id|>"}, {"ids", {begin + 9}}, {"tokens", {"<|eot_id|>"}}}}};
    d["post_processor"] = t;
  });
  CHECK(lora::tokenizer_load(other_bos.path)->bos_id() == begin + 9);
  // tokenizer_config.json names the end of text (transformers 5 writes no special_tokens_map.json).
  CHECK(llama3->token_text(llama3->eos_id()) == "<|end_of_text|>");
}

TEST_CASE("NFC: precomposed forms, canonical order, exclusions; bytes that are not UTF-8 are kept") {
  CHECK(lora::unicode_nfc("") == "");
  CHECK(lora::unicode_nfc("plain ascii\n") == "plain ascii\n");
  CHECK(lora::unicode_nfc("e\u0301") == "\u00e9");
  CHECK(lora::unicode_nfc("\u212b") == "\u00c5");              // Angstrom sign: a singleton
  CHECK(lora::unicode_nfc("d\u0307\u0323") == "\u1e0d\u0307");  // dot below sorts first, then composes
  CHECK(lora::unicode_nfc("\u1100\u1161\u11a8") == "\uac01");   // Hangul jamo
  CHECK(lora::unicode_nfc("\u0958") == "\u0915\u093c");         // a composition exclusion stays apart
  CHECK(lora::unicode_nfc("\u00e9") == "\u00e9");
  CHECK(lora::unicode_nfc(std::string("a\0e\u0301", 5)) == std::string("a\0\u00e9", 4));
  CHECK(lora::unicode_nfc("e\xff\u0301") == "e\xff\u0301");      // not composed across an invalid byte
  CHECK(lora::unicode_nfc("\xe2\x80") == "\xe2\x80");
}

TEST_CASE("a Qwen2 release's vocab.json + merges.txt beside its tokenizer.json: the same ids and fingerprint") {
  json doc = json::parse(file_read(FIXTURES + "/qwen2/tokenizer.json"));
  TempDir dir;
  file_write(dir / "vocab.json", doc["model"]["vocab"].dump());
  std::string merges = "#version: 0.2\n";
  for (const json& m : doc["model"]["merges"]) merges += m[0].get<std::string>() + " " + m[1].get<std::string>() + "\n";
  file_write(dir / "merges.txt", merges);
  fs::copy_file(FIXTURES + "/qwen2/tokenizer.json", dir / "tokenizer.json");
  fs::copy_file(FIXTURES + "/qwen2/tokenizer_config.json", dir / "tokenizer_config.json");
  auto files = lora::tokenizer_load(dir.path);
  auto json_only = lora::tokenizer_load(FIXTURES + "/qwen2");
  CHECK(files->kind() == "qwen2-bpe");
  CHECK(files->fingerprint() == json_only->fingerprint());
  json ref = json::parse(file_read(FIXTURES + "/reference_qwen2.json"));
  check_reference_items(*files, ref["strings"], "qwen2 from vocab.json + merges.txt");
}

TEST_CASE("added tokens matched in normalized text come after the special tokens and NFC, as HF's do") {
  json ref = json::parse(file_read(FIXTURES + "/reference_qwen2_normalized_added.json"));
  TempDir dir;
  fixture_variant("qwen2", dir, [&](json& doc) {
    for (const json& a : ref["added"]) {
      doc["added_tokens"].push_back({{"id", a["id"]}, {"content", a["content"]}, {"single_word", false},
                                     {"lstrip", false}, {"rstrip", false}, {"normalized", true}, {"special", false}});
    }
  });
  auto tok = lora::tokenizer_load(dir.path);
  check_reference_items(*tok, ref["strings"], "qwen2 with normalized added tokens");
}

TEST_CASE("Qwen2 and LLaMA 3 tokenizers match HF on every e2e line (hashes of HF's ids)") {
  std::string shared = LORA_SHARED_DATA;
  if (!fs::exists(shared + "/e2e/valid.txt")) {
    MESSAGE("skipped: " << shared << "/e2e is absent (the shared data folder)");
    return;
  }
  std::vector<std::string> lines = e2e_lines(shared + "/e2e/valid.txt");
  for (const Layout& layout : LAYOUTS) {
    CAPTURE(layout.name);
    json ref = json::parse(file_read(FIXTURES + "/reference_" + layout.name + ".json"));
    const json& hashes = ref["e2e_ids_fnv1a64"];
    REQUIRE(hashes.size() == lines.size());
    auto tok = lora::tokenizer_load(FIXTURES + "/" + layout.name);
    size_t mismatches = 0, tokens = 0;
    for (size_t i = 0; i < lines.size(); i++) {
      std::vector<int32_t> ids = hf_ids(*tok, lines[i]);
      tokens += ids.size();
      std::string joined;
      for (size_t k = 0; k < ids.size(); k++) joined += (k ? "," : "") + std::to_string(ids[k]);
      std::string hash = lora::tokenizer_hash_hex(lora::tokenizer_hash(joined, lora::TOKENIZER_HASH_SEED));
      if (hash != hashes[i].get<std::string>() && mismatches++ < 5) {
        CHECK_MESSAGE(false, "e2e line " << i + 1 << " differs: " << lines[i]);
      }
    }
    CHECK(mismatches == 0);
    CHECK(tokens == ref["e2e_tokens"].get<size_t>());
  }
}

TEST_CASE("unsupported tokenizer.json layouts are refused: the file, the part, what is supported, what was found") {
  auto refused = [](const std::string& name, const std::function<void(json&)>& edit) {
    TempDir dir;
    fixture_variant(name, dir, edit);
    std::string msg = error_of([&] { lora::tokenizer_load(dir.path); });
    CHECK(contains(msg, dir / "tokenizer.json"));
    return msg;
  };
  std::string msg = refused("qwen2", [](json& d) { d["normalizer"] = {{"type", "NFKC"}}; });
  CHECK(contains(msg, "tokenizer.json normalizer"));
  CHECK(contains(msg, "NFKC"));
  CHECK(contains(msg, "{\"type\": \"NFC\"} (Qwen2)"));

  msg = refused("llama3", [](json& d) {
    std::string& re = d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"].get_ref<std::string&>();
    re.replace(re.find("{1,3}"), 5, "{1,2}");
  });
  CHECK(contains(msg, "pre_tokenizer: unsupported Split pattern"));
  CHECK(contains(msg, "\\\\p{N}{1,2}"));
  CHECK(contains(msg, "Qwen2's"));
  CHECK(contains(msg, "LLaMA 3's"));

  msg = refused("qwen2", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; });
  CHECK(contains(msg, "Isolated"));
  CHECK(contains(msg, "Removed"));

  msg = refused("qwen2", [](json& d) { d["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; });
  CHECK(contains(msg, "add_prefix_space"));

  msg = refused("qwen2", [](json& d) { d["pre_tokenizer"] = {{"type", "Whitespace"}}; });
  CHECK(contains(msg, "unsupported pre_tokenizer {\"type\":\"Whitespace\"}"));
  CHECK(contains(msg, "Sequence[Split(Qwen2's or LLaMA 3's pattern"));

  msg = refused("llama3", [](json& d) {
    d["post_processor"] = {{"type", "BertProcessing"}, {"sep", {"</s>", 2}}, {"cls", {"<s>", 0}}};
  });
  CHECK(contains(msg, "post_processor: unsupported post_processor"));
  CHECK(contains(msg, "BertProcessing"));
  CHECK(contains(msg, "TemplateProcessing"));

  msg = refused("llama3", [](json& d) {
    json& single = d["post_processor"]["processors"][1]["single"];
    single.push_back(single[0]);  // <|begin_of_text|> $A <|begin_of_text|>
  });
  CHECK(contains(msg, "post_processor.processors[1]: unsupported TemplateProcessing"));

  msg = refused("llama3", [](json& d) {
    d["post_processor"]["processors"][1]["special_tokens"]["<|begin_of_text|>"]["ids"] = {5000};
  });
  CHECK(contains(msg, "<|begin_of_text|>"));
  CHECK(contains(msg, "id 5000"));

  msg = refused("llama3", [](json& d) { d["model"]["ignore_merges"] = "yes"; });
  CHECK(contains(msg, "ignore_merges must be true or false"));
}

}  // namespace
