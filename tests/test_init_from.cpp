// lora.init_from, the paper's MNLI start for MRPC, RTE and STS-B, on a tiny RoBERTa: a "source" run learns
// a 3-way task (how often "pub" occurs in the second sentence, 0-2, standing in for MNLI) and a "target"
// run starts from its adapter on a 2-way task (whether "pub" occurs, standing in for MRPC). Checks: the
// first weights are the source's LoRA A and B bit for bit; a head of another number of labels starts
// exactly as it would without init_from, one of the same shape is the source's (the target's step-0
// evaluation equals the source's last); the target trains on and learns; --resume continues from the
// checkpoint without reading init_from; each bad input stops train, --dry-run and validate with its
// message; on GPT-2, q and v inside c_attn are read from the block-structured adapter lora writes.
#include <doctest/doctest.h>

#include <cstring>

#include "core/train/adapter_init.h"
#include "core/session/recipe.h"
#include "core/formats/safetensors.h"
#include "core/session/session.h"
#include "core/train/trainer.h"
#include "tests/glue_test_util.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;
using nlohmann::json;
using glue_test::jsonl_of;
using glue_test::make_examples;
using glue_test::eval_records;
using glue_test::read_text;

namespace {

struct Setup {
  fs::path dir, source_recipe, source, recipe;
  std::string log;
  bool ok = false;
};

// The source run (3 labels) and the target recipe (2 labels, lora.init_from: source, relative to the recipe).
const Setup& setup() {
  static Setup s = [] {
    Setup x;
    x.dir = temp_dir();
    CliResult init = glue_test::tiny_roberta_write(x.dir);
    x.log = init.out;
    if (init.code != 0) return x;
    glue_test::tiny_roberta_head_strip(x.dir / "base");  // as roberta-base: a head of model.num_labels starts fresh
    write_text(x.dir / "three-train.jsonl", jsonl_of(make_examples(768, 21, 2)));
    write_text(x.dir / "three-dev.jsonl", jsonl_of(make_examples(96, 22, 2)));
    write_text(x.dir / "two-train.jsonl", jsonl_of(make_examples(256, 23)));
    write_text(x.dir / "two-dev.jsonl", jsonl_of(make_examples(96, 24)));
    const std::string common =
        "lora:\n  r: 8\n  alpha: 16\n  targets: [query, value]\n__INIT__"
        "data:\n  train: __TASK__-train.jsonl\n  eval: __TASK__-dev.jsonl\n  max_length: 64\n  cache_dir: __CACHE__\n"
        "train:\n  lr: 3e-3\n  weight_decay: 0.1\n  warmup_ratio: 0.06\n  batch_size: 16\n  epochs: __EPOCHS__\n  seed: 7\n"
        "eval:\n  batch_size: 48\nlog:\n  progress: none\n  every: 1000\n";
    auto recipe = [&](const std::string& labels, const std::string& init, const std::string& task,
                      const std::string& epochs, const std::string& out) {
      std::string r = "model:\n  path: base\n  device: cpu\n  num_labels: " + labels + "\n" + common +
                      "output:\n  dir: " + (x.dir / out).string() + "\n";
      for (auto [key, value] : {std::pair<std::string, std::string>{"__INIT__", init}, {"__TASK__", task}, {"__EPOCHS__", epochs},
                                  {"__CACHE__", (x.dir / "cache").string()}})
        for (size_t at = r.find(key); at != std::string::npos; at = r.find(key, at)) r.replace(at, key.size(), value);
      return r;
    };
    write_text(x.dir / "source.yaml", recipe("3", "", "three", "10", "mnli"));
    write_text(x.dir / "target.yaml", recipe("2", "  init_from: mnli\n", "two", "4", "mrpc"));
    x.source_recipe = x.dir / "source.yaml";
    x.source = x.dir / "mnli";
    x.recipe = x.dir / "target.yaml";
    CliResult train = lora_run("train " + x.source_recipe.string());
    x.log = train.out;
    x.ok = train.code == 0;
    return x;
  }();
  return s;
}


bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape == b.shape && std::memcmp(a.f32(), b.f32(), size_t(a.numel()) * sizeof(float)) == 0;
}

// The model's weights before the first step, set up as `lora train` sets them up.
struct Start {
  Session s;
  std::vector<std::string> notes;
  Start(const Recipe& r, bool resume = false) : s(session_open(r, true, true)), notes(train_weights_init(*s.model, r, resume)) {}
  Tensor get(const Tensor& t) { return s.be->download(t); }
};

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace

TEST_CASE("init_from: the first weights are the source adapter's A and B bit for bit; a 3-label head is not taken") {
  const Setup& x = setup();
  INFO(x.log);
  REQUIRE(x.ok);
  Recipe r = recipe_load(x.recipe.string());
  CHECK(r.lora.init_from == (x.dir / "mnli").string());  // relative to the recipe file
  Start from(r);
  INFO(joined(from.notes));
  CHECK(contains(joined(from.notes), "LoRA A and B of 4 layers from"));
  CHECK(contains(joined(from.notes), "has 3 outputs (classifier.out_proj (3, 64)), this model 2 (model.num_labels): "
                                     "the head is initialised as without lora.init_from"));
  SafetensorsFile st = SafetensorsFile::open((x.source / "adapter_model.safetensors").string());
  int compared = 0;
  for (auto& blk : from.s.model->blocks())
    for (Linear* lin : blk.linears())
      for (LoraAdapter& ad : lin->adapters) {
        const std::string key = "base_model.model.roberta." + lin->hf_name;
        const Tensor a = st.to_f32(*st.find(key + ".lora_A.weight")), b = st.to_f32(*st.find(key + ".lora_B.weight"));
        CHECK_MESSAGE(same_bits(from.get(ad.a), a), key);
        CHECK_MESSAGE(same_bits(from.get(ad.b), b), key);
        CHECK_MESSAGE(same_bits(from.get(ad.a_val), a), key);  // what the forward pass reads
        compared += 2;
      }
  CHECK(compared == 8);

  // Without init_from: another A, B zero, and the very same head, bit for bit.
  Recipe fresh_r = r;
  fresh_r.lora.init_from.clear();
  Start fresh(fresh_r);
  CHECK(fresh.notes.empty());
  Linear& v0 = fresh.s.model->blocks()[0].v;
  CHECK(!same_bits(fresh.get(v0.adapters[0].a), from.get(from.s.model->blocks()[0].v.adapters[0].a)));
  Tensor b0 = fresh.get(v0.adapters[0].b);
  CHECK(std::all_of(b0.f32(), b0.f32() + b0.numel(), [](float f) { return f == 0.0f; }));
  ClassifierHead &h1 = from.s.model->classifier(), &h2 = fresh.s.model->classifier();
  for (auto [t1, t2] : {std::pair<Tensor*, Tensor*>{&h1.dense_w, &h2.dense_w}, {&h1.dense_b, &h2.dense_b},
                        {&h1.out_w, &h2.out_w}, {&h1.out_b, &h2.out_b}})
    CHECK(same_bits(from.get(*t1), fresh.get(*t2)));
  // A differently seeded fresh head differs: the comparison above can fail.
  fresh_r.train.seed = 8;
  Start other(fresh_r);
  CHECK(!same_bits(other.get(other.s.model->classifier().dense_w), from.get(h1.dense_w)));
}

TEST_CASE("init_from: a head of the same shape is the source's too; the step-0 evaluation equals the source's last") {
  const Setup& x = setup();
  REQUIRE(x.ok);
  Recipe r = recipe_load(x.recipe.string(), {"model.num_labels=3"});
  Start from(r);
  CHECK(contains(joined(from.notes), "the classification head (3 outputs) is taken from the adapter too"));
  SafetensorsFile st = SafetensorsFile::open((x.source / "adapter_model.safetensors").string());
  ClassifierHead& h = from.s.model->classifier();
  CHECK(same_bits(from.get(h.dense_w), st.to_f32(*st.find("base_model.model.classifier.dense.weight"))));
  CHECK(same_bits(from.get(h.out_b), st.to_f32(*st.find("base_model.model.classifier.out_proj.bias"))));

  // Through the binary: the target's evaluation before its first step, on the source's dev set, is the
  // source's final evaluation, to the last bit of the JSON double.
  const fs::path out = x.dir / "same-head";
  CliResult run = lora_run("train " + x.recipe.string() + " --set model.num_labels=3 --set data.eval=" +
                           (x.dir / "three-dev.jsonl").string() + " --set train.max_steps=1 --set output.dir=" + out.string());
  INFO(run.out);
  REQUIRE(run.code == 0);
  CHECK(contains(run.out, "lora.init_from: LoRA A and B of 4 layers from " + (x.dir / "mnli").string()));
  const std::vector<json> source = eval_records(x.source), target = eval_records(out);
  REQUIRE(source.size() >= 2);  // before training, every tenth of the run, the final one last
  REQUIRE(target.size() == 2);  // one step: before it and at the end
  CHECK(target.front()["step"] == 0);
  CHECK(target.front()["eval_loss"].get<double>() == source.back()["eval_loss"].get<double>());
  CHECK(target.front()["eval_accuracy"].get<double>() == source.back()["eval_accuracy"].get<double>());
  CHECK(source.back()["eval_accuracy"].get<double>() > 0.8);  // the source learned its task
}

TEST_CASE("init_from: the target trains on from the source's adapter and learns its own task") {
  const Setup& x = setup();
  REQUIRE(x.ok);
  CliResult run = lora_run("train " + x.recipe.string());
  INFO(run.out);
  REQUIRE(run.code == 0);
  CHECK(contains(run.out, "the head is initialised as without lora.init_from"));
  const std::vector<json> evals = eval_records(x.dir / "mrpc");
  REQUIRE(evals.size() >= 2);  // before training, every tenth of the run, the final one last
  const double before = evals.front()["eval_accuracy"].get<double>(), after = evals.back()["eval_accuracy"].get<double>();
  MESSAGE("target from the source's adapter: held-out accuracy " << before << " -> " << after);
  CHECK(before < 0.75);  // a fresh head: the encoder knows "pub", the head does not yet
  CHECK(after > 0.9);
  // The run's adapter moved on from the source's.
  CHECK(read_text(x.dir / "mrpc" / "adapter_model.safetensors") != read_text(x.source / "adapter_model.safetensors"));
  // The source's adapter is what makes it quick: 8 steps from it (measured: accuracy 0.98) against 8 from
  // a fresh adapter (0.53, still at chance; the fresh start needs tens of steps to take off).
  double acc[2];
  for (int from : {0, 1}) {
    const fs::path out = x.dir / (from ? "eight-from" : "eight-fresh");
    CliResult r = lora_run("train " + x.recipe.string() + " --set train.max_steps=8 --set output.dir=" + out.string() +
                           (from ? "" : " --set lora.init_from="));
    REQUIRE(r.code == 0);
    acc[from] = eval_records(out).back()["eval_accuracy"].get<double>();
  }
  MESSAGE("after 8 steps: accuracy " << acc[1] << " from the source's adapter, " << acc[0] << " from a fresh one");
  CHECK(acc[1] > 0.9);
  CHECK(acc[0] < 0.7);
  CHECK(contains(lora_run("info " + (x.dir / "mrpc").string()).out, "started from " + (x.dir / "mnli").string()));
  // Its stored recipe names the source, relative to where it is stored.
  CHECK(recipe_load((x.dir / "mrpc" / "recipe.yaml").string()).lora.init_from == (x.dir / "mnli").string());
}

TEST_CASE("init_from: --resume continues from the checkpoint and never reads init_from again") {
  const Setup& x = setup();
  REQUIRE(x.ok);
  // The source is gone by the time the job is requeued: resuming must not need it.
  const glue_test::ResumeRuns runs =
      glue_test::resume_from_step3(x.recipe, x.dir, " --set lora.init_from=" + (x.dir / "gone").string());
  CHECK(contains(runs.out.out, "at step 3"));
  CHECK(contains(runs.out.out, "lora.init_from is not read when resuming"));
  CHECK(read_text(runs.whole / "adapter_model.safetensors") == read_text(runs.resumed / "adapter_model.safetensors"));
  // In code: train_weights_init with resume leaves the fresh init for the checkpoint to overwrite.
  Recipe r = recipe_load(x.recipe.string());
  Start res(r, /*resume=*/true);
  Tensor b0 = res.get(res.s.model->blocks()[0].q.adapters[0].b);
  CHECK(std::all_of(b0.f32(), b0.f32() + b0.numel(), [](float f) { return f == 0.0f; }));
}

TEST_CASE("init_from: each bad source stops train with its message, before any step") {
  const Setup& x = setup();
  REQUIRE(x.ok);
  const std::string train = "train " + x.recipe.string() + " --set output.dir=" + (x.dir / "bad").string() + " ";
  auto from = [&](const fs::path& p) { return train + "--set lora.init_from=" + p.string(); };

  check_clean_error(lora_run(from(x.dir / "nowhere")), 1, "lora.init_from: '" + (x.dir / "nowhere").string() + "' does not exist");
  check_clean_error(lora_run(from(x.dir / "two-train.jsonl")), 1, "is not a directory");
  fs::create_directories(x.dir / "empty");
  CliResult empty = lora_run(from(x.dir / "empty"));
  check_clean_error(empty, 1, "is not an adapter directory: it has no adapter_config.json");
  CHECK(contains(empty.out, "hint: point lora.init_from at the output directory of a finished `lora train` run"));
  check_clean_error(lora_run(from(x.dir / "base")), 2, "is a model directory (config.json), not an adapter");
  // A run that has not finished: checkpoints but no adapter yet.
  fs::create_directories(x.dir / "unfinished");
  fs::copy(x.source / "checkpoints", x.dir / "unfinished" / "checkpoints", fs::copy_options::recursive);
  CliResult unfinished = lora_run(from(x.dir / "unfinished"));
  check_clean_error(unfinished, 1, "holds checkpoints of a run but no adapter: that run has not finished");
  CHECK(contains(unfinished.out, "--resume " + (x.dir / "unfinished").string()));
  // A finished full fine-tune has a model, no adapter.
  fs::create_directories(x.dir / "full-run" / "model");
  fs::copy_file(x.dir / "base" / "config.json", x.dir / "full-run" / "model" / "config.json");
  check_clean_error(lora_run(from(x.dir / "full-run")), 2, "is the output of a full fine-tune (lora.mode full), which has no adapter");
  // A pickle is refused, as everywhere.
  fs::create_directories(x.dir / "pickle");
  write_text(x.dir / "pickle" / "adapter_model.bin", "not read");
  write_text(x.dir / "pickle" / "adapter_config.json", "{}");
  check_clean_error(lora_run(from(x.dir / "pickle")), 1, "lora.init_from: '" + (x.dir / "pickle").string() + "' holds adapter_model.bin");

  // The recipe against the adapter: rank, layers, targets, scale.
  CliResult rank = lora_run(train + "--set lora.r=4 --set lora.alpha=8");
  check_clean_error(rank, 2, "lora.init_from: the adapter in '" + x.source.string() + "' has another rank than the recipe");
  CHECK(contains(rank.out, "base_model.model.roberta.encoder.layer.0.attention.self.query.lora_A.weight (8, 64)"));
  CHECK(contains(rank.out, "rank 8, the recipe's is 4 (lora.r)"));
  CHECK(contains(rank.out, "hint: set lora.r to the adapter's rank (its adapter_config.json: r 8, lora_alpha 16.0, "
                           "target_modules [\"query\",\"value\"]"));
  CliResult key = lora_run(train + "--set lora.targets=[query,key,value]");
  check_clean_error(key, 2, "adapt different layers");
  CHECK(contains(key.out, "the recipe adapts encoder.layer.0.attention.self.key; the adapter has no weights for it"));
  CHECK(contains(key.out, "hint: set lora.targets and lora.layers as the adapter was trained"));
  CliResult query = lora_run(train + "--set lora.targets=[query]");
  check_clean_error(query, 2, "base_model.model.roberta.encoder.layer.1.attention.self.value.lora_A.weight: "
                              "the recipe does not adapt encoder.layer.1.attention.self.value");
  check_clean_error(lora_run(train + "--set lora.layers=[1]"), 2, "the recipe does not adapt encoder.layer.0.attention.self.query");
  CliResult alpha = lora_run(train + "--set lora.alpha=8");
  check_clean_error(alpha, 2, "scales its update differently from the recipe");
  CHECK(contains(alpha.out, "scale 2 (lora_alpha 16.0 / r 8), the recipe's is 1 (lora.alpha 8.0 / lora.r 8)"));
  CHECK(contains(alpha.out, "hint: set lora.alpha and lora.rslora as the adapter was trained (lora_alpha 16.0, use_rslora false)"));
  check_clean_error(lora_run(train + "--set lora.rslora=true"), 2, "the recipe's is 5.65685 (lora.alpha 16.0 / sqrt(lora.r 8))");

  // The model against the adapter: another width, a language model.
  REQUIRE(glue_test::tiny_roberta_write(x.dir, 32, "config-32.json", "base-32").code == 0);
  CliResult narrow = lora_run(train + "--set model.path=" + (x.dir / "base-32").string());
  check_clean_error(narrow, 2, "do not fit this model's layers");
  CHECK(contains(narrow.out, "query.lora_A.weight (8, 64) and "));
  CHECK(contains(narrow.out, ": the layer is 32 x 32 (out x in)"));
  CHECK(contains(narrow.out, "model.path must be the base it was trained on (its adapter_config.json names '"));
  CliResult lm = lora_run(train + "--set model.path=" LORA_SOURCE_DIR "/data/quickstart/base-model --set model.num_labels=0 "
                          "--set data.train=" LORA_SOURCE_DIR "/data/quickstart/train.txt --set data.eval= --set lora.targets=[q,v]");
  check_clean_error(lm, 2, "holds a classification head (modules_to_save classifier) but this gpt2 model is a language model");

  // A head with a missing tensor.
  fs::create_directories(x.dir / "headless");
  fs::copy_file(x.source / "adapter_config.json", x.dir / "headless" / "adapter_config.json");
  SafetensorsFile st = SafetensorsFile::open((x.source / "adapter_model.safetensors").string());
  std::vector<std::pair<std::string, Tensor>> kept;
  for (const auto& e : st.entries())
    if (e.name != "base_model.model.classifier.out_proj.bias") kept.push_back({e.name, st.to_f32(e)});
  safetensors_write((x.dir / "headless" / "adapter_model.safetensors").string(), kept, {}, DType::f32);
  CliResult headless = lora_run(from(x.dir / "headless"));
  check_clean_error(headless, 2, "has an incomplete classification head; missing:");
  CHECK(contains(headless.out, "base_model.model.classifier.out_proj.bias"));

  // Recipe checks: full fine-tuning has no adapters; the run's own output directory is --resume's job.
  check_clean_error(lora_run(train + "--set lora.mode=full"), 2, "lora.init_from: starts LoRA adapters from a trained adapter, but lora.mode is full");
  check_clean_error(lora_run("train " + x.recipe.string() + " --set output.dir=" + x.source.string() + " --set output.overwrite=true"),
                    2, "lora.init_from: is this run's own output.dir");
  CHECK(!fs::exists(x.dir / "bad" / "metrics.jsonl"));  // no run started
}

TEST_CASE("init_from: --dry-run and lora validate report what train would take or refuse") {
  const Setup& x = setup();
  REQUIRE(x.ok);
  CliResult dry = lora_run("train " + x.recipe.string() + " --dry-run");
  INFO(dry.out);
  REQUIRE(dry.code == 0);
  CHECK(contains(dry.out, "init_from: " + (x.dir / "mnli").string()));  // the resolved recipe
  CHECK(contains(dry.out, "lora.init_from: LoRA A and B of 4 layers from"));
  CHECK(contains(dry.out, "the head is initialised as without lora.init_from"));
  check_clean_error(lora_run("train " + x.recipe.string() + " --dry-run --set lora.r=4"), 2, "has another rank than the recipe");

  CliResult ok = lora_run("validate " + x.recipe.string());
  INFO(ok.out);
  CHECK(ok.code == 0);
  CHECK(contains(ok.out, "init_from   ok       LoRA A and B of 4 layers from"));
  CliResult bad = lora_run("validate " + x.recipe.string() + " --set lora.targets=[query,key,value]");
  check_clean_error(bad, 2, "the recipe adapts encoder.layer.0.attention.self.key; the adapter has no weights for it");
  CliResult missing = lora_run("validate " + x.recipe.string() + " --set lora.init_from=" + (x.dir / "nowhere").string());
  check_clean_error(missing, 1, "does not exist");
}

TEST_CASE("init_from on GPT-2: q and v inside c_attn come back from the block-structured adapter, bit for bit") {
  const fs::path d = temp_dir();
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(LORA_SOURCE_DIR "/data/quickstart/base-model");
  LoraSpec spec;
  spec.r = 4;
  spec.alpha = 8;
  spec.targets = {"q", "v"};
  spec.layers = {1, 3};
  spec.init_seed = 3;
  Model src(*be, ck.config());
  src.load_base(ck);
  src.lora_init(spec);
  trainables_perturb(src, 0.37f);  // B off zero everywhere inside its blocks
  adapter_save(src, (d / "qv").string(), "base-model");

  spec.init_seed = 4;
  Model dst(*be, ck.config());
  dst.load_base(ck);
  dst.lora_init(spec);
  std::vector<std::string> notes = adapter_init_from(dst, (d / "qv").string());
  CHECK(contains(joined(notes), "LoRA A and B of 2 layers"));  // c_attn in blocks 1 and 3
  int compared = 0;
  for (int l : {1, 3})
    for (int slot = 0; slot < Block::kSlots; ++slot) {
      const Linear &ls = *src.blocks()[size_t(l)].slot(slot), &ld = *dst.blocks()[size_t(l)].slot(slot);
      REQUIRE(ls.adapters.size() == ld.adapters.size());
      for (size_t k = 0; k < ls.adapters.size(); ++k) {
        INFO(ls.hf_name << " " << ls.adapters[k].role);
        CHECK(same_bits(be->download(ls.adapters[k].a), be->download(ld.adapters[k].a)));
        CHECK(same_bits(be->download(ls.adapters[k].b), be->download(ld.adapters[k].b)));
        ++compared;
      }
    }
  CHECK(compared == 4);  // q and v in two blocks
  Tensor tokens = tensor_host({1, 6}, DType::i32), lengths = tensor_host({1}, DType::i32);
  for (int t = 0; t < 6; ++t) tokens.i32()[t] = 10 + 7 * t;
  lengths.i32()[0] = 6;
  CHECK(same_bits(src.logits(tokens, lengths), dst.logits(tokens, lengths)));

  // The same block-structured file read as one whole-layer adapter on c_attn (rank 2r, alpha 2 alpha: the
  // same scale) works too; a whole-layer adapter cannot become q and v apart.
  LoraSpec whole = spec;
  whole.r = 8;
  whole.alpha = 16;
  whole.targets = {"c_attn"};
  Model as_whole(*be, ck.config());
  as_whole.load_base(ck);
  as_whole.lora_init(whole);
  adapter_init_from(as_whole, (d / "qv").string());
  CHECK(rel_error(as_whole.logits(tokens, lengths), src.logits(tokens, lengths)) < 1e-5);  // one rank-8 product
  trainables_perturb(as_whole, 0.11f);
  adapter_save(as_whole, (d / "whole").string(), "base-model");
  Model back(*be, ck.config());
  back.load_base(ck);
  back.lora_init(spec);
  Error e = error_of([&] { adapter_init_from(back, (d / "whole").string()); });
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.what(), "adapts whole layers where the recipe adapts parts of them"));
  CHECK(contains(e.what(), "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight: "));
  CHECK(contains(e.hint(), "[c_attn] rather than [q, v]"));
}

}  // namespace
