// `lora eval` end to end with the built binary: a tiny random GPT-2 (lora init, the quickstart's
// tokenizer), two training steps to get an adapter, then eval.json, the official scorer's files, the
// table, and one clear error for each bad input (missing adapter, adapter of another model, a split
// without data, an unknown split, a METEOR jar that is not there). METEOR itself runs where Java and its jar
// are found (tests/meteor_test_util.h) and is reported skipped elsewhere.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/metrics.h"
#include "tests/meteor_test_util.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kTokenizer = LORA_SOURCE_DIR "/data/quickstart/model-tokenizer";

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The scratch setup, built once: a random model, E2E files, a recipe and a 2-step adapter.
struct Setup {
  fs::path dir, recipe, adapter;
  std::vector<std::string> sources;               // distinct MRs of eval.txt, in order
  std::vector<std::vector<std::string>> groups;   // their references
  std::string train_log;
  bool ok = false;
};

const Setup& setup() {
  static Setup s = [] {
    Setup x;
    x.dir = temp_dir();  // removed when the test binary exits
    write_text(x.dir / "config.json",
               R"({"model_type": "gpt2", "vocab_size": 879, "n_positions": 96, "n_embd": 48, "n_layer": 2,
                   "n_head": 2, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
                   "bos_token_id": 878, "eos_token_id": 878, "tie_word_embeddings": true})");
    CliResult init = lora_run("init --config " + (x.dir / "config.json").string() + " --out " +
                              (x.dir / "base").string() + " --tokenizer " + kTokenizer + " --seed 3");
    if (init.code != 0) {
      x.train_log = init.out;
      return x;
    }
    // Three meaning representations with 3, 1 and 2 references, interleaved: grouping is by MR text.
    const char* a = "name : The Eagle | Type : pub | area : riverside";
    const char* b = "name : Aromi | food : Italian";
    const char* c = "name : Zizzi | Type : coffee shop | family friendly : yes";
    x.sources = {a, b, c};
    x.groups = {{"The Eagle is a pub in the riverside area .", "There is a pub called The Eagle by the river .",
                 "The Eagle , a riverside pub ."},
                {"Aromi serves Italian food ."},
                {"Zizzi is a family - friendly coffee shop .", "Zizzi is a coffee shop that welcomes children ."}};
    std::string eval = std::string(a) + "||" + x.groups[0][0] + " \n" + b + "||" + x.groups[1][0] + " \n" + a + "||" +
                       x.groups[0][1] + " \n" + c + "||" + x.groups[2][0] + " \n\n" + a + "||" + x.groups[0][2] +
                       " \n" + c + "||" + x.groups[2][1] + " \n";
    write_text(x.dir / "eval.txt", eval);
    write_text(x.dir / "train.txt", std::string(b) + "||Aromi is an Italian place . \n" + c +
                                        "||Zizzi is a coffee shop for families . \n");
    write_text(x.dir / "recipe.yaml",
               "model:\n  path: base\n  device: cpu\nlora:\n  r: 4\n  alpha: 8\ndata:\n  train: train.txt\n"
               "  eval: eval.txt\n  max_length: 64\n  cache_dir: " + (x.dir / "cache").string() +
               "\ntrain:\n  batch_size: 2\n  max_steps: 2\n  lr: 1e-2\neval:\n  batch_size: 2\n  max_new_tokens: 6\n"
               "  num_samples: 0\noutput:\n  dir: " + (x.dir / "run").string() + "\nlog:\n  progress: none\n");
    x.recipe = x.dir / "recipe.yaml";
    x.adapter = x.dir / "run";
    CliResult train = lora_run("train " + x.recipe.string());
    x.train_log = train.out;
    x.ok = train.code == 0 && fs::exists(x.adapter / "adapter_config.json");
    return x;
  }();
  return s;
}

}  // namespace

TEST_CASE("lora eval writes eval.json, the official scorer's files and a table") {
  const Setup& s = setup();
  INFO(s.train_log);
  REQUIRE(s.ok);
  // No METEOR jar (an empty LORA_METEOR_JAR counts as unset): METEOR is null and the note says how to get it.
  CliResult r = lora_run("eval " + s.recipe.string() + " --adapter " + s.adapter.string(), "LORA_METEOR_JAR=");
  INFO(r.out);
  REQUIRE(r.code == 0);
  for (const char* row : {"loss", "perplexity", "token accuracy", "BLEU", "NIST", "ROUGE-L", "CIDEr", "METEOR"})
    CHECK(contains(r.out, row));
  CHECK(contains(r.out, "METEOR           not computed: set eval.meteor_jar or LORA_METEOR_JAR"));
  const fs::path out = s.adapter / "eval-eval";
  json j = json::parse(read_text(out / "eval.json"));
  CHECK(j["split"] == "eval");
  CHECK(j["examples"] == 6);
  const double loss = j["loss"].get<double>();
  CHECK(std::isfinite(loss));
  CHECK(loss > 0);
  CHECK(j["perplexity"].get<double>() == doctest::Approx(std::exp(loss)).epsilon(1e-9));
  CHECK(j["token_accuracy"].get<double>() >= 0);
  CHECK(j["token_accuracy"].get<double>() <= 1);
  CHECK(j["generation"]["meaning_representations"] == 3);
  CHECK(j["generation"]["references"] == 6);
  CHECK(j["generation"]["max_new_tokens"] == 6);
  CHECK(j["metrics"]["meteor"].is_null());
  CHECK(contains(j["metrics_note"].get<std::string>(), "METEOR is not computed: "));
  CHECK(contains(j["metrics_note"].get<std::string>(), "pip install pycocoevalcap"));
  CHECK(contains(j["metrics_note"].get<std::string>(), "/meteor/meteor-1.5.jar"));
  CHECK(!j["generation"].contains("meteor_jar"));

  // The files: one prediction a line; reference groups in MR order, separated by blank lines.
  std::vector<std::string> preds = lines_of(read_text(out / "predictions.txt"));
  REQUIRE(preds.size() == 3);
  std::string expected_refs;
  for (size_t g = 0; g < s.groups.size(); ++g) {
    if (g) expected_refs += "\n";
    for (const auto& ref : s.groups[g]) expected_refs += ref + "\n";
  }
  CHECK(read_text(out / "references.txt") == expected_refs);
  CHECK(lines_of(read_text(out / "sources.txt")) == s.sources);

  // eval.json's metrics are those of the files it wrote.
  lora::TextMetrics m = lora::metrics_text(preds, s.groups);
  CHECK(j["metrics"]["bleu"].get<double>() == doctest::Approx(m.bleu));
  CHECK(j["metrics"]["nist"].get<double>() == doctest::Approx(m.nist));
  CHECK(j["metrics"]["rouge_l"].get<double>() == doctest::Approx(m.rouge_l));
  CHECK(j["metrics"]["cider"].get<double>() == doctest::Approx(m.cider));
}

TEST_CASE("lora generate continues prompts exactly as lora eval generates its predictions") {
  const Setup& s = setup();
  INFO(s.train_log);
  REQUIRE(s.ok);
  const fs::path out = s.dir / "gen-eval";
  CliResult e = lora_run("eval " + s.recipe.string() + " --adapter " + s.adapter.string() + " --out " + out.string(),
                         "LORA_METEOR_JAR=");
  INFO(e.out);
  REQUIRE(e.code == 0);
  const std::vector<std::string> preds = lines_of(read_text(out / "predictions.txt"));
  REQUIRE(preds.size() == s.sources.size());
  std::string file;
  for (const auto& src : s.sources) file += src + "\n\n";  // blank lines are skipped
  write_text(s.dir / "prompts.txt", file);
  CliResult g = lora_run("generate " + s.recipe.string() + " --adapter " + s.adapter.string() + " --prompts " +
                         (s.dir / "prompts.txt").string());
  INFO(g.out);
  REQUIRE(g.code == 0);
  std::vector<std::string> lines;
  for (const auto& line : lines_of(g.out))
    if (line.rfind("notice:", 0) != 0) lines.push_back(line);
  CHECK(lines == preds);
  // --prompt, --json: the same text, with the prompt and the token ids.
  CliResult j = lora_run("generate " + s.recipe.string() + " --adapter " + s.adapter.string() + " --json --prompt '" +
                         s.sources[1] + "'");
  INFO(j.out);
  REQUIRE(j.code == 0);
  json row;
  for (const auto& line : lines_of(j.out))
    if (!line.empty() && line[0] == '{') row = json::parse(line);
  CHECK(row["prompt"] == s.sources[1]);
  CHECK(row["generated"] == preds[1]);
  CHECK(row["tokens"].size() <= 6);  // eval.max_new_tokens
  // The base alone generates too; no prompt, or a directory without an adapter, is a clear error.
  CHECK(lora_run("generate " + s.recipe.string() + " --prompt '" + s.sources[0] + "'").code == 0);
  check_clean_error(lora_run("generate " + s.recipe.string()), 2, "no prompts given");
  check_clean_error(lora_run("generate " + s.recipe.string() + " --adapter " + s.dir.string() + " --prompt x"), 2,
                    "holds no adapter_config.json");
}

TEST_CASE("lora eval: --out, --limit, --no-generate, --split train") {
  const Setup& s = setup();
  REQUIRE(s.ok);
  const fs::path out = s.dir / "limited";
  CliResult r = lora_run("eval " + s.recipe.string() + " --adapter " + s.adapter.string() + " --out " + out.string() +
                         " --limit 2");
  INFO(r.out);
  REQUIRE(r.code == 0);
  json j = json::parse(read_text(out / "eval.json"));
  CHECK(j["generation"]["meaning_representations"] == 2);
  CHECK(lines_of(read_text(out / "predictions.txt")).size() == 2);

  const fs::path out2 = s.dir / "loss-only";
  r = lora_run("eval " + s.recipe.string() + " --adapter " + s.adapter.string() + " --out " + out2.string() +
               " --no-generate --split train");
  REQUIRE(r.code == 0);
  j = json::parse(read_text(out2 / "eval.json"));
  CHECK(j["split"] == "train");
  CHECK(j["examples"] == 2);
  CHECK(!j.contains("metrics"));
  CHECK(!fs::exists(out2 / "predictions.txt"));
}

TEST_CASE("lora eval: bad inputs give one clear error") {
  const Setup& s = setup();
  REQUIRE(s.ok);
  const std::string rec = s.recipe.string();
  check_clean_error(lora_run("eval " + rec + " --adapter " + (s.dir / "no-such-dir").string()), 1, "does not exist");
  // The golden adapter belongs to a model with n_embd 32; ours has 48.
  check_clean_error(lora_run("eval " + rec + " --adapter " LORA_FIXTURES "/golden/adapter --out " + (s.dir / "x").string()),
                    2, "shape");
  check_clean_error(lora_run("eval " + rec + " --adapter " + s.adapter.string() + " --set data.eval="), 2,
                    "no data for split 'eval'");
  CliResult bad_split = lora_run("eval " + rec + " --adapter " + s.adapter.string() + " --split test");
  CHECK(bad_split.code == 2);
  CHECK(contains(bad_split.out, "--split"));
  // A directory without an adapter in it.
  check_clean_error(lora_run("eval " + rec + " --adapter " + s.dir.string()), 2, "adapter_config.json");
  // A METEOR jar that is not there stops eval before generation, and writes nothing.
  const fs::path no_jar_out = s.dir / "no-jar";
  check_clean_error(lora_run("eval " + rec + " --adapter " + s.adapter.string() + " --out " + no_jar_out.string(),
                             "LORA_METEOR_JAR=" + (s.dir / "nowhere" / "meteor-1.5.jar").string()),
                    1, "(LORA_METEOR_JAR) does not exist");
  CHECK(!fs::exists(no_jar_out / "predictions.txt"));
}

TEST_CASE("lora eval computes METEOR with the jar named by eval.meteor_jar") {
  std::string why;
  const std::string jar = meteor_test_jar(&why);
  if (jar.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  const Setup& s = setup();
  REQUIRE(s.ok);
  const fs::path out = s.dir / "meteor";
  CliResult r = lora_run("eval " + s.recipe.string() + " --adapter " + s.adapter.string() + " --out " + out.string() +
                             " --set eval.meteor_jar=" + jar,
                         "LORA_METEOR_JAR=");
  INFO(r.out);
  REQUIRE(r.code == 0);
  json j = json::parse(read_text(out / "eval.json"));
  REQUIRE(j["metrics"]["meteor"].is_number());
  const double meteor = j["metrics"]["meteor"].get<double>();
  CHECK(meteor >= 0);
  CHECK(meteor <= 1);
  // The recipe's path, as recipes store paths: relative to the current directory (lora_run_dir()) when below it.
  const std::string recorded = j["generation"]["meteor_jar"].get<std::string>();
  CHECK(fs::equivalent(fs::path(lora_run_dir()) / recorded, jar));
  CHECK(contains(j["metrics_note"].get<std::string>(), "METEOR by METEOR 1.5's jar (" + recorded + ")"));
  char row[64];
  std::snprintf(row, sizeof row, "METEOR           %.4f", meteor);
  CHECK(contains(r.out, row));
  // (Two training steps of a random model generate noise, METEOR about 0: the numbers themselves are checked
  // against pycocoevalcap in test_golden_meteor.cpp.)
}

}  // namespace
