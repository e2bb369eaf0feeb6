// The trainer's guarantees: gradient accumulation is exact (4 micro-batches of 1 give the gradient of
// one batch of 4, the loss normalised by all loss tokens of the step), a resumed run reproduces the
// uninterrupted one bit for bit on the CPU (LoRA's dropout on, and the model's hidden and attention
// dropout), and a run is repeatable for a seed.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/adapter.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/recipe.h"
#include "core/safetensors.h"
#include "core/train_state.h"
#include "core/trainer.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {
const std::string kBase = LORA_SOURCE_DIR "/data/quickstart/base-model";

// The first n lines of the quickstart task.
fs::path small_train(const fs::path& dir, int n) {
  std::ifstream in(LORA_SOURCE_DIR "/data/quickstart/train.txt");
  std::string line, text;
  for (int i = 0; i < n && std::getline(in, line); ++i) text += line + "\n";
  write_text(dir / "train.txt", text);
  return dir / "train.txt";
}

Recipe small_recipe(const fs::path& dir) {
  Recipe r;
  r.model.path = kBase;
  r.model.device = "cpu";
  r.data.train = small_train(dir, 24).string();
  r.data.cache_dir = (dir / "cache").string();
  r.data.max_length = 96;
  r.lora.dropout = 0.1;  // exercises the dropout masks' reproducibility
  r.lora.targets = {"q", "v", "down"};
  r.train.batch_size = 4;
  r.train.max_steps = 6;
  r.train.lr = 3e-3;
  r.train.warmup_steps = 2;
  r.output.keep_last = 0;
  r.log.progress = "none";
  r.eval.num_samples = 0;
  return r;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

TEST_CASE("gradient accumulation over micro-batches equals one large batch") {
  auto d = scratch_dir("accum");
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(kBase);
  auto tok = tokenizer_load(kBase);
  auto prep = dataset_prepare(small_train(d, 4).string(), "e2e", *tok, 96, (d / "cache").string());
  Dataset data = Dataset::open(prep.path, ck.config().vocab_size);
  LoraSpec spec;
  spec.r = 4;
  spec.alpha = 8;
  spec.targets = {"q", "v"};
  spec.init_seed = 3;
  auto grads_of = [&](const std::vector<std::vector<int64_t>>& micro) {
    Model m(*be, ck.config());
    m.load_base(ck);
    m.lora_init(spec);
    for (auto& p : m.trainable()) {  // non-zero B so that every gradient is non-trivial
      Tensor h = be->download(*p.master);
      for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] += 0.01f * std::cos(float(i));
      be->upload(*p.master, h);
    }
    m.sync_values();
    int64_t total = 0;
    std::vector<Batch> batches;
    for (const auto& ids : micro) {
      batches.push_back(batch_build(data, ids));
      total += batches.back().n_loss_tokens;
    }
    m.zero_grads();
    for (auto& b : batches) m.step(b.tokens, b.targets, b.lengths, 1.0f / float(total), 0.0f, 0, true);
    std::vector<Tensor> out;
    for (auto& p : m.trainable()) out.push_back(be->download(*p.grad));
    return out;
  };
  auto one = grads_of({{0, 1, 2, 3}});
  auto four = grads_of({{0}, {1}, {2}, {3}});
  REQUIRE(one.size() == four.size());
  for (size_t k = 0; k < one.size(); ++k) {
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < one[k].numel(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(one[k].f32()[i] - four[k].f32()[i])));
      max_ref = std::max(max_ref, double(std::fabs(one[k].f32()[i])));
    }
    INFO("tensor " << k << ": max diff " << max_diff << ", max " << max_ref);
    CHECK(max_ref > 0);
    CHECK(max_diff <= 1e-5 * max_ref);  // fp32 summation order differs between the two
  }
  fs::remove_all(d);
}

namespace {
// Trains r for 6 steps with a checkpoint at step 3, resumes a copy of that checkpoint, and compares step 6.
void check_resume_bit_exact(Recipe r, const fs::path& d) {
  r.output.dir = (d / "full").string();
  r.output.save_every = 3;
  TrainOptions o;
  REQUIRE(train_run(r, o) == 0);
  const fs::path full3 = d / "full" / "checkpoints" / "step-00000003";
  const fs::path full6 = d / "full" / "checkpoints" / "step-00000006";
  REQUIRE(fs::exists(full3 / "COMMITTED"));
  REQUIRE(fs::exists(full6 / "COMMITTED"));
  // A second run directory that holds only the step-3 checkpoint, as if the job died after it.
  fs::create_directories(d / "resumed" / "checkpoints");
  fs::copy(full3, d / "resumed" / "checkpoints" / "step-00000003", fs::copy_options::recursive);
  // An uncommitted, half-written newer checkpoint must be ignored.
  fs::create_directories(d / "resumed" / "checkpoints" / "step-00000005");
  write_text(d / "resumed" / "checkpoints" / "step-00000005" / "state.json", "{ half");
  r.output.dir = (d / "resumed").string();
  o.resume = r.output.dir;
  REQUIRE(train_run(r, o) == 0);
  const fs::path res6 = d / "resumed" / "checkpoints" / "step-00000006";
  REQUIRE(fs::exists(res6 / "COMMITTED"));
  CHECK(file_bytes(full6 / "trainable.safetensors") == file_bytes(res6 / "trainable.safetensors"));
  CHECK(file_bytes(full6 / "optimizer.safetensors") == file_bytes(res6 / "optimizer.safetensors"));
  CHECK(file_bytes(d / "full" / "adapter_model.safetensors") == file_bytes(d / "resumed" / "adapter_model.safetensors"));
  fs::remove_all(d);
}
}  // namespace

TEST_CASE("a resumed run reproduces the uninterrupted one bit for bit") {
  auto d = scratch_dir("resume");
  check_resume_bit_exact(small_recipe(d), d);
}

TEST_CASE("with the model's hidden and attention dropout, a resumed run reproduces the uninterrupted one bit for bit") {
  auto d = scratch_dir("resume-model-dropout");
  Recipe r = small_recipe(d);
  r.model.hidden_dropout = 0.1;  // the masks are functions of (seed, step, micro-batch, site, position)
  r.model.attention_dropout = 0.1;
  check_resume_bit_exact(r, d);
}

TEST_CASE("the same seed gives the same run; another seed does not") {
  auto d = scratch_dir("seed");
  Recipe r = small_recipe(d);
  r.train.max_steps = 3;
  TrainOptions o;
  r.output.dir = (d / "a").string();
  REQUIRE(train_run(r, o) == 0);
  r.output.dir = (d / "b").string();
  REQUIRE(train_run(r, o) == 0);
  r.output.dir = (d / "c").string();
  r.train.seed = 7;
  REQUIRE(train_run(r, o) == 0);
  const std::string a = file_bytes(d / "a" / "adapter_model.safetensors");
  CHECK(a == file_bytes(d / "b" / "adapter_model.safetensors"));
  CHECK(a != file_bytes(d / "c" / "adapter_model.safetensors"));
  fs::remove_all(d);
}

TEST_CASE("a resume checks its recipe against the checkpoint's: what changes training must be the same") {
  auto d = scratch_dir("resume-recipe");
  Recipe r = small_recipe(d);
  r.train.max_steps = 2;
  r.output.dir = (d / "run").string();
  REQUIRE(train_run(r, TrainOptions{}) == 0);
  const std::string ckpt = train_state_latest(r.output.dir);
  REQUIRE(!ckpt.empty());
  // Returns the notices, or "ERROR: message hint" when refused.
  auto check = [&](const Recipe& now) {
    try {
      std::string out;
      for (const auto& n : resume_recipe_check(now, ckpt, r.output.dir)) out += n + "\n";
      return out;
    } catch (const Error& e) {
      CHECK(e.code() == EXIT_CODE_USAGE);
      return "ERROR: " + std::string(e.what()) + " " + e.hint();
    }
  };
  CHECK(check(r) == "");
  // Where and how it runs and reports may change.
  Recipe free = r;
  free.model.device = "auto";
  free.train.recompute = true;
  free.eval.beam_size = 4;
  free.log.every = 7;
  free.output.keep_last = 2;
  CHECK(check(free) == "");
  // Its length may change, with a notice.
  Recipe longer = r;
  longer.train.max_steps = 10;
  CHECK(contains(check(longer), "resuming with train.max_steps 10 (the checkpoint's run had 2)"));
  // What is trained may not: every such key is named, with both values and the exact way to resume.
  Recipe other = r;
  other.train.lr = 1e-3;
  other.lora.r = 4;
  other.lora.targets = {"q", "v"};
  std::string e = check(other);
  CHECK(contains(e, "ERROR: --resume " + r.output.dir + ": this recipe differs from the one the checkpoint ran with"));
  CHECK(contains(e, "lora.r: now 4, the checkpoint ran with 8"));
  CHECK(contains(e, "lora.targets: now [q, v], the checkpoint ran with [q, v, down]"));
  CHECK(contains(e, "train.lr: now 0.001, the checkpoint ran with 0.003"));
  CHECK(contains(e, "lora train " + (fs::path(ckpt) / "recipe.yaml").string() + " --resume " + r.output.dir));
  // A path may differ when it holds the same content, or when the checkpoint's no longer exists (moved).
  Recipe copied = r;
  fs::copy_file(r.data.train, d / "copy.txt");
  copied.data.train = (d / "copy.txt").string();
  CHECK(check(copied) == "");
  write_text(d / "other.txt", "name : Aromi||Aromi is a pub .\n");
  Recipe changed = r;
  changed.data.train = (d / "other.txt").string();
  CHECK(contains(check(changed), "data.train: now " + (d / "other.txt").string() + ", the checkpoint ran with " +
                                     r.data.train + " (other content)"));
  fs::remove(r.data.train);
  CHECK(contains(check(copied), "which no longer exists: taken as the same data, moved"));
  // train_run refuses before it trains.
  TrainOptions o;
  o.resume = r.output.dir;
  CHECK_THROWS_AS(train_run(other, o), Error);
  fs::remove_all(d);
}

}  // namespace
