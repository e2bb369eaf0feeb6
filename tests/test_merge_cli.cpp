// `lora merge` and `lora export` as a user runs them: the built binary (LORA_BIN) on the golden fixtures,
// checking exit codes (0 ok, 1 runtime, 2 usage), the summary on stdout and the one-message errors on
// stderr (never an abort or a stack trace).
#include <doctest/doctest.h>

#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/fsutil.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
const std::string kGolden = std::string(LORA_FIXTURES) + "/golden";

struct Run {
  int code = -1;
  std::string out, err;
};

Run run_lora(const std::string& args) {
  static const std::string dir = temp_dir();
  const std::string o = dir + "/stdout", e = dir + "/stderr";
  const std::string cmd = std::string(LORA_BIN) + " " + args + " >" + o + " 2>" + e;
  int status = std::system(cmd.c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = lora::file_read(o);
  r.err = lora::file_read(e);
  INFO("lora " << args << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.err.find("internal error") == std::string::npos);
  return r;
}


const std::string kBase = "--base " + kGolden + "/gpt2-tiny";
const std::string kAdapter = "--adapter " + kGolden + "/adapter";
}  // namespace

TEST_CASE("lora merge: merge, verify, refuse an existing output, overwrite") {
  const std::string out = temp_dir() + "/merged";
  Run r = run_lora("merge " + kBase + " " + kAdapter + " --out " + out + " --verify");
  CHECK(r.code == 0);
  CHECK(contains(r.out, "merged 8 LoRA module(s) into 28 tensors"));
  CHECK(contains(r.out, "verify: max abs logit error"));
  CHECK(fs::exists(out + "/model.safetensors"));
  Run again = run_lora("merge " + kBase + " " + kAdapter + " --out " + out);
  CHECK(again.code == 2);
  CHECK(contains(again.err, "error: output '" + out + "' already exists"));
  CHECK(contains(again.err, "hint: pass --overwrite"));
  Run bf16 = run_lora("merge " + kBase + " " + kAdapter + " --out " + out + " --overwrite --dtype bf16 --verify");
  CHECK(bf16.code == 0);
  CHECK(contains(bf16.out, "threshold 0.0625 for bf16"));
  CHECK(json::parse(lora::file_read(out + "/config.json"))["dtype"] == "bfloat16");
}

TEST_CASE("lora merge: bad input gives one message and exit 1 or 2") {
  const std::string out = temp_dir() + "/merged";
  Run dtype = run_lora("merge " + kBase + " " + kAdapter + " --out " + out + " --dtype fp8");
  CHECK(dtype.code == 2);
  CHECK(contains(dtype.err, "unknown dtype 'fp8'"));
  Run missing = run_lora("merge " + kBase + " --adapter /nonexistent/adapter --out " + out);
  CHECK(missing.code == 1);
  CHECK(contains(missing.err, "adapter directory '/nonexistent/adapter' does not exist"));
  Run no_out = run_lora("merge " + kBase + " " + kAdapter);
  CHECK(no_out.code == 2);
  CHECK(contains(no_out.err, "--out"));
  // An adapter that names another base: refused, then merged with --force.
  std::string ad = temp_dir() + "/adapter";
  fs::create_directories(ad);
  fs::copy_file(kGolden + "/adapter/adapter_model.safetensors", ad + "/adapter_model.safetensors");
  json cfg = json::parse(lora::file_read(kGolden + "/adapter/adapter_config.json"));
  cfg["base_model_name_or_path"] = "gpt2-medium";
  std::ofstream(ad + "/adapter_config.json") << cfg.dump(2);
  Run other = run_lora("merge " + kBase + " --adapter " + ad + " --out " + out);
  CHECK(other.code == 2);
  CHECK(contains(other.err, "was trained on 'gpt2-medium'"));
  CHECK(contains(other.err, "--force"));
  Run forced = run_lora("merge " + kBase + " --adapter " + ad + " --out " + out + " --force");
  CHECK(forced.code == 0);
  CHECK(contains(forced.out, "note: adapter names base 'gpt2-medium'"));
}

TEST_CASE("lora export: gguf, peft, merged, and an unknown format") {
  const std::string dir = temp_dir();
  Run gguf = run_lora("export " + kAdapter + " --to gguf --out " + dir + "/a.gguf");
  CHECK(gguf.code == 0);
  CHECK(contains(gguf.out, "llama.cpp LoRA for arch gpt2, 16 tensors, adapter.lora.alpha 8"));
  CHECK(lora::file_read(dir + "/a.gguf").compare(0, 4, "GGUF") == 0);
  Run peft = run_lora("export " + kAdapter + " --to peft --out " + dir + "/peft");
  CHECK(peft.code == 0);
  CHECK(fs::exists(dir + "/peft/adapter_model.safetensors"));
  Run merged = run_lora("export " + kAdapter + " --to merged " + kBase + " --out " + dir + "/merged");
  CHECK(merged.code == 0);
  CHECK(fs::exists(dir + "/merged/model.safetensors"));
  Run unknown = run_lora("export " + kAdapter + " --to onnx --out " + dir + "/x");
  CHECK(unknown.code == 2);
  CHECK(contains(unknown.err, "unknown export format 'onnx'; the formats are gguf, peft, merged"));
  Run exists = run_lora("export " + kAdapter + " --to gguf --out " + dir + "/a.gguf");
  CHECK(exists.code == 2);
  CHECK(contains(exists.err, "already exists"));
}

TEST_CASE("lora merge and export of a RoBERTa adapter with a saved classification head") {
  const std::string dir = temp_dir(), roberta = std::string(LORA_FIXTURES) + "/golden-roberta";
  const std::string args = " --adapter " + roberta + "/adapter-cls";
  Run merge = run_lora("merge --base " + roberta + "/roberta-cls" + args + " --out " + dir + "/merged --verify");
  CHECK(merge.code == 0);
  CHECK(contains(merge.out, "merged 4 LoRA module(s) and the 3-label classification head into 41 tensors"));
  CHECK(contains(merge.out, "note: classification head (3 label(s)) from the adapter's saved modules, replacing the base's"));
  CHECK(contains(merge.out, "verify: max abs classification logit error"));
  json cfg = json::parse(lora::file_read(dir + "/merged/config.json"));
  CHECK(cfg["architectures"][0] == "RobertaForSequenceClassification");
  Run named = run_lora("merge --base " + roberta + "/roberta-cls" + args + " --out " + dir + "/named --labels yes,maybe,no");
  CHECK(named.code == 0);
  CHECK(json::parse(lora::file_read(dir + "/named/config.json"))["id2label"]["2"] == "no");
  Run peft = run_lora("export" + args + " --to peft --out " + dir + "/peft");
  CHECK(peft.code == 0);
  CHECK(contains(peft.out, "(peft), 12 tensors"));
  Run gguf = run_lora("export" + args + " --to gguf --out " + dir + "/a.gguf");
  CHECK(gguf.code == 2);
  CHECK(contains(gguf.err, "saves a trained classification head"));
  CHECK(contains(gguf.err, "hint: merge it"));
  CHECK_FALSE(fs::exists(dir + "/a.gguf"));
}

}  // namespace
