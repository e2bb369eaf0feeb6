// Recipes (core/session/recipe.h): defaults, a full recipe, every error kind with its message content, errors
// reported together, --set overrides, number syntax, path resolution and the recipe_to_yaml round trip.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/error.h"
#include "core/session/recipe.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {

// The lora::Error that parsing `text` (as "r.yaml") with `overrides` throws; fails the test if none.
Error parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    recipe_parse(text, "r.yaml", overrides);
  } catch (const Error& e) {
    return e;
  }
  FAIL_CHECK("recipe_parse accepted:\n" << text);
  return Error(0, "");
}

Error validate_error(const Recipe& recipe) {
  try {
    recipe_validate(recipe);
  } catch (const Error& e) {
    return e;
  }
  FAIL_CHECK("recipe_validate accepted the recipe");
  return Error(0, "");
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

int count_lines(const std::string& text) {
  int n = 1;
  for (char c : text) n += c == '\n';
  return n;
}

const char* MINIMAL = "model:\n  path: models/gpt2\ndata:\n  train: data/train.txt\n";

const char* FULL = R"(# every key, none at its default
model:
  path: models/gpt2-medium
  device: cuda
  dtype: bf16
  num_labels: 3
  hidden_dropout: 0.1
  attention_dropout: 0.05
lora:
  mode: lora
  r: 4
  alpha: 32
  dropout: 0.1
  rslora: true
  targets: [q, v, c_fc]
  layers: [0, 2, 4]
  init_seed: 7
  init_from: runs/mnli
data:
  train: data/e2e/train.txt
  eval: data/e2e/valid.txt
  format: e2e
  tokenizer: tok
  max_length: 256
  cache_dir: cache
  text_fields: [premise, hypothesis]
  label_field: gold_label
  label_names: [entailment, neutral, contradiction]
train:
  lr: 2e-4
  beta1: 0.8
  beta2: 0.99
  eps: 1e-6
  weight_decay: 0.1
  schedule: cosine
  warmup_steps: 500
  warmup_ratio: 0
  batch_size: 4
  grad_accum: 2
  epochs: 5
  max_steps: 1000
  clip_grad_norm: 0.5
  nonfinite: skip
  nonfinite_skips: 5
  label_smoothing: 0.1
  seed: 1
  precision: fp16
  recompute: true
  eval_every: 100
  eval_batches: 10
eval:
  batch_size: 16
  max_new_tokens: 32
  beam_size: 10
  length_penalty: 0.8
  no_repeat_ngram_size: 4
  num_samples: 5
  glue_task: mnli
  meteor_jar: coco/meteor/meteor-1.5.jar
output:
  dir: runs/e2e
  save_every: 200
  keep_last: 3
  overwrite: true
log:
  every: 5
  progress: plain
)";

// Runs the test body in a fresh temporary directory, restoring the current directory afterwards.
struct TempCwd {
  fs::path old = fs::current_path();
  fs::path dir;
  TempCwd() {
    dir = fs::temp_directory_path() / ("lora_test_recipe_" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::current_path(dir);
  }
  ~TempCwd() {
    fs::current_path(old);
    fs::remove_all(dir);
  }
};

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path().empty() ? "." : path.parent_path());
  std::ofstream(path) << text;
}

}  // namespace

TEST_CASE("defaults: a recipe holds only what it changes") {
  Recipe r = recipe_parse(MINIMAL, "r.yaml");
  CHECK(r.model.path == "models/gpt2");
  CHECK(r.data.train == "data/train.txt");
  CHECK(r.model.device == "auto");
  CHECK(r.lora.r == 8);
  CHECK(r.lora.alpha == 16.0);
  CHECK(r.lora.targets == std::vector<std::string>{"q", "v"});
  CHECK(r.lora.layers.empty());
  CHECK(r.train.lr == 2e-4);
  CHECK(r.train.schedule == "linear");
  CHECK(r.train.batch_size == 8);
  CHECK(r.data.max_length == 512);
  CHECK(r.data.cache_dir == ".lora-cache");
  CHECK(r.output.dir == "runs/lora");
  CHECK(r.log.progress == "auto");
  CHECK(r.source == "r.yaml");
  CHECK(r.origin.at("model.path") == "r.yaml:2");
  CHECK(r.origin.at("data.train") == "r.yaml:4");
  CHECK(r.origin.count("train.lr") == 0);
  recipe_validate(r);

  Recipe defaults;
  defaults.model.path = "models/gpt2";
  defaults.data.train = "data/train.txt";
  CHECK(r == defaults);
  defaults.train.lr = 1e-3;
  CHECK(r != defaults);
}

TEST_CASE("a full recipe sets every key") {
  Recipe r = recipe_parse(FULL, "r.yaml");
  recipe_validate(r);
  Recipe defaults;
  std::vector<RecipeField> got = recipe_fields(r), def = recipe_fields(defaults);
  REQUIRE(got.size() == def.size());
  CHECK(r.origin.size() == got.size());  // every key came from the file
  CHECK(r.model.device == "cuda");
  CHECK(r.model.dtype == "bf16");
  CHECK(r.lora.r == 4);
  CHECK(r.lora.alpha == 32.0);
  CHECK(r.model.hidden_dropout == 0.1);
  CHECK(r.model.attention_dropout == 0.05);
  CHECK(r.lora.dropout == 0.1);
  CHECK(r.lora.rslora);
  CHECK(r.lora.targets == std::vector<std::string>{"q", "v", "c_fc"});
  CHECK(r.lora.layers == std::vector<int>{0, 2, 4});
  CHECK(r.lora.init_seed == 7);
  CHECK(r.lora.init_from == "runs/mnli");
  CHECK(r.data.eval == "data/e2e/valid.txt");
  CHECK(r.data.tokenizer == "tok");
  CHECK(r.train.eps == 1e-6);
  CHECK(r.train.schedule == "cosine");
  CHECK(r.train.warmup_steps == 500);
  CHECK(r.train.recompute);
  CHECK(r.train.nonfinite == "skip");
  CHECK(r.train.nonfinite_skips == 5);
  CHECK(r.eval.length_penalty == 0.8);
  CHECK(r.output.overwrite);
  CHECK(r.log.every == 5);
  CHECK(r.model.num_labels == 3);
  CHECK(r.data.text_fields == std::vector<std::string>{"premise", "hypothesis"});
  CHECK(r.data.label_field == "gold_label");
  CHECK(r.data.label_names.size() == 3);
  CHECK(r.eval.glue_task == "mnli");
  CHECK(r.eval.meteor_jar == "coco/meteor/meteor-1.5.jar");
  CHECK(r.origin.at("log.progress") == "r.yaml:67");
}

TEST_CASE("numbers: 1e-4 is a float, a float key takes an integer, an integer key rejects 1.5") {
  Recipe r = recipe_parse(
      "train:\n  lr: 1e-4\n  eps: 1E-5\n  warmup_ratio: .5\n  weight_decay: 3\n  beta1: +0.5\n", "r.yaml");
  CHECK(r.train.lr == 1e-4);
  CHECK(r.train.eps == 1e-5);
  CHECK(r.train.warmup_ratio == 0.5);
  CHECK(r.train.weight_decay == 3.0);
  CHECK(r.train.beta1 == 0.5);
  CHECK(recipe_parse("train:\n  lr: 2e-4\n", "r.yaml").train.lr == 2e-4);
  CHECK(recipe_parse("train:\n  seed: -3\n", "r.yaml").train.seed == -3);

  Error e = parse_error("train:\n  epochs: 1.5\n");
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.what(), "r.yaml:2: train.epochs: expected an integer, found 1.5"));
  e = parse_error("train:\n  max_steps: 1e4\n");
  CHECK(contains(e.what(), "expected an integer, found 1e4"));
  CHECK(contains(e.hint(), "10000"));
  e = parse_error("train:\n  seed: 99999999999\n");
  CHECK(contains(e.what(), "train.seed: out of range (-2147483648 to 2147483647), found 99999999999"));
  CHECK(recipe_parse("train:\n  lr: 1.\n  eps: +.5e+3\n", "r.yaml").train.eps == 500.0);
  for (const char* bad : {"lr: .inf", "lr: nan", "lr: 0x10", "lr: 1e999", "lr: 1_000", "lr: 1e", "lr: e5",
                          "lr: +", "lr: .", "lr: 1.2.3", "lr: 1e-4x"}) {
    e = parse_error(std::string("train:\n  ") + bad + "\n");
    CHECK_MESSAGE(contains(e.what(), "train.lr: expected a number"), std::string(e.what()));
  }
}

TEST_CASE("type errors name the file, line, key, expected type and found value") {
  Error e = parse_error("model:\n  path: m\ntrain:\n  lr: fast\n");
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(std::string(e.what()) == "r.yaml:4: train.lr: expected a number, found 'fast'");
  CHECK(!e.hint().empty());

  e = parse_error("train:\n  lr: \"2e-4\"\n");
  CHECK(contains(e.what(), "train.lr: expected a number, found the quoted string \"2e-4\""));
  CHECK(contains(e.hint(), "quotes"));

  e = parse_error("lora:\n  r: [4]\n");
  CHECK(contains(e.what(), "r.yaml:2: lora.r: expected an integer, found a list"));

  e = parse_error("lora:\n  rslora: yes\n");
  CHECK(contains(e.what(), "r.yaml:2: lora.rslora: expected true or false, found 'yes'"));
  CHECK(contains(e.hint(), "true or false"));
  for (const char* bad : {"True", "on", "1", "\"true\""}) {
    e = parse_error(std::string("output:\n  overwrite: ") + bad + "\n");
    CHECK(contains(e.what(), "output.overwrite: expected true or false"));
  }

  e = parse_error("model:\n  path: [a, b]\n");
  CHECK(contains(e.what(), "model.path: expected a string, found a list"));

  e = parse_error("lora:\n  targets: q\n");
  CHECK(contains(e.what(), "lora.targets: expected a list of strings, found 'q'"));
  CHECK(contains(e.hint(), "[q, v]"));

  e = parse_error("lora:\n  layers: [0, one, 2.5]\n");
  CHECK(contains(e.what(), "lora.layers[1]: expected an integer, found 'one'"));
  CHECK(contains(e.what(), "lora.layers[2]: expected an integer, found 2.5"));

  e = parse_error("train:\n  batch_size:\n");
  CHECK(contains(e.what(), "train.batch_size: expected an integer, found nothing"));

  e = parse_error("model:\n  path: \"a\\0b\"\n");  // a NUL inside a path
  CHECK(contains(e.what(), "model.path: contains a control character: \"a\\x00b\""));
  e = parse_error("train:\n  lr: " + std::string(200, 'x') + "\n");
  CHECK(contains(e.what(), "found '" + std::string(60, 'x') + "...'"));
  CHECK(std::string(e.what()).size() < 120);

  e = parse_error("train: 5\n");
  CHECK(contains(e.what(), "r.yaml:1: train: expected a mapping of keys, found 5"));

  e = parse_error("- model\n- data\n");
  CHECK(contains(e.what(), "a recipe is a mapping of sections"));
}

TEST_CASE("unknown keys name the key, its line and the closest valid key") {
  Error e = parse_error("model:\n  path: m\ntrain:\n  lr: 1e-4\n  bach_size: 4\n");
  CHECK(std::string(e.what()) ==
        "r.yaml:5: unknown key 'bach_size' in section 'train'; did you mean 'batch_size'?");
  e = parse_error("train:\n  zzzzzzzz: 1\n");
  CHECK(contains(e.hint(), "keys of train: lr beta1"));

  e = parse_error("train:\n  learning_rate: 1e-4\n");  // another tool's name
  CHECK(contains(e.what(), "r.yaml:2: unknown key 'learning_rate' in section 'train'; did you mean 'lr'?"));

  e = parse_error("train:\n  dropout: 0.1\n");  // a key of another section
  CHECK(contains(e.what(), "did you mean 'lora.dropout'"));

  e = parse_error("lora:\n  lr: 1e-4\n");  // an exact key elsewhere beats 'r' nearby
  CHECK(contains(e.what(), "did you mean 'train.lr'"));

  e = parse_error("lora:\n  target_modules: [q_proj]\n");
  CHECK(contains(e.what(), "did you mean 'targets'?"));

  e = parse_error("lora:\n  lora_path: runs/mnli\n");  // the LoRA reference scripts' flag
  CHECK(contains(e.what(), "did you mean 'init_from'?"));

  e = parse_error("train:\n  warmup: 100\n");
  CHECK(contains(e.what(), "did you mean 'warmup_steps'?"));

  e = parse_error("train:\n  zzzzzzzz: 1\n");
  CHECK(contains(e.what(), "unknown key 'zzzzzzzz' in section 'train'"));
  CHECK(!contains(e.what(), "did you mean"));

  e = parse_error("model:\n  path: m\ntrian:\n  lr: 1\n");
  CHECK(std::string(e.what()) == "r.yaml:3: unknown section 'trian'; did you mean 'train'?");

  e = parse_error("lr: 1e-4\n");  // a key outside its section
  CHECK(contains(e.what(), "r.yaml:1: unknown section 'lr'; did you mean 'train.lr'"));

  e = parse_error("train.lr: 1e-4\n");
  CHECK(contains(e.what(), "unknown section 'train.lr'; did you mean 'train.lr' nested under its section?"));
}

TEST_CASE("duplicate keys are errors") {
  Error e = parse_error("train:\n  lr: 1\n  lr: 2\n");
  CHECK(contains(e.what(), "r.yaml:3: train.lr: appears twice (first at line 2)"));
  e = parse_error("train:\n  lr: 1\ntrain:\n  seed: 2\n");
  CHECK(contains(e.what(), "r.yaml:3: section 'train' appears twice"));
}

TEST_CASE("all errors of a file are reported together, one a line") {
  Error e = parse_error(
      "model:\n"
      "  pth: m\n"  // 2: unknown key
      "lora:\n"
      "  r: 1.5\n"      // 4: int rejects 1.5
      "  rslora: no\n"  // 5: bool
      "trian:\n"        // 6: unknown section
      "  lr: 1\n"
      "train:\n"
      "  lr: [1]\n",     // 9: list for a number
      {"train.sed=3"});  // an unknown override
  std::string msg = e.what();
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(msg, "6 problems in recipe r.yaml:"));
  CHECK(count_lines(msg) == 7);
  CHECK(contains(msg, "\n  r.yaml:2: unknown key 'pth' in section 'model'; did you mean 'path'?"));
  CHECK(contains(msg, "\n  r.yaml:4: lora.r: expected an integer, found 1.5"));
  CHECK(contains(msg, "\n  r.yaml:5: lora.rslora: expected true or false, found 'no'"));
  CHECK(contains(msg, "\n  r.yaml:6: unknown section 'trian'; did you mean 'train'?"));
  CHECK(contains(msg, "\n  r.yaml:9: train.lr: expected a number, found a list"));
  CHECK(contains(msg, "\n  --set 'train.sed=3': unknown key 'train.sed'; did you mean 'train.seed'?"));
  CHECK(msg.find("r.yaml:2") < msg.find("r.yaml:9"));  // in file order
}

TEST_CASE("--set overrides: scalars, lists, nesting, unknown keys") {
  Recipe r = recipe_parse(MINIMAL, "r.yaml",
                          {"train.lr=1e-3", "lora.targets=[q, k, v]", "lora.layers=0,1", "lora.rslora=true",
                           "model.device=cpu", "train.seed=5", "train.seed=6"});
  CHECK(r.train.lr == 1e-3);
  CHECK(r.lora.targets == std::vector<std::string>{"q", "k", "v"});
  CHECK(r.lora.layers == std::vector<int>{0, 1});
  CHECK(r.lora.rslora);
  CHECK(r.model.device == "cpu");
  CHECK(r.train.seed == 6);  // the last one wins
  CHECK(r.origin.at("train.lr") == "--set 'train.lr=1e-3'");

  CHECK(recipe_parse(MINIMAL, "r.yaml", {"lora.targets=q_proj"}).lora.targets ==
        std::vector<std::string>{"q_proj"});
  CHECK(recipe_parse(MINIMAL, "r.yaml", {"lora.layers=[]"}).lora.layers.empty());
  CHECK(recipe_parse(MINIMAL, "r.yaml", {"data.eval="}).data.eval.empty());
  // A string value is taken verbatim: '#' and ': ' are not YAML here.
  CHECK(recipe_parse(MINIMAL, "r.yaml", {"model.path=my model #2"}).model.path == "my model #2");
  CHECK(recipe_parse(MINIMAL, "r.yaml", {"model.path=\"quoted\""}).model.path == "quoted");

  Error e = parse_error(MINIMAL, {"train.lrr=1"});
  CHECK(std::string(e.what()) == "--set 'train.lrr=1': unknown key 'train.lrr'; did you mean 'train.lr'?");
  e = parse_error(MINIMAL, {"lr=1"});
  CHECK(contains(e.what(), "unknown key 'lr'; did you mean 'train.lr'?"));
  e = parse_error(MINIMAL, {"train.learning_rate=1"});
  CHECK(contains(e.what(), "did you mean 'train.lr'?"));
  e = parse_error(MINIMAL, {"lora.lr=1"});
  CHECK(contains(e.what(), "did you mean 'train.lr'"));
  e = parse_error(MINIMAL, {"trian.lr=1"});
  CHECK(contains(e.what(), "did you mean 'train.lr'?"));
  e = parse_error(MINIMAL, {"train.lr"});
  CHECK(contains(e.what(), "--set 'train.lr': expected KEY=VALUE"));
  e = parse_error(MINIMAL, {"=1"});
  CHECK(contains(e.what(), "expected KEY=VALUE"));
  e = parse_error(MINIMAL, {"train=1"});
  CHECK(contains(e.what(), "'train' is a section"));
  e = parse_error(MINIMAL, {"train.lr=abc"});
  CHECK(std::string(e.what()) == "--set 'train.lr=abc': train.lr: expected a number, found 'abc'");
  e = parse_error(MINIMAL, {"train.epochs=2.5"});
  CHECK(contains(e.what(), "train.epochs: expected an integer, found 2.5"));
  e = parse_error(MINIMAL, {"train.lr=[1"});
  CHECK(contains(e.what(), "--set 'train.lr=[1': cannot read the value"));
}

TEST_CASE("recipe_load: missing, unreadable, empty, syntax errors") {
  TempCwd tmp;
  Error e(0, "");
  try {
    recipe_load("nope.yaml");
  } catch (const Error& x) {
    e = x;
  }
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.what(), "recipe nope.yaml does not exist"));

  fs::create_directory("adir");
  try {
    recipe_load("adir");
  } catch (const Error& x) {
    e = x;
  }
  CHECK(contains(e.what(), "adir is a directory"));

  write_file("empty.yaml", "# nothing but a comment\n\n");
  try {
    recipe_load("empty.yaml");
  } catch (const Error& x) {
    e = x;
  }
  CHECK(contains(e.what(), "recipe empty.yaml is empty"));

  write_file("bad.yaml", "model:\n  path: m\nlora:\n  targets: [q, v\n  r: 4\n");
  try {
    recipe_load("bad.yaml");
  } catch (const Error& x) {
    e = x;
  }
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.what(), "bad.yaml:"));
  CHECK(contains(e.what(), "YAML syntax error"));

  write_file("tabs.yaml", "model:\n\tpath: m\n");
  try {
    recipe_load("tabs.yaml");
  } catch (const Error& x) {
    e = x;
  }
  CHECK(contains(e.what(), "tabs.yaml:2:"));

  write_file("two.yaml", "model:\n  path: m\n---\nmodel:\n  path: n\n");
  try {
    recipe_load("two.yaml");
  } catch (const Error& x) {
    e = x;
  }
  CHECK(contains(e.what(), "2 YAML documents"));

  if (getuid() != 0) {  // root reads anything
    write_file("secret.yaml", MINIMAL);
    fs::permissions("secret.yaml", fs::perms::none);
    try {
      recipe_load("secret.yaml");
    } catch (const Error& x) {
      e = x;
    }
    CHECK(contains(e.what(), "cannot read recipe secret.yaml"));
  }

  write_file("ok.yaml", MINIMAL);
  Recipe r = recipe_load("ok.yaml", {"train.lr=0.1"});
  CHECK(r.source == "ok.yaml");
  CHECK(r.train.lr == 0.1);
}

TEST_CASE("paths: inputs against the recipe's directory, outputs and --set against the current one") {
  TempCwd tmp;
  write_file("configs/e2e/r.yaml",
             "model:\n  path: ../../models/gpt2/\n"
             "data:\n  train: ./train.txt\n  eval: " +
                 (tmp.dir / "abs/valid.txt").string() +
                 "\n  tokenizer: ''\n"
                 "  cache_dir: cache/../.cache\n"
                 "output:\n  dir: runs/x\n");
  Recipe r = recipe_load("configs/e2e/r.yaml");
  CHECK(r.model.path == "models/gpt2");
  CHECK(r.data.train == "configs/e2e/train.txt");
  CHECK(r.data.eval == "abs/valid.txt");  // absolute, but below the current directory
  CHECK(r.data.tokenizer.empty());
  CHECK(r.data.cache_dir == ".cache");
  CHECK(r.output.dir == "runs/x");

  r = recipe_load("configs/e2e/r.yaml", {"data.train=mine/train.txt", "model.path=/opt/models/gpt2"});
  CHECK(r.data.train == "mine/train.txt");
  CHECK(r.model.path == "/opt/models/gpt2");

  // An absolute recipe path: inputs below the current directory still come out relative.
  r = recipe_load((tmp.dir / "configs/e2e/r.yaml").string());
  CHECK(r.data.train == "configs/e2e/train.txt");
  r = recipe_parse("model:\n  path: ../elsewhere\n", "/r.yaml");
  CHECK(r.model.path == "/elsewhere");
  r = recipe_parse("model:\n  path: ../../up\n", "sub/r.yaml");
  CHECK(r.model.path == "../up");
}

TEST_CASE("recipe_to_yaml round-trips to an equal recipe") {
  Recipe full = recipe_parse(FULL, "r.yaml");
  std::string yaml = recipe_to_yaml(full);
  CHECK(contains(yaml, "lr: 0.0002"));
  CHECK(contains(yaml, "alpha: 32.0"));
  CHECK(contains(yaml, "targets: [q, v, c_fc]"));
  CHECK(contains(yaml, "\n\nlora:\n"));
  Recipe again = recipe_parse(yaml, "resolved.yaml");
  CHECK(again == full);
  CHECK(recipe_to_yaml(again) != yaml);  // the header names the source...
  std::string yaml_again = recipe_to_yaml(again);
  CHECK(yaml_again.substr(yaml_again.find('\n')) == yaml.substr(yaml.find('\n')));  // ...the rest is equal

  Recipe defaults;
  CHECK(recipe_parse(recipe_to_yaml(defaults), "d.yaml") == defaults);

  // Strings a YAML reader could take for something else are quoted; odd doubles survive exactly.
  Recipe odd;
  odd.model.path = "yes";
  odd.data.train = "null";
  odd.data.eval = "a: b #c";
  odd.data.tokenizer = "123";
  odd.output.dir = "-1.5";
  odd.lora.targets = {"true", "~"};
  odd.train.lr = 0.1 + 0.2;
  odd.train.eps = 1e-300;
  odd.eval.length_penalty = -0.0;
  Recipe back = recipe_parse(recipe_to_yaml(odd), "o.yaml");
  CHECK(back == odd);
  CHECK(back.data.train == "null");
  CHECK(back.train.lr == 0.1 + 0.2);
}

TEST_CASE("recipe_to_yaml with a destination keeps input paths pointing at the same files") {
  TempCwd tmp;
  write_file("configs/r.yaml",
             "model:\n  path: ../models/m\ndata:\n  train: ../../shared/train.txt\n  eval: /abs/valid.txt\n");
  Recipe r = recipe_load("configs/r.yaml");
  CHECK(r.model.path == "models/m");
  CHECK(r.data.train == "../shared/train.txt");
  std::string dest = "runs/lora/recipe.yaml";
  std::string yaml = recipe_to_yaml(r, dest);
  CHECK(contains(yaml, "path: ../../models/m"));
  CHECK(contains(yaml, "eval: /abs/valid.txt"));
  write_file(dest, yaml);
  Recipe stored = recipe_load(dest);
  CHECK(stored == r);
  CHECK(stored.data.train == "../shared/train.txt");
}

TEST_CASE("recipe_validate: value checks, all problems in one report") {
  Recipe r = recipe_parse(MINIMAL, "r.yaml");
  recipe_validate(r);

  Recipe bad = recipe_parse(
      "model:\n  path: m\n  device: gpu\n"
      "lora:\n  r: 0\n  dropout: 1.0\n  targets: [q, qproj, q]\n  layers: [1, -1, 1]\n"
      "data:\n  train: t.csv\n"
      "train:\n  lr: -1e-3\n  schedule: cosin\n  batch_size: 0\n  warmup_steps: 10\n  warmup_ratio: 0.1\n"
      "  eval_every: 50\n"
      "log:\n  progress: false\n",
      "r.yaml");
  Error e = validate_error(bad);
  std::string msg = e.what();
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(msg, "problems in recipe r.yaml:"));
  CHECK(contains(
      msg, "\n  r.yaml:3: model.device: expected one of auto, cpu, ref, cuda, found 'gpu'; did you mean 'cuda'?"));
  CHECK(contains(msg, "\n  r.yaml:5: lora.r: must be >= 1, found 0"));
  CHECK(contains(msg, "\n  r.yaml:6: lora.dropout: must be in [0.0, 1.0), found 1.0"));
  CHECK(contains(msg, "r.yaml:7: lora.targets[1]: unknown target 'qproj'; did you mean 'q_proj'?"));
  CHECK(contains(msg, "lora.targets[2]: 'q' is listed twice"));
  CHECK(contains(msg, "lora.layers[1]: must be >= 0"));
  CHECK(contains(msg, "lora.layers[2]: block 1 is listed twice"));
  CHECK(contains(msg, "r.yaml:10: data.train: cannot tell the format of 't.csv'"));
  CHECK(contains(msg, "r.yaml:12: train.lr: must be > 0.0, found -0.001"));
  CHECK(contains(
      msg,
      "train.schedule: expected one of constant, linear, cosine, found 'cosin'; did you mean 'cosine'?"));
  CHECK(contains(msg, "train.batch_size: must be >= 1, found 0"));
  CHECK(contains(msg, "train.warmup_ratio: set together with train.warmup_steps"));
  CHECK(contains(msg, "train.eval_every: is 50 but data.eval is not set"));
  CHECK(contains(
      msg, "log.progress: expected one of auto, bar, plain, none, found 'false'; did you mean 'none'?"));
  CHECK(count_lines(msg) == 15);

  e = validate_error(recipe_parse(
      "model:\n  path: m\n  hidden_dropout: -0.1\n  attention_dropout: 1.0\ndata:\n  train: t.txt\n", "r.yaml"));
  CHECK(contains(e.what(), "\n  r.yaml:3: model.hidden_dropout: must be in [0.0, 1.0), found -0.1"));
  CHECK(contains(e.what(), "\n  r.yaml:4: model.attention_dropout: must be in [0.0, 1.0), found 1.0"));

  Recipe empty;
  e = validate_error(empty);
  CHECK(contains(e.what(), "recipe: model.path: is required but not set"));
  CHECK(contains(e.what(), "recipe: data.train: is required but not set"));

  Recipe from_set = recipe_parse(MINIMAL, "r.yaml", {"train.beta2=1"});
  e = validate_error(from_set);
  CHECK(std::string(e.what()) == "--set 'train.beta2=1': train.beta2: must be in [0.0, 1.0), found 1.0");

  Recipe nan_lr = r;
  nan_lr.train.lr = std::nan("");
  CHECK(contains(validate_error(nan_lr).what(), "train.lr: must be > 0.0, found nan"));

  Recipe full_ft = r;
  full_ft.lora.mode = "full";
  full_ft.lora.targets.clear();
  recipe_validate(full_ft);  // a full fine-tune needs no targets
  full_ft.lora.init_from = "runs/mnli";
  CHECK(contains(validate_error(full_ft).what(),
                 "r.yaml: lora.init_from: starts LoRA adapters from a trained adapter, but lora.mode is full"));

  Recipe own = r;  // output.dir is runs/lora by default
  own.lora.init_from = "runs/./lora/";
  CHECK(contains(validate_error(own).what(), "lora.init_from: is this run's own output.dir 'runs/lora'"));
  own.lora.init_from = "runs/mnli";
  recipe_validate(own);
}

TEST_CASE("helpers: recipe_closest_name, recipe_format_number, recipe_data_format") {
  CHECK(recipe_closest_name("bach_size", {"batch_size", "lr"}) == "batch_size");
  CHECK(recipe_closest_name("rl", {"lr", "r"}) == "lr");  // a transposition counts once
  CHECK(recipe_closest_name("qwertyuiop", {"lr", "seed"}).empty());
  CHECK(recipe_closest_name("LR", {"lr"}) == "lr");
  CHECK(recipe_format_number(2e-4) == "0.0002");
  CHECK(recipe_format_number(1e-8) == "1e-08");
  CHECK(recipe_format_number(16) == "16.0");
  CHECK(recipe_format_number(0.1 + 0.2) == "0.30000000000000004");
  CHECK(recipe_data_format("auto", "data/e2e/train.txt") == "e2e");
  CHECK(recipe_data_format("auto", "x.JSONL") == "jsonl");
  CHECK(recipe_data_format("auto", "x.csv").empty());
  CHECK(recipe_data_format("jsonl", "x.txt") == "jsonl");
}

TEST_CASE("recipe_key_for: the key a command-line word names, and recipe_load's key problems without throwing") {
  CHECK(recipe_key_for("lr") == "train.lr");
  CHECK(recipe_key_for("train.lr") == "train.lr");
  CHECK(recipe_key_for("batch-size") == "train.batch_size");  // train's before eval's
  CHECK(recipe_key_for("beam_size") == "eval.beam_size");
  CHECK(recipe_key_for("learning_rate") == "train.lr");       // another tool's name
  CHECK(recipe_key_for("max_step").empty());
  CHECK(recipe_key_for("max_step", true) == "train.max_steps");
  CHECK(recipe_key_for("dry-run", true).empty());
  std::vector<Error> problems;
  Recipe r = recipe_parse("train:\n  lr: 0.5\n  epochs: many\n  lrr: 1\n", "r.yaml", {"lora.r=4"}, &problems);
  REQUIRE(problems.size() == 1);
  CHECK(std::string(problems[0].what()).find("2 problems") != std::string::npos);
  CHECK(r.train.lr == 0.5);  // what could be read is read
  CHECK(r.lora.r == 4);
  CHECK_THROWS_AS(recipe_parse("train:\n  lrr: 1\n", "r.yaml"), Error);
}

TEST_CASE("a token where a YAML document should start is a syntax error at its place, not a hang") {
  // yaml-cpp 0.7's LoadAll loops forever on these, its memory growing without bound.
  for (const auto& entry : std::vector<std::pair<std::string, std::string>>{
           {",", "r.yaml:1:1"}, {"model:\n  path: m\n---\n,\n", "r.yaml:4:1"}, {"---\n]\n", "r.yaml:2:1"}}) {
    const std::string& text = entry.first;  // not a structured binding: CAPTURE takes it (clang 14 cannot)
    const std::string& where = entry.second;
    CAPTURE(text);
    Error e(0, "");
    try {
      recipe_parse(text, "r.yaml");
    } catch (const Error& x) {
      e = x;
    }
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), where + ": YAML syntax error"));
  }
}

}  // namespace
