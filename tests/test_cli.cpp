// The command line as a user meets it: help, version, exit codes, and one clear message (never a crash)
// for each bad input tested below. Runs the built binary on the quickstart base model and small files
// the test writes itself.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>

#include "core/data/dataset.h"
#include "core/text/tokenizer.h"
#include "core/train/train_state.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

namespace fs = std::filesystem;

namespace {
const std::string kBase = LORA_SOURCE_DIR "/data/quickstart/base-model";

// A recipe in dir with the given body appended to a working minimal one.
fs::path recipe(const fs::path& dir, const std::string& extra = "", const std::string& model = kBase) {
  write_text(dir / "train.txt",
             "name : The Eagle | Type : pub||The Eagle is a pub . \nname : Aromi | food : Italian||Aromi serves Italian food . \n");
  std::string body = "model:\n  path: " + model + "\n  device: cpu\ndata:\n  train: train.txt\n  cache_dir: " +
                     (dir / "cache").string() + "\n  max_length: 64\ntrain:\n  batch_size: 2\n  max_steps: 2\noutput:\n  dir: " +
                     (dir / "run").string() + "\nlog:\n  progress: none\n" + extra;
  write_text(dir / "recipe.yaml", body);
  return dir / "recipe.yaml";
}

// `lora init` of config.json in d with the tokenizer files of tok_dir (the SentencePiece fixture unless
// given): the model directory d/model.
fs::path init_model(const fs::path& d, const std::string& tok_dir = "") {
  std::string tok = tok_dir;
  if (tok.empty()) {
    fs::create_directories(d / "tok");
    fs::copy_file(LORA_FIXTURES "/tokenizer/sp/tokenizer.model", d / "tok" / "tokenizer.model",
                  fs::copy_options::overwrite_existing);
    tok = (d / "tok").string();
  }
  CliResult init = lora_run("init --config " + (d / "config.json").string() + " --out " + (d / "model").string() +
                            " --tokenizer " + tok + " --seed 3");
  INFO(init.out);
  REQUIRE(init.code == 0);
  return d / "model";
}

}  // namespace

TEST_CASE("version and help") {
  CliResult v = lora_run("--version");
  CHECK(v.code == 0);
  CHECK(contains(v.out, "lora 0."));
  CliResult h = lora_run("--help");
  CHECK(h.code == 0);
  for (const char* sub : {"train", "eval", "generate", "merge", "export"}) CHECK(contains(h.out, sub));
  CliResult th = lora_run("train --help");
  CHECK(th.code == 0);
  for (const char* flag : {"--set", "--resume", "--dry-run", "--print-config", "--output", "--device"})
    CHECK(contains(th.out, flag));
  CHECK(lora_run("").code == 2);
  CHECK(lora_run("train").code == 2);
  CHECK(lora_run("frobnicate").code == 2);
}

TEST_CASE("a missing recipe file is a usage error") {
  CliResult r = lora_run("train /nonexistent/recipe.yaml");
  CHECK(r.code == 2);
  CHECK(contains(r.out, "error: recipe /nonexistent/recipe.yaml does not exist"));
  CHECK(contains(r.out, "hint: check the path"));
  for (const char* cmd : {"validate", "prepare", "eval"}) {
    CAPTURE(cmd);
    r = lora_run(std::string(cmd) + " /nonexistent/recipe.yaml" + (std::string(cmd) == "eval" ? " --adapter x" : ""));
    CHECK(r.code == 2);
    CHECK(contains(r.out, "recipe /nonexistent/recipe.yaml does not exist"));
  }
}

TEST_CASE("unknown recipe key: named, with its line and a suggestion") {
  auto d = scratch_dir("cli-unknown");
  auto r = lora_run("train " + recipe(d, "eval:\n  beam_sise: 4\n").string());
  check_clean_error(r, 2, "beam_sise");
  CHECK(contains(r.out, "beam_size"));
  fs::remove_all(d);
}

TEST_CASE("wrong type: key, line and expected type") {
  auto d = scratch_dir("cli-type");
  auto r = lora_run("train " + recipe(d, "lora:\n  r: eight\n").string());
  check_clean_error(r, 2, "lora.r");
  fs::remove_all(d);
}

TEST_CASE("missing model directory") {
  auto d = scratch_dir("cli-nomodel");
  auto r = lora_run("train " + recipe(d, "", (d / "no-such-model").string()).string());
  INFO(r.out);
  CHECK((r.code == 1 || r.code == 2));
  CHECK(contains(r.out, "no-such-model"));
  CHECK(contains(r.out, "hint:"));
  fs::remove_all(d);
}

TEST_CASE("unsupported model_type, pickled checkpoint, truncated safetensors, wrong tensor shape") {
  auto d = scratch_dir("cli-models");
  // model_type t5
  fs::create_directories(d / "t5");
  write_text(d / "t5" / "config.json", R"({"model_type": "t5", "d_model": 8})");
  auto r = lora_run("train " + recipe(d, "", (d / "t5").string()).string());
  check_clean_error(r, 2, "t5");
  // .bin only
  fs::create_directories(d / "pickled");
  fs::copy_file(kBase + "/config.json", d / "pickled" / "config.json");
  write_text(d / "pickled" / "pytorch_model.bin", "not really a pickle");
  r = lora_run("train " + recipe(d, "", (d / "pickled").string()).string());
  CHECK((r.code == 1 || r.code == 2));
  CHECK(contains(r.out, "pytorch_model.bin"));
  CHECK(contains(r.out, "safe_serialization"));
  // truncated safetensors
  fs::create_directories(d / "trunc");
  fs::copy_file(kBase + "/config.json", d / "trunc" / "config.json");
  {
    std::ifstream in(kBase + "/model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(d / "trunc" / "model.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  r = lora_run("train " + recipe(d, "", (d / "trunc").string()).string());
  check_clean_error(r, 1, "model.safetensors");
  // config claims a wider model than the weights hold
  fs::create_directories(d / "shape");
  fs::copy_file(kBase + "/model.safetensors", d / "shape" / "model.safetensors");
  for (const char* f : {"vocab.json", "merges.txt"}) fs::copy_file(kBase + "/" + f, d / "shape" / f);
  {
    std::ifstream in(kBase + "/config.json");
    std::string cfg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto pos = cfg.find("\"n_embd\": 128");
    REQUIRE(pos != std::string::npos);
    cfg.replace(pos, 13, "\"n_embd\": 256");
    write_text(d / "shape" / "config.json", cfg);
  }
  r = lora_run("train " + recipe(d, "", (d / "shape").string()).string());
  check_clean_error(r, 1, "shape");
  fs::remove_all(d);
}

TEST_CASE("datasets: missing, empty, malformed line, out-of-vocabulary ids") {
  auto d = scratch_dir("cli-data");
  fs::path rec = recipe(d);
  auto r = lora_run("train " + rec.string() + " --set data.train=" + (d / "missing.txt").string());
  check_clean_error(r, 1, "missing.txt");
  write_text(d / "empty.txt", "\n\n");
  r = lora_run("train " + rec.string() + " --set data.train=" + (d / "empty.txt").string());
  INFO(r.out);
  CHECK((r.code == 1 || r.code == 2));
  CHECK(contains(r.out, "empty.txt"));
  write_text(d / "bad.txt", "name : A||A is here . \nthis line has no separator\n");
  r = lora_run("train " + rec.string() + " --set data.train=" + (d / "bad.txt").string());
  INFO(r.out);
  CHECK((r.code == 1 || r.code == 2));
  CHECK(contains(r.out, "bad.txt:2"));
  // A tokenized file whose ids exceed the model's vocabulary (879 tokens).
  lora::DatasetTables t;
  t.tokens = {1, 2, 5000, 878};
  t.offsets = {0, 4};
  t.prompt_lengths = {1};
  t.labels = {NAN};
  t.source_lines = {1};
  t.prompt_texts = {"p"};
  t.completion_texts = {"c"};
  lora::DatasetInfo info;
  info.format = "jsonl";
  info.template_name = lora::dataset_template_name("jsonl");
  info.source_path = "handmade";
  info.source_hash = "fnv1a64:0";
  info.tokenizer_fingerprint = lora::tokenizer_load(kBase)->fingerprint();  // right tokenizer, bad ids
  info.vocab_size = 10000;
  info.eos_id = 878;
  info.max_length = 64;
  info.n_examples = 1;
  info.n_tokens = 4;
  lora::dataset_h5_write((d / "oov.h5").string(), t, info);
  r = lora_run("train " + rec.string() + " --set data.train=" + (d / "oov.h5").string());
  INFO(r.out);
  CHECK((r.code == 1 || r.code == 2));
  CHECK(contains(r.out, "5000"));
  CHECK(!contains(r.out, "terminate called"));
  fs::remove_all(d);
}

TEST_CASE("an output directory that cannot be written") {
  auto d = scratch_dir("cli-out");
  auto r = lora_run("train " + recipe(d).string() + " --output /etc/passwd/run");
  check_clean_error(r, 1, "/etc/passwd/run");
  fs::remove_all(d);
}

TEST_CASE("--print-config and --dry-run") {
  auto d = scratch_dir("cli-dry");
  auto r = lora_run("train " + recipe(d).string() + " --print-config --set train.lr=1e-4");
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(contains(r.out, "lr: 0.0001"));
  r = lora_run("train " + recipe(d).string() + " --dry-run");
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(contains(r.out, "trainable parameters"));
  CHECK(contains(r.out, "lora q"));
  CHECK(contains(r.out, "memory plan"));
  CHECK(contains(r.out, "no loss"));
  CHECK(!fs::exists(d / "run" / "metrics.jsonl"));
  fs::remove_all(d);
}

TEST_CASE("a short run writes the PEFT adapter, metrics and the resolved recipe; a rerun is refused") {
  auto d = scratch_dir("cli-run");
  auto r = lora_run("train " + recipe(d).string());
  INFO(r.out);
  REQUIRE(r.code == 0);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "recipe.yaml"})
    CHECK(fs::exists(d / "run" / f));
  std::ifstream m(d / "run" / "metrics.jsonl");
  std::string line;
  std::getline(m, line);
  for (const char* key : {"\"step\"", "\"loss\"", "\"lr\"", "\"tokens_per_s\"", "\"grad_norm\""}) CHECK(contains(line, key));
  auto again = lora_run("train " + recipe(d).string());
  check_clean_error(again, 2, "already holds a run");
  fs::remove_all(d);
}

TEST_CASE("SIGTERM saves a checkpoint and exits 75; --resume continues from it") {
  auto d = scratch_dir("cli-signal");
  const std::string rec = recipe(d).string();
  // A long run, stopped a second after it starts training, as a cluster scheduler would stop it (waiting
  // for "training on" rather than a fixed time: on a busy machine the start alone can take seconds).
  const fs::path log = d / "signal.log";
  const std::string cmd = "cd " + d.string() + " && (" LORA_BIN " train " + rec +
                          " --set train.max_steps=100000 --set train.schedule=constant </dev/null >" + log.string() +
                          " 2>&1 & pid=$!; for i in $(seq 600); do grep -q 'training on' " + log.string() +
                          " && break; sleep 0.1; done; sleep 1; kill -TERM $pid; wait $pid; exit $?)";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  r.out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  INFO(r.out);
  CHECK(r.code == 75);
  CHECK(contains(r.out, "stopped by signal"));
  CHECK(contains(r.out, "--resume"));
  CHECK(!lora::train_state_latest((d / "run").string()).empty());
  CliResult resumed = lora_run("train " + rec + " --set train.schedule=constant --resume " + (d / "run").string());
  INFO(resumed.out);
  CHECK(resumed.code == 0);
  CHECK(contains(resumed.out, "resuming from"));
  CHECK(fs::exists(d / "run" / "adapter_model.safetensors"));
  fs::remove_all(d);
}

TEST_CASE("SIGTERM during the final evaluation keeps the finished steps; --resume writes the adapter") {
  auto d = scratch_dir("cli-signal-final");
  // The quickstart's model on its training set, evaluated on the same 1,500 examples: the final evaluation
  // takes seconds, time to stop the run inside it once its last step is logged (waited for up to 10 minutes:
  // on a loaded machine the evaluation before the first step alone took 2 minutes).
  const std::string data = LORA_SOURCE_DIR "/data/quickstart/train.txt";
  const std::string rec = recipe(d, "eval:\n  num_samples: 0\n").string();
  const std::string sets = " --set data.train=" + data + " --set data.eval=" + data +
                           " --set train.max_steps=3 --set train.batch_size=4 --set log.progress=plain --set log.every=1"
                           " --set train.eval_every=0";  // only the evaluations before the first step and at the end
  const fs::path log = d / "signal.log";
  const std::string cmd = "cd " + d.string() + " && (" LORA_BIN " train " + rec + sets + " </dev/null >" + log.string() +
                          " 2>&1 & pid=$!; for i in $(seq 6000); do grep -q 'step 3/3' " + log.string() +
                          " && break; sleep 0.1; done; kill -TERM $pid; wait $pid; exit $?)";
  int status = std::system(cmd.c_str());
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const std::string out = lora::file_read(log.string());
  INFO(out);
  REQUIRE(contains(out, "step 3/3"));
  CHECK(code == 75);
  CHECK(contains(out, "stopped by signal 15 at step 3"));
  CHECK(!fs::exists(d / "run" / "adapter_model.safetensors"));
  const std::string latest = lora::train_state_latest((d / "run").string());
  CHECK(fs::path(latest).filename() == "step-00000003");
  CliResult resumed = lora_run("train " + (d / "run" / "recipe.yaml").string() + " --resume " + (d / "run").string());
  INFO(resumed.out);
  CHECK(resumed.code == 0);
  CHECK(contains(resumed.out, "resuming from"));
  CHECK(contains(resumed.out, "eval at step 3"));
  CHECK(fs::exists(d / "run" / "adapter_model.safetensors"));
  fs::remove_all(d);
}

TEST_CASE("a LLaMA-family model with a SentencePiece tokenizer trains and evaluates end to end") {
  // LLaMA; and Mistral with a sliding window of 4 tokens, shorter than every example, which also
  // generates its predictions (KV-cache decoding past the window).
  for (const std::string family : {"llama", "mistral"}) {
    CAPTURE(family);
    const bool mistral = family == "mistral";
    auto d = scratch_dir("cli-" + family);
    write_text(d / "config.json",
               R"({"model_type": ")" + family + R"(", "num_hidden_layers": 2, "hidden_size": 64,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512,
                   "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
                   "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2)" +
                   (mistral ? R"(, "sliding_window": 4})" : "}"));
    init_model(d);
    if (mistral) CHECK(contains(lora_run("info " + (d / "model").string()).out, "causal (sliding window 4)"));
    fs::path rec = recipe(d, "", (d / "model").string());
    CliResult r = lora_run("train " + rec.string() + " --set lora.targets=[q,k,v,o,gate,up,down] --set train.max_steps=3");
    INFO(r.out);
    REQUIRE(r.code == 0);
    std::ifstream cfg(d / "run" / "adapter_config.json");
    std::string text((std::istreambuf_iterator<char>(cfg)), std::istreambuf_iterator<char>());
    CHECK(contains(text, "\"gate_proj\""));
    CHECK(contains(text, "\"fan_in_fan_out\": false"));
    CliResult e = lora_run("eval " + rec.string() + " --adapter " + (d / "run").string() + " --set data.eval=" +
                           (d / "train.txt").string() + (mistral ? " --set eval.max_new_tokens=12" : " --no-generate"));
    INFO(e.out);
    CHECK(e.code == 0);
    CHECK(contains(e.out, "perplexity"));
    if (mistral) CHECK(fs::exists(d / "run" / "eval-eval" / "predictions.txt"));
    fs::remove_all(d);
  }
}

TEST_CASE("Qwen2 and LLaMA 3 tokenizer.json layouts: init, info, validate and train end to end") {
  // The fixture tokenizers (tests/fixtures/tokenizer/qwen2, llama3: 1003 and 1015 ids) on tiny models with
  // a vocabulary of 1024 rows, as real checkpoints pad theirs. LLaMA 3's <|begin_of_text|> (id 1004) goes
  // before every example; Qwen2 puts none.
  struct Case {
    const char* tokenizer;
    const char* model_type;
    const char* kind;
    int eos, bos;
  };
  for (const Case& c : {Case{"qwen2", "qwen2", "qwen2-bpe", 1000, -1}, Case{"llama3", "llama", "llama3-bpe", 1005, 1004}}) {
    const std::string name = c.tokenizer;  // a std::string: doctest prints a const char* as an address
    CAPTURE(name);
    auto d = scratch_dir("cli-" + name);
    write_text(d / "config.json",
               std::string(R"({"model_type": ")") + c.model_type + R"(", "num_hidden_layers": 2, "hidden_size": 64,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1024,
                   "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
                   "tie_word_embeddings": false, "hidden_act": "silu", "eos_token_id": )" +
                   std::to_string(c.eos) + "}");
    init_model(d, std::string(LORA_FIXTURES) + "/tokenizer/" + c.tokenizer);
    CHECK(fs::exists(d / "model" / "tokenizer.json"));

    std::string described = std::string(c.kind) + ", " + (c.bos < 0 ? "1003" : "1015") + " tokens, eos " +
                            std::to_string(c.eos) + (c.bos < 0 ? "" : ", bos " + std::to_string(c.bos)) +
                            " (tokenizer.json, tokenizer_config.json)";
    CliResult info = lora_run("info " + (d / "model").string());
    INFO(info.out);
    CHECK(info.code == 0);
    CHECK(contains(info.out, described));
    CliResult info_json = lora_run("info " + (d / "model").string() + " --json");
    CHECK(contains(info_json.out, "\"kind\": \"" + std::string(c.kind) + "\""));
    CHECK(contains(info_json.out, "\"bos_id\": " + std::to_string(c.bos)));

    fs::path rec = recipe(d, "", (d / "model").string());
    CliResult v = lora_run("validate " + rec.string());
    INFO(v.out);
    CHECK(v.code == 0);
    CHECK(contains(v.out, std::string(c.kind) + " from " + (d / "model").string()));
    CHECK(contains(v.out, c.bos < 0 ? "eos " + std::to_string(c.eos) + "\n"
                                    : ", bos " + std::to_string(c.bos) + " before every example"));

    CliResult r = lora_run("train " + rec.string() + " --set lora.targets=[q,k,v,o,gate,up,down] --set train.max_steps=3");
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(contains(r.out, "checkpoints/step-00000003"));
    CHECK(fs::exists(d / "run" / "adapter_model.safetensors"));
    // The tokenized examples begin with the BOS where the tokenizer has one.
    std::string h5;
    for (const auto& e : fs::directory_iterator(d / "cache"))
      if (e.path().extension() == ".h5") h5 = e.path().string();
    REQUIRE(!h5.empty());
    lora::Dataset data = lora::Dataset::open(h5, 1024);
    REQUIRE(data.size() == 2);
    auto first = lora::tokenizer_load(std::string(LORA_FIXTURES) + "/tokenizer/" + c.tokenizer)
                     ->encode("name : The Eagle | Type : pub");
    if (c.bos >= 0) first.insert(first.begin(), c.bos);
    for (size_t i = 0; i < first.size(); ++i) CHECK(data.tokens(0).begin()[i] == first[i]);
    CHECK(data.prompt_length(0) == int32_t(first.size()) + 1);  // and the EOS after the meaning representation
    fs::remove_all(d);
  }
}

TEST_CASE("examples longer than the model's positions stop train, prepare and validate before any step") {
  auto d = scratch_dir("cli-positions");
  write_text(d / "config.json",
             R"({"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                 "intermediate_size": 64, "vocab_size": 512, "max_position_embeddings": 8, "hidden_act": "silu",
                 "bos_token_id": 1, "eos_token_id": 2})");
  init_model(d);
  const fs::path rec = recipe(d, "", (d / "model").string());  // data.max_length 64, examples > 8 tokens
  for (const char* cmd : {"train", "prepare", "validate"}) {
    CAPTURE(cmd);
    CliResult r = lora_run(std::string(cmd) + " " + rec.string());
    INFO(r.out);
    CHECK(r.code == 2);
    CHECK(contains(r.out, "train.txt: examples of up to "));
    CHECK(contains(r.out, "tokens, but the model has 8 positions (data.max_length is 64)"));
    CHECK(contains(r.out, "lower data.max_length to at most 8"));
    CHECK(!contains(r.out, "step 1"));
  }
  CHECK(!fs::exists(d / "run" / "checkpoints"));
  fs::remove_all(d);
}

}  // namespace
