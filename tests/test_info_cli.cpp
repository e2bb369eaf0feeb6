// `lora info`, `lora prepare` and `lora validate` as a user runs them: the built binary (LORA_BIN) on
// inputs the test makes itself (a model from `lora init`, a two-step run on the quickstart base model,
// its adapter, tokenized datasets, a GGUF export), checking the summaries, that --json parses and agrees
// with the files, that train reuses what prepare wrote, and one clear message per bad input.
// Also the length statistics and the GGUF reader of core/ directly.
#include <doctest/doctest.h>

#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/data/dataset.h"
#include "core/base/fsutil.h"
#include "core/formats/gguf_read.h"
#include "core/commands/inspect.h"
#include "core/formats/safetensors.h"
#include "core/text/tokenizer.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
const std::string kBase = LORA_SOURCE_DIR "/data/quickstart/base-model";

struct Run {
  int code = -1;
  std::string out, err;
  std::string all() const { return out + err; }
};

// `lora ARGS` with stdout and stderr kept apart (--json output must be stdout alone).
Run run_lora(const std::string& args) {
  static const std::string dir = temp_dir();
  const std::string o = dir + "/stdout", e = dir + "/stderr";
  int status = std::system((std::string(LORA_BIN) + " " + args + " </dev/null >" + o + " 2>" + e).c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = lora::file_read(o);
  r.err = lora::file_read(e);
  return r;
}

json run_json(const std::string& args) {
  Run r = run_lora(args + " --json");
  INFO("lora " << args << " --json\n" << r.all());
  REQUIRE(r.code == 0);
  json j = json::parse(r.out, nullptr, false);
  REQUIRE(!j.is_discarded());
  return j;
}

void check_error(const Run& r, int code, const std::string& needle) {
  INFO(r.all());
  CHECK(r.code == code);
  CHECK(contains(r.err, "error: "));
  CHECK(contains(r.err, needle));
  CHECK(contains(r.err, "hint: "));
  CHECK(!contains(r.all(), "internal error"));
  CHECK(!contains(r.all(), "terminate called"));
}

const char* kTrain =
    "name : The Eagle | Type : pub||The Eagle is a pub . \n"
    "name : Aromi | food : Italian||Aromi serves Italian food . \n"
    "name : Bibimbap House | area : riverside||Bibimbap House is by the river . \n";
const char* kEval = "name : The Mill | food : French||The Mill serves French food . \n";

// A working recipe in dir: quickstart base model, three training lines, one eval line, a cache and a run
// directory of its own, two steps.
std::string recipe(const fs::path& dir) {
  write_text(dir / "train.txt", kTrain);
  write_text(dir / "valid.txt", kEval);
  write_text(dir / "recipe.yaml", "model:\n  path: " + kBase + "\n  device: cpu\nlora:\n  r: 4\n  alpha: 8\n  targets: [q, v]\n" +
                                      "data:\n  train: train.txt\n  eval: valid.txt\n  cache_dir: " + (dir / "cache").string() +
                                      "\n  max_length: 64\ntrain:\n  batch_size: 2\n  max_steps: 2\n" +
                                      "output:\n  dir: " + (dir / "run").string() + "\nlog:\n  progress: none\n");
  return (dir / "recipe.yaml").string();
}

std::vector<fs::path> cache_files(const fs::path& dir, const std::string& stem) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".h5" && e.path().filename().string().rfind(stem + ".", 0) == 0) out.push_back(e.path());
  return out;
}

int64_t numel_sum(const lora::SafetensorsFile& f) {
  int64_t n = 0;
  for (const auto& e : f.entries()) n += e.numel();
  return n;
}
}  // namespace

TEST_CASE("help lists the new subcommands and their flags") {
  Run h = run_lora("--help");
  CHECK(h.code == 0);
  for (const char* sub : {"info", "prepare", "validate"}) CHECK(contains(h.out, sub));
  Run i = run_lora("info --help");
  CHECK(i.code == 0);
  for (const char* flag : {"--json", "--all"}) CHECK(contains(i.out, flag));
  Run p = run_lora("prepare --help");
  CHECK(p.code == 0);
  for (const char* flag : {"--set", "--split"}) CHECK(contains(p.out, flag));
  CHECK(contains(run_lora("validate --help").out, "--set"));
  CHECK(run_lora("info").code == 2);
  CHECK(run_lora("prepare").code == 2);
  CHECK(run_lora("validate").code == 2);
  CHECK(run_lora("prepare " + recipe(temp_dir()) + " --split nope").code == 2);
}

TEST_CASE("info on a model directory made by lora init") {
  const fs::path d = temp_dir();
  Run init = run_lora("init --config " LORA_SOURCE_DIR "/data/quickstart/base-config.json --out " + (d / "model").string() +
                      " --tokenizer " + kBase + " --seed 1");
  INFO(init.all());
  REQUIRE(init.code == 0);
  Run r = run_lora("info " + (d / "model").string());
  INFO(r.all());
  CHECK(r.code == 0);
  for (const char* s : {"model directory", "gpt2", "4 layers", "d_model 128", "vocab 879", "context 128", "layernorm",
                        "gpt2-bpe", "vocab.json", "F32"})
    CHECK(contains(r.out, s));
  json j = run_json("info " + (d / "model").string());
  CHECK(j["kind"] == "model");
  CHECK(j["family"] == "gpt2");
  CHECK(j["config"]["layers"] == 4);
  CHECK(j["config"]["heads"] == 4);
  CHECK(j["config"]["kv_heads"] == 4);
  CHECK(j["config"]["vocab_size"] == 879);
  CHECK(j["config"]["position"] == "learned");
  CHECK(j["shards"] == 1);
  CHECK(j["parameters"] == numel_sum(lora::SafetensorsFile::open((d / "model" / "model.safetensors").string())));
  CHECK(j["dtypes"].contains("F32"));
  CHECK(j["tokenizer"]["vocab_size"] == 879);
}

TEST_CASE("info on windowed models: Mistral's window on every layer, Qwen2's on the layers layer_types marks") {
  const std::string qwen2 = std::string(LORA_FIXTURES) + "/golden-qwen2-swa/qwen2-swa-tiny";
  Run r = run_lora("info " + qwen2);
  INFO(r.all());
  CHECK(r.code == 0);
  CHECK(contains(r.out, "causal (sliding window 5 on layer 0), pre-norm"));
  json j = run_json("info " + qwen2);
  CHECK(j["config"]["sliding_window"] == 5);
  CHECK(j["config"]["sliding_layers"] == json{0});
  const std::string mistral = std::string(LORA_FIXTURES) + "/golden-mistral/mistral-tiny";
  CHECK(contains(run_lora("info " + mistral).out, "causal (sliding window 5), pre-norm"));
  json m = run_json("info " + mistral);
  CHECK(m["config"]["sliding_window"] == 5);
  CHECK(!m["config"].contains("sliding_layers"));
  json l = run_json("info " + std::string(LORA_FIXTURES) + "/golden-llama/llama-tiny");
  CHECK(!l["config"].contains("sliding_window"));
}

TEST_CASE("prepare, then train reuses the cache; info on the run, its adapter, datasets, safetensors and GGUF") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  // prepare tokenizes both splits, then finds them up to date
  Run p = run_lora("prepare " + rec);
  INFO(p.all());
  REQUIRE(p.code == 0);
  CHECK(contains(p.out, "train: "));
  CHECK(contains(p.out, "eval: "));
  CHECK(contains(p.out, "(tokenized), 3 examples"));
  CHECK(contains(p.out, "written"));
  CHECK(contains(p.out, "histogram"));
  CHECK(contains(p.out, "0 truncated"));
  REQUIRE(cache_files(d / "cache", "train").size() == 1);
  REQUIRE(cache_files(d / "cache", "valid").size() == 1);
  Run again = run_lora("prepare " + rec + " --split train");
  INFO(again.all());
  CHECK(again.code == 0);
  CHECK(contains(again.out, "already up to date"));
  CHECK(!contains(again.out, "eval: "));
  // train finds the same files
  Run t = run_lora("train " + rec + " --set train.eval_every=0 --set output.save_every=1 --set output.keep_last=0");
  INFO(t.all());
  REQUIRE(t.code == 0);
  CHECK(contains(t.all(), "train: "));
  CHECK(contains(t.all(), cache_files(d / "cache", "train")[0].string() + " (reusing tokenized cache)"));
  CHECK(contains(t.all(), cache_files(d / "cache", "valid")[0].string() + " (reusing tokenized cache)"));
  CHECK(cache_files(d / "cache", "train").size() == 1);

  {  // the run directory
    Run r = run_lora("info " + (d / "run").string());
    INFO(r.all());
    CHECK(r.code == 0);
    for (const char* s : {"run directory", "(finished)", "step 1", "step 2", "newest", "last losses", "r 4, alpha 8"})
      CHECK(contains(r.out, s));
    json j = run_json("info " + (d / "run").string());
    CHECK(j["kind"] == "run");
    CHECK(j["recipe"]["lora.r"] == 4);
    CHECK(j["recipe"]["train.max_steps"] == 2);
    REQUIRE(j["checkpoints"].size() == 2);
    CHECK(j["checkpoints"][1]["step"] == 2);
    CHECK(contains(j["latest"].get<std::string>(), "step-00000002"));
    CHECK(j["metrics"]["last_step"] == 2);
    CHECK(j["metrics"]["last_losses"].size() == 2);
    CHECK(j["metrics"]["last_eval"]["step"] == 2);
    CHECK(j["adapter"]["r"] == 4);
    CHECK(j["finished"] == true);
    // Its checkpoints folder and one checkpoint point back at the run.
    for (const fs::path& inner : {d / "run" / "checkpoints", d / "run" / "checkpoints" / "step-00000002"}) {
      Run c = run_lora("info " + inner.string());
      CHECK(c.code == 2);
      CHECK(contains(c.err, "hint: run `lora info " + (d / "run").string() + "` to see the run and its checkpoints"));
    }
  }
  {  // the adapter, alone in a directory
    fs::create_directories(d / "adapter");
    for (const char* f : {"adapter_config.json", "adapter_model.safetensors"}) fs::copy_file(d / "run" / f, d / "adapter" / f);
    Run r = run_lora("info " + (d / "adapter").string());
    INFO(r.all());
    CHECK(r.code == 0);
    for (const char* s : {"adapter ", "r 4, alpha 8", "scale 2", "c_attn", "0-3", "rank_pattern", "quickstart/base-model"})
      CHECK(contains(r.out, s));
    json j = run_json("info " + (d / "adapter").string());
    CHECK(j["kind"] == "adapter");
    CHECK(j["r"] == 4);
    CHECK(j["alpha"] == 8.0);
    CHECK(j["scale"] == 2.0);
    CHECK(j["rslora"] == false);
    CHECK(j["layers"] == json({0, 1, 2, 3}));
    CHECK(j["rank_pattern"]["c_attn"] == 8);  // q and v: one block-structured adapter of rank 2r
    CHECK(fs::equivalent(j["base_model_name_or_path"].get<std::string>(), kBase));  // as the recipe resolved it
    auto st = lora::SafetensorsFile::open((d / "adapter" / "adapter_model.safetensors").string());
    CHECK(j["tensors"] == st.entries().size());
    CHECK(j["trainable_parameters"] == numel_sum(st));
  }
  {  // a tokenized dataset
    const std::string h5 = cache_files(d / "cache", "train")[0].string();
    Run r = run_lora("info " + h5);
    INFO(r.all());
    CHECK(r.code == 0);
    for (const char* s : {"tokenized dataset", "format_version 1", "e2e", "fingerprint", "lengths", "histogram"})
      CHECK(contains(r.out, s));
    json j = run_json("info " + h5);
    lora::Dataset data = lora::Dataset::open(h5, 879);
    CHECK(j["kind"] == "dataset");
    CHECK(j["format_version"] == lora::DATASET_FORMAT_VERSION);
    CHECK(j["examples"] == 3);
    CHECK(j["tokens"] == data.n_tokens());
    int64_t prompt = 0, mn = 1 << 30, mx = 0;
    for (size_t i = 0; i < data.size(); ++i) {
      prompt += data.prompt_length(i);
      mn = std::min(mn, data.length(i));
      mx = std::max(mx, data.length(i));
    }
    CHECK(j["prompt_tokens"] == prompt);
    CHECK(j["length"]["min"] == mn);
    CHECK(j["length"]["max"] == mx);
    CHECK(j["source_hash"] == lora::dataset_source_hash((d / "train.txt").string()));
    CHECK(j["max_length"] == 64);
  }
  {  // a safetensors file: the list is cut unless --all
    Run r = run_lora("info " + kBase + "/model.safetensors");
    INFO(r.all());
    CHECK(r.code == 0);
    CHECK(contains(r.out, "52 tensors"));
    CHECK(contains(r.out, "and 32 more tensors"));
    CHECK(contains(r.out, "h.0.attn.c_attn.weight  F32  (128, 384)"));
    Run all = run_lora("info " + kBase + "/model.safetensors --all");
    CHECK(!contains(all.out, "more tensors"));
    CHECK(contains(all.out, "h.3.mlp.c_proj.weight"));
    json j = run_json("info " + (d / "run" / "adapter_model.safetensors").string());
    CHECK(j["kind"] == "safetensors");
    CHECK(j["tensors"] == 8);
    CHECK(j["entries"].size() == 8);
    CHECK(j["entries_omitted"] == 0);
    CHECK(j["metadata"]["format"] == "pt");
    CHECK(j["entries"][0]["dtype"] == "F32");
  }
  {  // a GGUF adapter written by lora export
    const std::string gguf = (d / "adapter.gguf").string();
    Run e = run_lora("export --adapter " + (d / "run").string() + " --to gguf --out " + gguf);
    INFO(e.all());
    REQUIRE(e.code == 0);
    Run r = run_lora("info " + gguf);
    INFO(r.all());
    CHECK(r.code == 0);
    CHECK(contains(r.out, "GGUF file"));
    CHECK(contains(r.out, "general.type = adapter"));
    CHECK(contains(r.out, "blk.0.attn_qkv.weight.lora_a  F32  [128, 8]"));
    json j = run_json("info " + gguf);
    CHECK(j["kind"] == "gguf");
    CHECK(j["version"] == 3);
    CHECK(j["metadata"]["general.architecture"] == "gpt2");
    CHECK(j["metadata"]["adapter.lora.alpha"].get<double>() == doctest::Approx(16.0));  // scale 2 x rank 8
    CHECK(j["tensors"] == 8);
  }
}

TEST_CASE("info on adapters PEFT wrote: GPT-2, and RoBERTa with a classification head in modules_to_save") {
  json g = run_json("info " LORA_FIXTURES "/golden/adapter");
  CHECK(g["kind"] == "adapter");
  CHECK(g["r"] == 4);
  CHECK(g["alpha"] == 8.0);
  CHECK(g["layers"] == json({0, 1}));
  CHECK(g["written_by"] == "");
  CHECK(g["saved_modules"].empty());
  const std::string cls = LORA_FIXTURES "/golden-roberta/adapter-cls";
  json j = run_json("info " + cls);
  auto st = lora::SafetensorsFile::open(cls + "/adapter_model.safetensors");
  int64_t head = 0;
  for (const auto& e : st.entries())
    if (contains(e.name, "classifier.")) head += e.numel();
  REQUIRE(head > 0);
  CHECK(j["saved_parameters"] == head);
  CHECK(j["trainable_parameters"] == numel_sum(st));
  CHECK(j["saved_modules"].size() == 4);
  CHECK(j["modules_adapted"] == json({"query", "value"}));
  Run r = run_lora("info " + cls);
  CHECK(contains(r.out, "saved modules"));
  CHECK(contains(r.out, "classifier.out_proj.weight"));
  json m = run_json("info " LORA_FIXTURES "/golden-roberta/roberta-cls");
  CHECK(m["family"] == "roberta");
  CHECK(m["config"]["head"] == "classifier");
  CHECK(m["config"]["num_labels"] == 3);
  CHECK(m["config"]["causal"] == false);
}

TEST_CASE("info on a directory of tokenizer files alone (data.tokenizer)") {
  const std::string dir = std::string(LORA_FIXTURES) + "/tokenizer/sp";
  Run r = run_lora("info " + dir);
  INFO(r.all());
  CHECK(r.code == 0);
  CHECK(contains(r.out, "tokenizer directory " + dir));
  CHECK(contains(r.out, "sentencepiece, 512 tokens, eos 2, bos 1 (tokenizer.model)"));
  json j = run_json("info " + dir);
  CHECK(j["kind"] == "tokenizer");
  CHECK(j["tokenizer"]["fingerprint"] == lora::tokenizer_load(dir)->fingerprint());
  CHECK(contains(r.out, "fingerprint   " + j["tokenizer"]["fingerprint"].get<std::string>()));
}

TEST_CASE("info: paths it cannot read or does not know") {
  const fs::path d = temp_dir();
  check_error(run_lora("info " + (d / "missing").string()), 1, (d / "missing").string());
  fs::create_directories(d / "empty");
  Run r = run_lora("info " + (d / "empty").string());
  check_error(r, 2, "config.json");
  write_text(d / "notes.txt", "hello\n");
  check_error(run_lora("info " + (d / "notes.txt").string()), 2, "notes.txt");
  fs::create_directories(d / "bad-tok");
  write_text(d / "bad-tok" / "tokenizer.json", "{ not json");
  check_error(run_lora("info " + (d / "bad-tok").string()), 1, (d / "bad-tok" / "tokenizer.json").string());
  write_text(d / "pytorch_model.bin", "not a pickle");
  check_error(run_lora("info " + (d / "pytorch_model.bin").string()), 2, "safe_serialization");
  {
    std::string bytes = lora::file_read(kBase + "/model.safetensors");
    std::ofstream(d / "cut.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  check_error(run_lora("info " + (d / "cut.safetensors").string()), 1, "cut.safetensors");
  write_text(d / "bad.gguf", "GGUF\x03");
  check_error(run_lora("info " + (d / "bad.gguf").string()), 1, "bad.gguf");
  write_text(d / "bad.h5", "not hdf5");
  check_error(run_lora("info " + (d / "bad.h5").string()), 1, "bad.h5");
}

TEST_CASE("validate: a good recipe passes and nothing is written") {
  const fs::path d = temp_dir();
  Run r = run_lora("validate " + recipe(d));
  INFO(r.all());
  CHECK(r.code == 0);
  for (const char* part : {"recipe ", "model ", "tokenizer ", "lora ", "data.train ", "data.eval ", "eval ", "output "})
    CHECK(contains(r.out, part));
  CHECK(contains(r.out, "ok: "));
  CHECK(contains(r.out, "3 examples"));
  CHECK(contains(r.out, "trainable parameters"));
  CHECK(!contains(r.out, "PROBLEM"));
  CHECK(!fs::exists(d / "cache"));
  CHECK(!fs::exists(d / "run"));
}

TEST_CASE("validate: each problem named with a hint, all at once, exit 2 for the recipe and 1 for files") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  // a data file that does not exist: a file error
  Run missing = run_lora("validate " + rec + " --set data.train=" + (d / "nope.txt").string());
  check_error(missing, 1, (d / "nope.txt").string());
  CHECK(contains(missing.out, "data.train  PROBLEM"));
  // a target GPT-2 does not have: a recipe error
  check_error(run_lora("validate " + rec + " --set lora.targets=[q,gate]"), 2, "unknown LoRA target 'gate'");
  // a bad line: its number
  write_text(d / "bad.txt", std::string(kTrain) + "\nthis line has no separator\n");
  Run bad = run_lora("validate " + rec + " --set data.train=" + (d / "bad.txt").string());
  check_error(bad, 1, "bad.txt:5");
  CHECK(contains(bad.err, "no \"||\""));
  write_text(d / "bad.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"\n");
  check_error(run_lora("validate " + rec + " --set data.eval=" + (d / "bad.jsonl").string()), 1, "bad.jsonl:2");
  // a layer the model does not have
  check_error(run_lora("validate " + rec + " --set lora.layers=[7]"), 2, "layer 7");
  // examples longer than the model's positions
  std::string words;
  for (int i = 0; i < 200; ++i) words += " word";
  write_text(d / "long.txt", "name : Long||It is" + words + " .\n");
  check_error(run_lora("validate " + rec + " --set data.max_length=4096 --set data.train=" + (d / "long.txt").string()), 2,
              "positions");
  // several problems together, each reported
  Run many = run_lora("validate " + rec + " --set train.lr=-1 --set lora.targets=[q,gate] --set data.eval=" +
                      (d / "nope.txt").string());
  check_error(many, 2, "3 problems");
  CHECK(contains(many.err, "train.lr"));
  CHECK(contains(many.err, "'gate'"));
  CHECK(contains(many.err, "nope.txt"));
  // a model directory that does not exist; a key that does not exist
  check_error(run_lora("validate " + rec + " --set model.path=" + (d / "no-model").string()), 1, "no-model");
  check_error(run_lora("validate " + rec + " --set trian.lr=1"), 2, "train.lr");
}

TEST_CASE("validate and prepare a GLUE-style classification recipe on a tiny RoBERTa") {
  // RoBERTa's special tokens at ids 0-3, then the quickstart vocabulary (merges name tokens: unchanged).
  const fs::path d = temp_dir();
  const std::string tok = LORA_SOURCE_DIR "/data/quickstart/model-tokenizer";
  json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}};
  json quick = json::parse(lora::file_read(tok + "/vocab.json"));
  for (auto it = quick.begin(); it != quick.end(); ++it) vocab[it.key()] = it.value().get<int>() + 4;
  write_text(d / "tok" / "vocab.json", vocab.dump());
  fs::copy_file(tok + "/merges.txt", d / "tok" / "merges.txt");
  write_text(d / "config.json", json({{"model_type", "roberta"}, {"vocab_size", vocab.size()}, {"hidden_size", 32},
                                      {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"intermediate_size", 64},
                                      {"max_position_embeddings", 34}, {"type_vocab_size", 1}, {"hidden_act", "gelu"},
                                      {"bos_token_id", 0}, {"pad_token_id", 1}, {"eos_token_id", 2},
                                      {"architectures", {"RobertaForSequenceClassification"}}})
                                    .dump());
  Run init = run_lora("init --config " + (d / "config.json").string() + " --out " + (d / "base").string() +
                      " --tokenizer " + (d / "tok").string());
  INFO(init.all());
  REQUIRE(init.code == 0);
  write_text(d / "train.jsonl", "{\"sentence1\": \"the pub\", \"sentence2\": \"a pub near the river\", \"label\": 1}\n"
                                "{\"sentence1\": \"the shop\", \"sentence2\": \"cheap food\", \"label\": 0}\n");
  write_text(d / "recipe.yaml", "model:\n  path: base\n  device: cpu\n  num_labels: 2\nlora:\n  targets: [query, value]\n"
                                "data:\n  train: train.jsonl\n  max_length: 32\n  cache_dir: " + (d / "cache").string() +
                                    "\noutput:\n  dir: " + (d / "run").string() + "\n");
  const std::string rec = (d / "recipe.yaml").string();
  Run ok = run_lora("validate " + rec);
  INFO(ok.all());
  CHECK(ok.code == 0);
  CHECK(contains(ok.out, "roberta"));
  CHECK(contains(ok.out, "glue, 2 examples"));
  CHECK(contains(ok.out, "classification"));
  Run p = run_lora("prepare " + rec);
  INFO(p.all());
  CHECK(p.code == 0);
  CHECK(contains(p.out, "(tokenized), 2 examples"));
  // a label outside the head's two classes, named with its line
  write_text(d / "bad.jsonl", "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 0}\n"
                              "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 7}\n");
  Run bad = run_lora("validate " + rec + " --set data.train=" + (d / "bad.jsonl").string());
  check_error(bad, 2, "bad.jsonl");
  CHECK(contains(bad.err, "7"));
  // num_labels on a model with a language-model head
  check_error(run_lora("validate " + recipe(d / "lm") + " --set model.num_labels=3"), 2, "model.num_labels");
}

TEST_CASE("validate warns about an output directory that already holds a run") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  REQUIRE(run_lora("train " + rec).code == 0);
  Run r = run_lora("validate " + rec);
  INFO(r.all());
  CHECK(r.code == 0);
  CHECK(contains(r.out, "output      warning"));
  CHECK(contains(r.out, "--resume"));
  CHECK(contains(r.out, "(1 warning)"));
}

TEST_CASE("length statistics: nearest-rank percentiles and an eight-bin histogram") {
  lora::DatasetTables t;
  t.offsets = {0};
  for (int len : {3, 5, 8, 8, 10, 16, 2, 4, 6, 7}) {  // sorted: 2 3 4 5 6 7 8 8 10 16
    for (int k = 0; k < len; ++k) t.tokens.push_back(k);
    t.offsets.push_back(int64_t(t.tokens.size()));
    t.prompt_lengths.push_back(1);
    t.labels.push_back(len == 16 ? 1.0f : NAN);
    t.source_lines.push_back(int64_t(t.prompt_lengths.size()));
    t.prompt_texts.push_back("p");
    t.completion_texts.push_back("c");
  }
  lora::DatasetInfo info;
  info.eos_id = 0;
  lora::Dataset data = lora::Dataset::from_tables(t, info, 32);
  lora::LengthStats s = lora::dataset_length_stats(data, 16);
  CHECK(s.examples == 10);
  CHECK(s.tokens == 69);
  CHECK(s.prompt_tokens == 10);
  CHECK(s.min == 2);
  CHECK(s.max == 16);
  CHECK(s.mean == doctest::Approx(6.9));
  CHECK(s.p50 == 6);
  CHECK(s.p90 == 10);
  CHECK(s.p99 == 16);
  CHECK(s.labelled == 1);
  REQUIRE(s.histogram.size() == 8);  // bins of 2 up to max_length 16
  CHECK(s.histogram[0] == std::make_pair(int64_t(2), int64_t(1)));   // 2
  CHECK(s.histogram[1] == std::make_pair(int64_t(4), int64_t(2)));   // 3 4
  CHECK(s.histogram[3] == std::make_pair(int64_t(8), int64_t(3)));   // 7 8 8
  CHECK(s.histogram[7] == std::make_pair(int64_t(16), int64_t(1)));  // 16
  CHECK(lora::length_histogram_line(s).rfind("1-2: 1 | 3-4: 2 | ", 0) == 0);
}

TEST_CASE("the GGUF reader: arrays, every scalar type, and truncation") {
  // A hand-made v3 file: two metadata pairs (a u32 and an array of 20 i32) and one tensor info.
  std::string b = "GGUF";
  auto u32 = [&](uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [&](uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); };
  auto str = [&](const std::string& s) { u64(s.size()); b += s; };
  u32(3);
  u64(1);
  u64(2);
  str("general.alignment");
  u32(4);
  u32(32);
  str("tokens");
  u32(9);
  u32(5);
  u64(20);
  for (int i = 0; i < 20; ++i) u32(uint32_t(i * 10));
  str("w");
  u32(2);
  u64(4);
  u64(3);
  u32(1);  // F16
  u64(0);
  const std::string path = temp_dir() + "/t.gguf";
  write_text(path, b);
  lora::GgufFile g = lora::gguf_file_read(path, 16);
  CHECK(g.version == 3);
  CHECK(g.metadata["general.alignment"] == 32);
  CHECK(g.metadata["tokens"].size() == 16);
  CHECK(g.metadata["tokens"][15] == 150);
  CHECK(g.metadata["tokens.__count"] == 20);
  REQUIRE(g.tensors.size() == 1);
  CHECK(g.tensors[0].name == "w");
  CHECK(g.tensors[0].ne == std::vector<uint64_t>{4, 3});
  CHECK(lora::gguf_type_name(g.tensors[0].type) == "F16");
  write_text(path, b.substr(0, b.size() - 5));
  lora::Error e = error_of([&] { lora::gguf_file_read(path); });
  CHECK(e.code() == 1);
  CHECK(contains(e.what(), "unexpected end of file"));
}

TEST_CASE("the GGUF reader: strings that are not UTF-8 read with U+FFFD, so info can print them (found by fuzz_gguf)") {
  std::string b = "GGUF";
  auto u32 = [&](uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [&](uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); };
  auto str = [&](const std::string& s) { u64(s.size()); b += s; };
  u32(3);
  u64(0);
  u64(1);
  str("general.name");
  u32(8);
  str("caf\xc3\xa9 \x9e!");  // a valid two-byte character, then a stray continuation byte
  const std::string path = temp_dir() + "/u.gguf";
  write_text(path, b);
  lora::GgufFile g = lora::gguf_file_read(path);
  CHECK(g.metadata["general.name"] == "caf\xc3\xa9 \xef\xbf\xbd!");
  CHECK(contains(g.metadata.dump(), "general.name"));
}

}  // namespace
