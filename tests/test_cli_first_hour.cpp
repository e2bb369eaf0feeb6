// The first hour of a new user (issue 13): command-line mistakes answered with a "did you mean", `--resume
// RUN` without a recipe, no CUDA notice on a machine without a driver, `lora validate` reporting every
// problem of every part in one run, `--print-config` refusing invalid values, E2E text checked as UTF-8,
// `cmake --install` putting lora on PATH, `lora eval` of the base model, `lora generate`'s sampling, the
// base's absolute path in an adapter, and scripts/e2e_csv_to_txt.py on a file in the official E2E CSV layout.
// Runs the built binary on the quickstart base model and small files the test writes itself (absolute paths).
#include <doctest/doctest.h>

#include <dlfcn.h>

#include "core/train/train_state.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;

const std::string kBase = LORA_SOURCE_DIR "/data/quickstart/base-model";

// A working minimal recipe in dir (model on the CPU unless device says otherwise), extra appended.
std::string recipe(const fs::path& dir, const std::string& extra = "", const std::string& device = "cpu") {
  write_text(dir / "train.txt",
             "name : The Eagle | Type : pub||The Eagle is a pub . \nname : Aromi | food : Italian||Aromi serves Italian food . \n");
  write_text(dir / "recipe.yaml", "model:\n  path: " + kBase + "\n  device: " + device + "\ndata:\n  train: " +
                                      (dir / "train.txt").string() + "\n  cache_dir: " + (dir / "cache").string() +
                                      "\n  max_length: 64\ntrain:\n  batch_size: 2\n  max_steps: 2\noutput:\n  dir: " +
                                      (dir / "run").string() + "\nlog:\n  progress: none\n" + extra);
  return (dir / "recipe.yaml").string();
}

// A usage error as lora prints it: exit 2, "error: ..." naming needle, a hint, and nothing of CLI11's own.
void check_usage(const CliResult& r, const std::string& needle) {
  check_clean_error(r, 2, needle);
  CHECK(contains(r.out, "  hint: "));
  CHECK(!contains(r.out, "Run with --help"));
}

TEST_CASE("first hour: a misspelt subcommand or option gets a did-you-mean; a recipe key as an option gets --set") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  CliResult r = lora_run("trian " + rec);
  check_usage(r, "unknown subcommand 'trian'; did you mean 'train'?");
  check_usage(lora_run("frobnicate"), "unknown subcommand 'frobnicate'");
  check_usage(lora_run(""), "a subcommand is required");

  check_usage(lora_run("train " + rec + " --lr 1e-3"), "did you mean `--set train.lr=1e-3`?");
  check_usage(lora_run("train " + rec + " --lr=1e-3"), "did you mean `--set train.lr=1e-3`?");
  check_usage(lora_run("train --lr 1e-3 " + rec), "`--set train.lr=1e-3`");
  check_usage(lora_run("train " + rec + " --batch-size 4"), "`--set train.batch_size=4`");
  check_usage(lora_run("train " + rec + " --beam_size 4"), "`--set eval.beam_size=4`");
  check_usage(lora_run("train " + rec + " --learning_rate 3e-4"), "`--set train.lr=3e-4`");
  check_usage(lora_run("train " + rec + " --max_step 9"), "`--set train.max_steps=9`");
  check_usage(lora_run("train " + rec + " lr=1e-3"), "did you mean `--set train.lr=1e-3`?");
  r = lora_run("train " + rec + " --dryrun");
  check_usage(r, "unknown option '--dryrun' for `lora train`; did you mean '--dry-run'?");
  check_usage(lora_run("eval " + rec + " --adaptr x"), "did you mean '--adapter'?");
  check_usage(lora_run("merge --bse x --adapter y --out z"), "did you mean '--base'?");
  check_usage(lora_run("eval " + rec + " --adapter x --resume y"), "'--resume' is an option of `lora train`");
  // other CLI11 errors, in lora's words
  check_usage(lora_run("train " + rec + " --device gpu"), "gpu");
  check_usage(lora_run("train " + rec + " " + rec), "not expected");
  // what is right still runs
  CHECK(lora_run("train " + rec + " --print-config --set train.lr=1e-3").code == 0);
}

TEST_CASE("first hour: train --resume RUN without a recipe reads RUN/recipe.yaml") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  check_usage(lora_run("train"), "no recipe file given");
  CliResult missing = lora_run("train --resume " + (d / "nowhere").string());
  check_usage(missing, (d / "nowhere" / "recipe.yaml").string());
  CliResult first = lora_run("train " + rec);
  INFO(first.out);
  REQUIRE(first.code == 0);
  // The run goes on in RUN, wherever the run's recipe says output.dir is.
  CliResult conf = lora_run("train --resume " + (d / "run").string() + " --print-config");
  INFO(conf.out);
  CHECK(conf.code == 0);
  CHECK(contains(conf.out, "dir: " + (d / "run").string()));
  CliResult resumed = lora_run("train --resume " + (d / "run").string() + " --set train.max_steps=3");
  INFO(resumed.out);
  CHECK(resumed.code == 0);
  CHECK(contains(resumed.out, "resuming from"));
  CHECK(contains(lora::train_state_latest((d / "run").string()), "step-00000003"));
}

TEST_CASE("first hour: no CUDA notice without a driver unless CUDA was asked for") {
  void* lib = ::dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (lib) {
    ::dlclose(lib);
    MESSAGE("skipped: this machine has an NVIDIA driver");
    return;
  }
  const fs::path d = temp_dir();
  const std::string rec = recipe(d, "", "auto");
  CliResult r = lora_run("train " + rec);  // not --dry-run, which is quiet about the device anyway
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(contains(r.out, "training on cpu"));
  CHECK(!contains(r.out, "CUDA"));
  CHECK(!contains(r.out, "notice:"));
  CliResult cuda = lora_run("train " + rec + " --dry-run --device cuda");
  check_clean_error(cuda, 1, "--device cuda was asked for but no CUDA device is usable");
}

TEST_CASE("first hour: validate reports every problem of every part at once; --print-config refuses invalid values") {
  const fs::path d = temp_dir();
  std::string rec = recipe(d);
  write_text(d / "bad.txt", "name : A||A is a pub .\nthis line has no separator\n");
  // An unknown key, a wrong type, an invalid value, a missing model, a bad data line and a missing init_from.
  CliResult r = lora_run("validate " + rec + " --set lora.rr=4 --set train.epochs=many --set train.lr=-1 --set model.path=" +
                         (d / "no-model").string() + " --set data.train=" + (d / "bad.txt").string() +
                         " --set lora.init_from=" + (d / "no-adapter").string());
  check_clean_error(r, 2, "problems in");
  for (const std::string& needle : {std::string("unknown key 'lora.rr'"), std::string("train.epochs"), std::string("train.lr"),
                                    (d / "no-model").string(), (d / "bad.txt").string() + ":2",
                                    (d / "no-adapter").string()})
    CHECK(contains(r.out, needle));
  // Without a model the data are still read line by line.
  CliResult data = lora_run("validate " + rec + " --set model.path=" + (d / "no-model").string());
  INFO(data.out);
  CHECK(data.code == 1);
  CHECK(contains(data.out, "every line read"));

  CliResult conf = lora_run("train " + rec + " --print-config --set train.lr=-1");
  check_clean_error(conf, 2, "train.lr");
  CHECK(contains(conf.out, "lr: -1"));  // printed all the same
}

TEST_CASE("first hour: E2E text is checked as UTF-8, with the file and line") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  write_text(d / "latin1.txt", "name : Aromi||Aromi is a pub .\nname : Caf\xe9 Rouge||Caf\xe9 Rouge is a pub .\n");
  const std::string bad = (d / "latin1.txt").string();
  for (const char* cmd : {"train ", "validate ", "prepare "}) {
    CAPTURE(cmd);
    CliResult r = lora_run(cmd + rec + " --set data.train=" + bad);
    check_clean_error(r, 1, bad + ":2: not valid UTF-8");
    CHECK(contains(r.out, "byte 0xE9 at column 11"));
  }
}

TEST_CASE("first hour: lora eval without --adapter scores the base model alone") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  CliResult r = lora_run("eval " + rec + " --split train --set eval.max_new_tokens=6");
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "evaluation of the base model alone (no --adapter) on split 'train'"));
  const fs::path out = d / "run" / "base-eval-train";  // beside the run that output.dir names
  REQUIRE(fs::exists(out / "eval.json"));
  const nlohmann::json j = nlohmann::json::parse(lora::file_read((out / "eval.json").string()));
  CHECK(j["adapter"].is_null());
  CHECK(j["base_model"] == kBase);
  CHECK(j["loss"].get<double>() > 0);
  CHECK(fs::exists(out / "predictions.txt"));
  // The base evaluation does not make output.dir look like a run: training there still starts.
  CliResult t = lora_run("train " + rec);
  INFO(t.out);
  CHECK(t.code == 0);
}

TEST_CASE("first hour: lora generate samples with --temperature, --top-k, --top-p, reproducibly with --seed") {
  const fs::path d = temp_dir();
  const std::string rec = recipe(d, "eval:\n  max_new_tokens: 12\n");
  const std::string prompts = " --prompt 'name : The Eagle | Type : pub' --prompt 'name : Aromi | food : Italian'";
  auto gen = [&](const std::string& opts) {
    CliResult r = lora_run("generate " + rec + prompts + " " + opts);
    INFO(opts << "\n" << r.out);
    CHECK(r.code == 0);
    return r.out;
  };
  const std::string greedy = gen("");
  CHECK(gen("--temperature 0 --seed 3") == greedy);
  CHECK(gen("--top-k 1 --seed 3") == greedy);
  CHECK(gen("--temperature 5 --top-k 1 --seed 3") == greedy);
  const std::string sampled = gen("--temperature 1.5 --seed 11");
  CHECK(sampled != greedy);
  CHECK(gen("--temperature 1.5 --seed 11 --set eval.batch_size=1") == sampled);
  CHECK(gen("--temperature 1.5 --top-p 0.95 --top-k 50 --seed 11") != greedy);
  // Without --seed a fresh one is drawn and printed, so the text can be had again.
  CliResult fresh = lora_run("generate " + rec + prompts + " --temperature 1.5");
  INFO(fresh.out);
  REQUIRE(fresh.code == 0);
  const size_t at = fresh.out.find("--seed ");
  REQUIRE(at != std::string::npos);
  const std::string seed = fresh.out.substr(at + 7, fresh.out.find(' ', at + 7) - at - 7);
  std::string text;  // the continuations, without the note
  for (const auto& line : lora::text_lines(fresh.out))
    if (!line.empty() && line.rfind("note:", 0) != 0) text += line + "\n";
  CHECK(gen("--temperature 1.5 --seed " + seed) == text);
  // Bad values: a clean usage error.
  CHECK(lora_run("generate " + rec + prompts + " --top-p 1.5").code == 2);
  check_usage(lora_run("generate " + rec + prompts + " --temperature 1 --set eval.beam_size=4"), "beam_size is 4");
}

// Runs a shell command from a scratch directory, stdout and stderr together.
CliResult shell_run(const std::string& cmd) {
  const std::string log = lora_run_dir() + "/shell.log";
  const int status = std::system(("cd " + lora_run_dir() + " && (" + cmd + ") </dev/null >" + log + " 2>&1").c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  return r;
}

TEST_CASE("first hour: cmake --install puts lora in PREFIX/bin; setup.sh names its options") {
  const fs::path prefix = fs::path(temp_dir()) / "prefix";
  const std::string build = fs::path(LORA_BIN).parent_path().string();
  CliResult inst = shell_run("cmake --install " + build + " --prefix " + prefix.string());
  INFO(inst.out);
  REQUIRE(inst.code == 0);
  REQUIRE(fs::exists(prefix / "bin" / "lora"));
  // Typed as the messages say it: `lora ...`, found on PATH.
  CliResult ver = shell_run("PATH=" + (prefix / "bin").string() + ":/usr/bin:/bin lora --version");
  INFO(ver.out);
  CHECK(ver.code == 0);
  CHECK(contains(ver.out, LORA_VERSION));

  CliResult bad = shell_run("bash " LORA_SOURCE_DIR "/scripts/setup.sh --prefx /tmp/x");
  CHECK(bad.code == 2);
  CHECK(contains(bad.out, "unknown option '--prefx'"));
  CHECK(contains(bad.out, "--prefix DIR"));
  CliResult help = shell_run("bash " LORA_SOURCE_DIR "/scripts/setup.sh --help");
  CHECK(help.code == 0);
  CHECK(contains(help.out, "--prefix DIR"));
}

TEST_CASE("first hour: an adapter records its base's absolute path, so export --to merged finds it from elsewhere") {
  const fs::path cwd = lora_run_dir();
  const fs::path d = temp_dir();
  if (!fs::exists(cwd / "hour-base")) fs::copy(kBase, cwd / "hour-base", fs::copy_options::recursive);
  const std::string rec = recipe(d);
  // A --set path is relative to the working directory: the run sees the base as "hour-base".
  CliResult t = lora_run("train " + rec + " --set model.path=hour-base");
  INFO(t.out);
  REQUIRE(t.code == 0);
  const nlohmann::json cfg = lora::json_read_file((d / "run" / "adapter_config.json").string());
  const std::string recorded = cfg["base_model_name_or_path"].get<std::string>();
  CHECK(fs::path(recorded).is_absolute());
  CHECK(fs::equivalent(recorded, cwd / "hour-base"));
  // From another directory, without --base.
  CliResult e = shell_run("cd " + d.string() + " && " LORA_BIN " export --adapter run --to merged --out merged");
  INFO(e.out);
  CHECK(e.code == 0);
  CHECK(fs::exists(d / "merged" / "config.json"));
  // The same base named relatively is the same base: no note about another one.
  CliResult ev = lora_run("eval " + rec + " --set model.path=hour-base --adapter " + (d / "run").string() +
                          " --split train --no-generate");
  INFO(ev.out);
  CHECK(ev.code == 0);
  CHECK(!contains(ev.out, "records base model"));
}

TEST_CASE("first hour: scripts/e2e_csv_to_txt.py turns the official E2E CSV into lines lora trains on") {
  if (std::system("command -v python3 >/dev/null 2>&1") != 0) {
    MESSAGE("skipped: no python3");
    return;
  }
  const fs::path d = temp_dir();
  const std::string rec = recipe(d);
  // The official layout: a header mr,ref; quoted fields with commas; one row a reference.
  write_text(d / "e2e" / "devset.csv",
             "mr,ref\n"
             "\"name[The Vaults], eatType[pub], priceRange[more than £30], near[Café Adriatic]\","
             "\"The Vaults pub near Café Adriatic costs £30.  It's family-friendly.\"\n"
             "\"name[The Vaults], eatType[pub], priceRange[more than £30], near[Café Adriatic]\","
             "\"Prices at The Vaults, a pub, start at £30.50.\"\n");
  const std::string script = "python3 " LORA_SOURCE_DIR "/scripts/e2e_csv_to_txt.py ";
  CliResult conv = shell_run(script + (d / "e2e" / "devset.csv").string() + " " + (d / "valid.txt").string());
  INFO(conv.out);
  REQUIRE(conv.code == 0);
  CHECK(contains(conv.out, "2 examples, 1 meaning representations"));
  const std::vector<std::string> lines = lora::text_lines(lora::file_read((d / "valid.txt").string()));
  REQUIRE(lines.size() >= 2);
  const std::string mr = "name : The Vaults | Type : pub | price : more than £ 30 | near : Café Adriatic";
  CHECK(lines[0] == mr + "||The Vaults pub near Café Adriatic costs £ 30 . It 's family - friendly .");
  CHECK(lines[1] == mr + "||Prices at The Vaults , a pub , start at £ 30.50 .");
  // lora reads it as E2E data: two references of one meaning representation.
  CliResult val = lora_run("validate " + rec + " --set data.train=" + (d / "valid.txt").string());
  INFO(val.out);
  CHECK(val.code == 0);
  // A file that is not the E2E CSV: exit 2, the file named, what was expected.
  write_text(d / "e2e" / "testset.csv", "MR\n\"name[A]\"\n");
  CliResult bad = shell_run(script + (d / "e2e" / "testset.csv").string() + " " + (d / "test.txt").string());
  CHECK(bad.code == 2);
  CHECK(contains(bad.out, (d / "e2e" / "testset.csv").string() + ":1: expected the columns mr and ref"));
  CHECK(contains(bad.out, "testset_w_refs.csv"));
  write_text(d / "e2e" / "odd.csv", "mr,ref\n\"name[A], colour[red]\",A is red.\n");
  bad = shell_run(script + (d / "e2e" / "odd.csv").string() + " " + (d / "odd.txt").string());
  CHECK(bad.code == 2);
  CHECK(contains(bad.out, "odd.csv:2: unknown slot 'colour'"));
}

}  // namespace
