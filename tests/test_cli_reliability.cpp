// The output directory of `lora train` as a small database (issue 12): one writer at a time, commit
// records checked on resume with a fall-back to an older intact checkpoint, an overwrite that clears the
// previous run, temporaries of a killed run cleared, metrics.jsonl continued without duplicates, a run
// killed before its first checkpoint started again, and training data edited between stop and resume
// refused. Runs the built binary on the quickstart base model and two-line data the test writes.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <limits>

#include "core/base/fsutil.h"
#include "core/train/train_state.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;

const std::string kBase = LORA_SOURCE_DIR "/data/quickstart/base-model";

// A minimal recipe in dir training on two E2E lines, into dir/run.
fs::path recipe(const fs::path& dir, const std::string& extra = "") {
  write_text(dir / "train.txt",
             "name : The Eagle | Type : pub||The Eagle is a pub . \nname : Aromi | food : Italian||Aromi serves Italian food . \n");
  write_text(dir / "recipe.yaml", "model:\n  path: " + kBase + "\n  device: cpu\ndata:\n  train: " + (dir / "train.txt").string() +
                                      "\n  cache_dir: " + (dir / "cache").string() +
                                      "\n  max_length: 64\ntrain:\n  batch_size: 2\n  max_steps: 2\noutput:\n  dir: " +
                                      (dir / "run").string() + "\nlog:\n  progress: none\n" + extra);
  return dir / "recipe.yaml";
}

CliResult train(const fs::path& rec, const std::string& args = "") { return lora_run("train " + rec.string() + " " + args); }

std::vector<int64_t> metrics_steps(const fs::path& p) {
  std::vector<int64_t> steps;
  for (const auto& line : lora::text_lines(lora::file_read(p.string()))) {
    auto j = nlohmann::json::parse(line);  // every line a whole JSON object
    if (j.contains("loss")) steps.push_back(j["step"].get<int64_t>());
  }
  return steps;
}

void flip_last_byte(const fs::path& p) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-1, std::ios::end);
  char c = 0;
  f.get(c);
  f.seekp(-1, std::ios::end);
  f.put(char(c ^ 0x40));
}

}  // namespace

TEST_CASE("a second process on a locked run directory is refused, naming the holder's pid and host") {
  auto d = scratch_dir("rel-lock");
  const fs::path rec = recipe(d);
  CliResult first = train(rec, "--set output.save_every=1");
  INFO(first.out);
  REQUIRE(first.code == 0);
  // This process holds the lock as a running lora would.
  const std::string lock_path = (d / "run" / ".lock").string();
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  const std::string holder = "pid 4242 on host test-node-7\n";
  REQUIRE(::pwrite(fd, holder.data(), holder.size(), 0) == ssize_t(holder.size()));
  CliResult resumed = train(rec, "--set train.max_steps=3 --resume " + (d / "run").string());
  check_clean_error(resumed, 1, "in use by another lora process (pid 4242 on host test-node-7)");
  CliResult fresh = train(rec, "--set output.overwrite=true");
  check_clean_error(fresh, 1, "pid 4242 on host test-node-7");
  CHECK(lora::train_state_latest((d / "run").string()) == (d / "run" / "checkpoints" / "step-00000002").string());
  ::close(fd);  // released: the resume goes through, and records its own pid
  CliResult after = train(rec, "--set train.max_steps=3 --resume " + (d / "run").string());
  INFO(after.out);
  CHECK(after.code == 0);
  CHECK(contains(lora::file_read(lock_path), "pid "));
  fs::remove_all(d);
}

TEST_CASE("a damaged newest checkpoint is named and the resume falls back to the newest intact one") {
  auto d = scratch_dir("rel-damage");
  const fs::path rec = recipe(d);
  REQUIRE(train(rec, "--set output.save_every=1 --set output.keep_last=0").code == 0);
  const fs::path ck = d / "run" / "checkpoints";
  CHECK(lora::train_state_verify((ck / "step-00000002").string()).empty());
  flip_last_byte(ck / "step-00000002" / "trainable.safetensors");
  CHECK(contains(lora::train_state_verify((ck / "step-00000002").string()), "trainable.safetensors"));
  CliResult r = train(rec, "--set train.max_steps=2 --resume " + (d / "run").string());
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(contains(r.out, "step-00000002 is damaged: trainable.safetensors does not match its SHA-256"));
  CHECK(contains(r.out, "resuming from " + (ck / "step-00000001").string()));
  // Step 2 trained again and swapped in for the damaged one.
  CHECK(lora::train_state_verify((ck / "step-00000002").string()).empty());
  // Every checkpoint damaged: an error naming each, no training.
  flip_last_byte(ck / "step-00000001" / "optimizer.safetensors");
  fs::resize_file(ck / "step-00000002" / "state.json", 3);
  CliResult none = train(rec, "--resume " + (d / "run").string());
  check_clean_error(none, 1, "no intact committed checkpoint");
  CHECK(contains(none.out, "step-00000001 is damaged: optimizer.safetensors"));
  CHECK(contains(none.out, "step-00000002 is damaged: state.json has 3 bytes"));
  fs::remove_all(d);
}

TEST_CASE("output.overwrite clears the previous run: its checkpoints are neither pruned into nor resumed") {
  auto d = scratch_dir("rel-overwrite");
  const fs::path rec = recipe(d);
  REQUIRE(train(rec, "--set train.max_steps=6 --set output.save_every=2").code == 0);
  CliResult again = train(rec, "--set output.overwrite=true --set train.max_steps=3 --set output.save_every=1");
  INFO(again.out);
  REQUIRE(again.code == 0);
  CHECK(contains(again.out, "output.overwrite: removed the previous run's checkpoints"));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d / "run" / "checkpoints")) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"step-00000002", "step-00000003"});
  CHECK(metrics_steps(d / "run" / "metrics.jsonl") == std::vector<int64_t>{1, 2, 3});
  // The console log starts again too: one run's "training on" line, not two.
  const std::string log = lora::file_read((d / "run" / "train.log").string());
  CHECK(log.find("training on") != std::string::npos);
  CHECK(log.find("training on") == log.rfind("training on"));
  fs::remove_all(d);
}

TEST_CASE("a resume clears a killed run's temporaries and continues metrics.jsonl without duplicates") {
  auto d = scratch_dir("rel-strays");
  const fs::path rec = recipe(d);
  REQUIRE(train(rec, "--set train.max_steps=4 --set output.save_every=2").code == 0);
  const fs::path run = d / "run", ck = run / "checkpoints";
  // As if killed after logging step 4 and part of step 5, while saving step 4 and pruning step 2.
  fs::rename(ck / "step-00000004", ck / ".tmp-step-00000004");
  fs::create_directories(ck / ".prune-step-00000000");
  fs::create_directories(ck / "step-00000007");
  write_text(run / "recipe.yaml.tmp", "half");
  fs::remove(run / "adapter_model.safetensors");
  std::ofstream(run / "metrics.jsonl", std::ios::app) << "{\"step\": 5, \"lo";
  CliResult r = train(rec, "--set train.max_steps=4 --resume " + run.string());
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(contains(r.out, "resuming from " + (ck / "step-00000002").string()));
  CHECK(contains(r.out, "removed an uncommitted checkpoint"));
  CHECK(contains(r.out, "metrics.jsonl: dropped 3 record(s) written after step 2"));
  for (const fs::path& p : {ck / ".prune-step-00000000", ck / "step-00000007", run / "recipe.yaml.tmp"}) {
    CAPTURE(p);
    CHECK(!fs::exists(p));
  }
  CHECK(metrics_steps(run / "metrics.jsonl") == std::vector<int64_t>{1, 2, 3, 4});
  CHECK(fs::exists(run / "adapter_model.safetensors"));
  fs::remove_all(d);
}

TEST_CASE("a run killed before its first checkpoint is started again; its resume says so") {
  auto d = scratch_dir("rel-first");
  const fs::path rec = recipe(d);
  REQUIRE(train(rec).code == 0);
  const fs::path run = d / "run";
  // What a run killed during its first steps leaves: the stored recipe and some metrics.
  for (const char* f : {"checkpoints", "adapter_model.safetensors", "adapter_config.json"}) fs::remove_all(run / f);
  CliResult resumed = train(rec, "--resume " + run.string());
  check_clean_error(resumed, 1, "stopped before its first checkpoint");
  CliResult validated = lora_run("validate " + rec.string());
  INFO(validated.out);
  CHECK(validated.code == 0);
  CHECK(!contains(validated.out, "already holds a run"));
  CHECK(contains(resumed.out, "without --resume"));
  CliResult rerun = train(rec);
  INFO(rerun.out);
  CHECK(rerun.code == 0);
  CHECK(contains(rerun.out, "stopped before its first checkpoint: starting it again"));
  CHECK(fs::exists(run / "adapter_model.safetensors"));
  // A finished run is still refused.
  check_clean_error(train(rec), 2, "already holds a run");
  fs::remove_all(d);
}

TEST_CASE("training data edited in place between stop and resume is refused") {
  auto d = scratch_dir("rel-data");
  const fs::path rec = recipe(d);
  REQUIRE(train(rec).code == 0);
  write_text(d / "train.txt", "name : Zizzi | Type : pub||Zizzi is a pub . \nname : Aromi | food : Italian||Aromi serves Italian food . \n");
  CliResult r = lora_run("train " + rec.string() + " --set train.max_steps=3 --resume " + (d / "run").string());
  check_clean_error(r, 2, "the training data " + (d / "train.txt").string() + " changed since the checkpoint was saved");
  fs::remove_all(d);
}

TEST_CASE("eval and generate refuse an adapter holding a NaN, naming the tensor") {
  auto d = scratch_dir("rel-nan");
  const fs::path rec = recipe(d);
  REQUIRE(train(rec).code == 0);
  const std::string weights = (d / "run" / "adapter_model.safetensors").string();
  lora::SafetensorsFile st = lora::SafetensorsFile::open(weights);
  std::vector<std::pair<std::string, lora::Tensor>> tensors;
  for (const auto& e : st.entries()) tensors.push_back({e.name, st.to_f32(e)});
  REQUIRE(tensors.size() > 1);
  tensors[1].second.f32()[2] = std::numeric_limits<float>::infinity();
  lora::safetensors_write(weights + ".new", tensors, {{"format", "pt"}});
  fs::rename(weights + ".new", weights);
  const std::string named = "tensor '" + tensors[1].first + "' holds 1 NaN or infinite value(s) (the first at element 2";
  check_clean_error(lora_run("eval " + rec.string() + " --adapter " + (d / "run").string() + " --split train --no-generate"),
                    1, named);
  check_clean_error(lora_run("generate " + rec.string() + " --adapter " + (d / "run").string() + " --prompt 'name : Aromi'"),
                    1, named);
  fs::remove_all(d);
}

TEST_CASE("a non-finite step is named with its step and tensor: aborted, or skipped at most nonfinite_skips in a row") {
  auto d = scratch_dir("rel-nonfinite");
  const fs::path rec = recipe(d);
  // An absurd learning rate: step 1 moves the adapters by about 1e30, so step 2's activations overflow.
  const std::string diverge = "--set train.lr=1e30 --set train.max_steps=4 --set train.schedule=constant";
  CliResult abort = train(rec, diverge);
  check_clean_error(abort, 1, "training diverged at step 2: the loss is not finite (train.nonfinite: abort)");
  CliResult skip = train(rec, diverge + " --set output.overwrite=true --set train.nonfinite=skip --set train.nonfinite_skips=2");
  check_clean_error(skip, 1, "training diverged at step 2: the loss is not finite on 3 batches in a row, more than "
                             "train.nonfinite_skips 2");
  CHECK(contains(skip.out, "step 2 skipped: the loss is not finite (train.nonfinite: skip; 1 of at most 2 in a row)"));
  CHECK(contains(skip.out, "2 of at most 2 in a row"));
  check_clean_error(train(rec, "--set train.nonfinite=ignore"), 2, "train.nonfinite");
  fs::remove_all(d);
}

TEST_CASE("a data source that is a FIFO is refused by validate and train instead of hanging") {
  auto d = scratch_dir("rel-fifo");
  const fs::path rec = recipe(d);
  const fs::path fifo = d / "fifo.txt";
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
  const std::string set = " --set data.train=" + fifo.string();
  // `timeout`: before the fix validate waited forever for a writer.
  CliResult v = lora_run("validate " + rec.string() + set, "timeout 120");
  check_clean_error(v, 1, "dataset source '" + fifo.string() + "' is a FIFO, expected a regular file");
  CliResult t = lora_run("train " + rec.string() + set, "timeout 120");
  check_clean_error(t, 1, "is a FIFO");
  fs::remove_all(d);
}

TEST_CASE("a path that is not UTF-8 is refused before any step, naming the key") {
  auto d = scratch_dir("rel-utf8");
  const fs::path rec = recipe(d);
  const fs::path odd = d / "mod\xff" "el";
  fs::create_directory_symlink(kBase, odd);
  CliResult r = train(rec, "--set model.path='" + odd.string() + "'");
  check_clean_error(r, 2, "model.path: the path is not valid UTF-8 (byte 0xff at offset " +
                              std::to_string(odd.string().size() - 3) + ")");
  CHECK(!contains(r.out, "step 1"));
  CHECK(!fs::exists(d / "run" / "recipe.yaml"));
  fs::remove_all(d);
}
