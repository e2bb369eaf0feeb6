// What a training run leaves to look at (core/train/run_outputs.h): train.log holds the console's lines
// without the progress bar's redraws, samples.jsonl the greedy samples of every evaluation, loss.svg a
// well-formed picture of the training loss, eval loss and learning rate; train.eval_every's default gives
// about ten evaluations a run. Runs the built binary on the quickstart base model and a few quickstart lines.
#include <doctest/doctest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "core/session/recipe.h"
#include "core/train/run_outputs.h"
#include "core/train/trainer.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kBase = LORA_SOURCE_DIR "/data/quickstart/base-model";

// The first n lines of a quickstart file into dir/name.
std::string quickstart_lines(const fs::path& dir, const std::string& file, const std::string& name, int n) {
  std::ifstream in(LORA_SOURCE_DIR "/data/quickstart/" + file);
  std::string line, text;
  for (int i = 0; i < n && std::getline(in, line); ++i) text += line + "\n";
  write_text(dir / name, text);
  return (dir / name).string();
}

std::string recipe(const fs::path& d, const std::string& extra) {
  write_text(d / "recipe.yaml",
             "model:\n  path: " + kBase + "\n  device: cpu\ndata:\n  train: " + quickstart_lines(d, "train.txt", "train.txt", 16) +
                 "\n  eval: " + quickstart_lines(d, "valid.txt", "valid.txt", 8) + "\n  cache_dir: " + (d / "cache").string() +
                 "\n  max_length: 96\ntrain:\n  batch_size: 4\n  max_steps: 10\n  lr: 3e-3\neval:\n  num_samples: 2\n"
                 "  max_new_tokens: 6\noutput:\n  dir: " + (d / "run").string() + "\n" + extra);
  return (d / "recipe.yaml").string();
}

std::vector<json> rows(const fs::path& file, const char* key) {
  std::vector<json> out;
  for (const auto& line : lora::text_lines(lora::file_read(file.string())))
    if (!line.empty())
      if (json j = json::parse(line); j.contains(key)) out.push_back(j);
  return out;
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

// True when python3's XML parser reads the file (skipped, true, where python3 is missing).
bool xml_well_formed(const fs::path& file) {
  if (std::system("command -v python3 >/dev/null 2>&1") != 0) return true;
  const std::string cmd = "python3 -c \"import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); "
                          "sys.exit(d.documentElement.tagName != 'svg')\" " + file.string();
  return std::system(cmd.c_str()) == 0;
}

TEST_CASE("outputs: train.log, samples.jsonl and loss.svg; an evaluation every tenth of the run by default") {
  const fs::path d = temp_dir();
  CliResult r = lora_run("train " + recipe(d, "log:\n  progress: plain\n  every: 2\n"));
  INFO(r.out);
  REQUIRE(r.code == 0);
  const fs::path run = d / "run";

  // 10 steps: evaluations before the first, after each step (max(1, 10 / 10)) and at the end.
  const std::vector<json> evals = rows(run / "metrics.jsonl", "eval_loss");
  REQUIRE(evals.size() == 11);
  CHECK(evals.front()["step"] == 0);
  CHECK(evals.back()["step"] == 10);

  // train.log: what the console showed, line for line, from the first line of the run on.
  const std::string log = lora::file_read((run / "train.log").string());
  for (const char* needle : {"training on cpu", "eval at step 0:", "step 2/10", "step 10/10", "eval at step 10:",
                             "adapter written to", "held-out loss:", "samples (greedy, held-out prompts):", "  generated : "})
    CHECK(contains(log, needle));
  const size_t first = r.out.find("training on cpu");
  REQUIRE(first != std::string::npos);
  CHECK(contains(r.out, log.substr(0, log.find("adapter written"))));  // the console's stderr, in order
  for (const auto& line : lora::text_lines(r.out.substr(first)))
    if (!line.empty()) CHECK_MESSAGE(contains(log, line), line);

  // samples.jsonl: two distinct prompts at each of the 11 evaluations.
  const std::vector<json> samples = rows(run / "samples.jsonl", "generated");
  REQUIRE(samples.size() == 22);
  CHECK(samples.front()["step"] == 0);
  CHECK(samples.back()["step"] == 10);
  CHECK(samples[0]["prompt"] != samples[1]["prompt"]);
  CHECK(contains(log, "  generated : " + samples.back()["generated"].get<std::string>()));
  CHECK(!samples.back()["reference"].get<std::string>().empty());

  // loss.svg: one point per evaluation, the three curves, parsed by an XML parser.
  const std::string svg = lora::file_read((run / "loss.svg").string());
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(count(svg, "<circle") == 11);
  CHECK(count(svg, "<polyline") == 3);
  CHECK(contains(svg, "train loss"));
  CHECK(contains(svg, "learning rate"));
  CHECK(xml_well_formed(run / "loss.svg"));

  // train.eval_every: 0 is still only before the first step and at the end.
  const fs::path d2 = temp_dir();
  CliResult r2 = lora_run("train " + recipe(d2, "log:\n  progress: none\n") + " --set train.eval_every=0");
  INFO(r2.out);
  REQUIRE(r2.code == 0);
  CHECK(rows(d2 / "run" / "metrics.jsonl", "eval_loss").size() == 2);
  CHECK(rows(d2 / "run" / "samples.jsonl", "generated").size() == 4);
}

TEST_CASE("outputs: with the progress bar, train.log has step lines every log.every steps and no redraws") {
  const fs::path d = temp_dir();
  CliResult r = lora_run("train " + recipe(d, "log:\n  progress: bar\n  every: 5\n") + " --set train.eval_every=0");
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "\r"));  // the console's bar
  const std::string log = lora::file_read((d / "run" / "train.log").string());
  CHECK(!contains(log, "\r"));
  CHECK(!contains(log, "\033"));
  CHECK(contains(log, "step 5/10  loss "));
  CHECK(contains(log, "step 10/10  loss "));
  CHECK(!contains(log, "step 4/10"));
  // A resumed run appends: its lines follow the first run's.
  CliResult more = lora_run("train --resume " + (d / "run").string() + " --set train.max_steps=12");
  INFO(more.out);
  REQUIRE(more.code == 0);
  const std::string log2 = lora::file_read((d / "run" / "train.log").string());
  CHECK(log2.rfind(log, 0) == 0);
  CHECK(contains(log2.substr(log.size()), "resuming from"));
}

TEST_CASE("outputs: held-out {\"text\": ...} records have no prompt to sample from; the run trains all the same") {
  const fs::path d = temp_dir();
  write_text(d / "t.jsonl", "{\"text\": \"The Eagle is a pub .\"}\n{\"text\": \"Aromi serves Italian food .\"}\n");
  const std::string t = (d / "t.jsonl").string();
  CliResult r = lora_run("train " + recipe(d, "log:\n  progress: none\n") + " --set data.train=" + t + " --set data.eval=" + t +
                         " --set train.max_steps=2 --set train.batch_size=2");
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(rows(d / "run" / "metrics.jsonl", "eval_loss").size() == 3);
  CHECK(rows(d / "run" / "samples.jsonl", "generated").empty());
}

TEST_CASE("loss_svg draws what metrics.jsonl holds, skipping torn and foreign rows") {
  const std::string metrics =
      "{\"step\":0,\"eval_loss\":3.0,\"eval_token_accuracy\":0.4}\n"
      "{\"step\":1,\"loss\":2.9,\"lr\":0.001}\n"
      "{\"step\":2,\"loss\":2.5,\"lr\":0.002}\n"
      "{\"step\":2,\"eval_loss\":2.4}\n"
      "{\"peak_memory_mib\":12.5}\n"
      "{\"step\":3,\"loss\":null,\"lr\":0.002}\n"
      "{\"step\":4,\"lo";  // a run killed while writing
  const std::string svg = lora::loss_svg(metrics, "my<run>");
  CHECK(count(svg, "<circle") == 2);
  CHECK(count(svg, "<polyline") == 3);
  CHECK(contains(svg, "my&lt;run&gt;"));
  CHECK(contains(svg, "train loss 2.5"));
  CHECK(contains(svg, "eval loss 2.4"));
  CHECK(contains(svg, "learning rate 0.002"));
  const std::string empty = lora::loss_svg("", "run");
  CHECK(contains(empty, "no steps yet"));
  CHECK(count(empty, "<polyline") == 0);
}

TEST_CASE("train.eval_every: -1 (the default) is a tenth of the run, 0 only the ends, below -1 refused") {
  lora::Recipe r;
  CHECK(r.train.eval_every == -1);
  CHECK(lora::train_eval_every(r, 282) == 28);
  CHECK(lora::train_eval_every(r, 9) == 1);
  r.train.eval_every = 0;
  CHECK(lora::train_eval_every(r, 282) == 0);
  r.train.eval_every = 50;
  CHECK(lora::train_eval_every(r, 282) == 50);
  const fs::path d = temp_dir();
  // --dry-run says when the run will evaluate.
  CliResult dry = lora_run("train " + recipe(d, "") + " --dry-run --set train.max_steps=40");
  INFO(dry.out);
  CHECK(contains(dry.out, "evaluation: 8 examples, before the first step, every 4 steps and at the end"));
  dry = lora_run("train " + recipe(d, "") + " --dry-run --set train.eval_every=0");
  CHECK(contains(dry.out, "evaluation: 8 examples, before the first step, not in between and at the end"));
  check_clean_error(lora_run("validate " + recipe(d, "") + " --set train.eval_every=-2"), 2,
                    "train.eval_every: must be a number of steps >= 1, 0 (only at the end) or -1");
}

}  // namespace
