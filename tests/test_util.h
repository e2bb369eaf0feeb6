// Helpers shared by the test executables: scratch directories, running the built `lora` binary,
// catching lora::Error, normwise error measures, the golden batch of tests/fixtures/golden, and the
// check of generate() against a generation fixture.
#pragma once
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/generate.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "core/safetensors.h"
#include "core/tensor.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

struct CliResult {
  int code = -1;
  std::string out;  // stdout and stderr together
};

inline std::string temp_dir();

// The working directory of lora_run: a scratch directory of this process, removed at exit, so that what
// a command writes relative to its working directory never lands in the source tree.
inline const std::string& lora_run_dir() {
  static const std::string dir = temp_dir();
  return dir;
}

// Runs `lora <args>` through the shell from lora_run_dir(), stdin closed. Paths in args are absolute, or
// relative to that directory.
inline CliResult lora_run(const std::string& args, const std::string& env = "") {
  const std::string& cwd = lora_run_dir();
  const std::string log = cwd + "/lora-cli.log";
  std::string cmd = "cd " + cwd + " && " + env + " " LORA_BIN " " + args + " </dev/null >" + log + " 2>&1";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  std::filesystem::remove(log);
  return r;
}

inline std::filesystem::path scratch_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("lora-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

inline bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// A fresh directory under /tmp, removed with everything in it when the test binary exits.
inline std::string temp_dir() {
  struct Cleanup {
    std::vector<std::string> dirs;
    ~Cleanup() {
      for (const auto& d : dirs) {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
      }
    }
  };
  static Cleanup cleanup;
  char tmpl[] = "/tmp/lora_test_XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  cleanup.dirs.push_back(tmpl);
  return tmpl;
}

// The lora::Error that f throws (a failed check if it throws none).
template <class F>
lora::Error error_of(F&& f) {
  try {
    f();
  } catch (const lora::Error& e) {
    return e;
  }
  FAIL_CHECK("expected a lora::Error");
  return lora::Error(0, "");
}

// A user error as the command line shows it: the exit code, one "error:" line naming `needle`, and
// never a crash or an abort.
inline void check_clean_error(const CliResult& r, int code, const std::string& needle) {
  INFO(r.out);
  CHECK(r.code == code);
  CHECK(contains(r.out, "error: "));
  CHECK(contains(r.out, needle));
  CHECK(!contains(r.out, "terminate called"));
  CHECK(!contains(r.out, "Segmentation"));
}

// Normwise relative error: max |ours - ref| / max |ref|, so entries near zero do not dominate.
inline double rel_error(const lora::Tensor& ours, const lora::Tensor& ref) {
  REQUIRE(ours.numel() == ref.numel());
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(ours.f32()[i] - ref.f32()[i])));
    max_ref = std::max(max_ref, double(std::fabs(ref.f32()[i])));
  }
  return max_diff / std::max(max_ref, 1e-30);
}

// tests/fixtures/golden/batch.json: host i32 tokens (B,T), targets (B,T) shifted as HF's loss shifts
// them (the target of position t is labels[t + 1]), lengths (B).
struct GoldenBatch {
  lora::Tensor tokens, targets, lengths;
  int B = 0, T = 0;
};

inline GoldenBatch golden_batch() {
  auto j = lora::json_read_file(std::string(LORA_FIXTURES) + "/golden/batch.json");
  GoldenBatch g;
  g.B = int(j["input_ids"].size());
  g.T = int(j["input_ids"][0].size());
  g.tokens = lora::tensor_host({g.B, g.T}, lora::DType::i32);
  g.targets = lora::tensor_host({g.B, g.T}, lora::DType::i32);
  g.lengths = lora::tensor_host({g.B}, lora::DType::i32);
  for (int b = 0; b < g.B; ++b) {
    g.lengths.i32()[b] = j["lengths"][b].get<int>();
    for (int t = 0; t < g.T; ++t) {
      g.tokens.i32()[b * g.T + t] = j["input_ids"][b][t].get<int>();
      g.targets.i32()[b * g.T + t] = t + 1 < g.T ? j["labels"][b][t + 1].get<int>() : -100;
    }
  }
  return g;
}

// Normwise relative error over the valid (unpadded) positions of (B,T,V) logits.
inline double logits_rel_error(const lora::Tensor& ours, const lora::Tensor& ref, const GoldenBatch& g) {
  const int64_t V = ref.dim(2);
  double max_diff = 0, max_ref = 0;
  for (int b = 0; b < g.B; ++b)
    for (int t = 0; t < g.lengths.i32()[b]; ++t)
      for (int64_t v = 0; v < V; ++v) {
        int64_t i = (int64_t(b) * g.T + t) * V + v;
        max_diff = std::max(max_diff, double(std::fabs(ours.f32()[i] - ref.f32()[i])));
        max_ref = std::max(max_ref, double(std::fabs(ref.f32()[i])));
      }
  return max_diff / max_ref;
}

// A golden fixture folder (tests/fixtures/golden*): the tiny base model on the CPU backend, the
// reference tensors made by transformers + PEFT, and the golden batch.
struct GoldenModel {
  std::unique_ptr<lora::Backend> be = lora::backend_cpu_create();
  lora::Checkpoint ck;
  lora::Model model;
  lora::SafetensorsFile ref;
  GoldenBatch g = golden_batch();
  GoldenModel(const std::string& dir, const std::string& model_subdir)
      : ck(lora::Checkpoint::open(dir + "/" + model_subdir)),
        model(*be, ck.config()),
        ref(lora::SafetensorsFile::open(dir + "/reference.safetensors")) {
    model.load_base(ck);
  }
  lora::Tensor ref_tensor(const std::string& name) {
    const lora::SafetensorsEntry* e = ref.find(name);
    REQUIRE_MESSAGE(e != nullptr, name);
    return ref.to_f32(*e);
  }
  lora::LossStats loss(float dscale, float label_smoothing = 0) {
    return model.step(g.tokens, g.targets, g.lengths, dscale, label_smoothing, 0, true);
  }
};

// The model's LoRA gradients under PEFT's saved tensor names; prefix: "base_model.model.transformer."
// for GPT-2, "base_model.model.model." for the LLaMA family.
inline std::map<std::string, lora::Tensor*> peft_named_grads(lora::Model& m, const std::string& prefix) {
  std::map<std::string, lora::Tensor*> out;
  for (auto& blk : m.blocks())
    for (lora::Linear* lin : blk.linears())
      for (auto& ad : lin->adapters) {
        out[prefix + lin->hf_name + ".lora_A.weight"] = &ad.da;
        out[prefix + lin->hf_name + ".lora_B.weight"] = &ad.db;
      }
  return out;
}

// Moves every trainable tensor off its initialisation (B starts at zero) by a fixed, non-random pattern,
// 0.05 sin(freq k) for the k-th value, so adapters change the outputs; then refreshes the model's copies.
inline void trainables_perturb(lora::Model& m, float freq) {
  lora::Backend& be = m.backend();
  int k = 0;
  for (auto& p : m.trainable()) {
    lora::Tensor h = be.download(*p.master);
    for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] += 0.05f * std::sin(freq * float(++k));
    be.upload(*p.master, h);
  }
  m.sync_values();
}

// generate() against a generation fixture made by transformers' generate, one prompt at a time
// (format "lora-generate-fixture": tests/fixtures/generate, tests/fixtures/golden-mistral): every case,
// with all prompts batched together and in batches of 1 and 4 (left-padded rows start at different
// slots). base and with_adapter serve the cases with "adapter" false and true. Returns the cases run.
inline int generate_fixture_check(const nlohmann::json& j, lora::Model& base, lora::Model& with_adapter) {
  REQUIRE(j["format"] == "lora-generate-fixture");
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : j["prompts"]) prompts.push_back(p.get<std::vector<int32_t>>());
  int cases = 0;
  for (const auto& c : j["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    lora::Model& m = c["adapter"].get<bool>() ? with_adapter : base;
    lora::GenerateOptions o;
    o.beam_size = c["num_beams"].get<int>();
    o.max_new_tokens = c["max_new_tokens"].get<int>();
    o.length_penalty = c["length_penalty"].get<float>();
    o.no_repeat_ngram_size = c["no_repeat_ngram_size"].get<int>();
    o.eos_id = c["eos_token_id"].get<int32_t>();
    std::vector<std::vector<int32_t>> expected;
    for (const auto& out : c["outputs"]) {
      auto ids = out.get<std::vector<int32_t>>();
      if (!ids.empty() && ids.back() == o.eos_id) ids.pop_back();  // ours leave the final EOS out
      expected.push_back(ids);
    }
    REQUIRE(expected.size() == prompts.size());
    for (int batch : {int(prompts.size()), 1, 4}) {
      CAPTURE(batch);
      o.batch_size = batch;
      size_t calls = 0;
      auto got = lora::generate(m, prompts, o, [&](size_t done) { CHECK(done > 0); ++calls; });
      CHECK(calls == (prompts.size() + batch - 1) / batch);
      REQUIRE(got.size() == expected.size());
      for (size_t i = 0; i < got.size(); ++i) {
        CAPTURE(i);
        CHECK(got[i] == expected[i]);
      }
    }
    ++cases;
  }
  return cases;
}

// The golden fixtures' 10-step AdamW trajectory (trajectory.json: lr, weight_decay, eps, losses, made by
// PEFT with torch.optim.AdamW): each step's loss within 1e-4 relative of PEFT's, then one AdamW step.
// `loss(scale)` runs the fixture's batch forward and backward with the gradient scaled by `scale` (1/15:
// the fixtures' loss tokens). Returns the worst relative error.
template <class LossFn>
double check_adamw_trajectory(lora::Model& model, lora::Backend& be, const std::string& trajectory_path,
                              LossFn&& loss) {
  const nlohmann::json traj = lora::json_read_file(trajectory_path);
  lora::AdamWConfig c;
  c.weight_decay = traj["weight_decay"].get<float>();
  c.eps = traj.value("eps", 1e-8f);
  lora::AdamW opt(be, model.trainable(), c);
  const float lr = traj["lr"].get<float>();
  const auto& losses = traj["losses"];
  REQUIRE(losses.size() == 10);
  double worst = 0;
  for (size_t i = 0; i < losses.size(); ++i) {
    model.zero_grads();
    const lora::LossStats s = loss(1.0f / 15.0f);
    const double ours = s.loss_sum / double(s.tokens), ref = losses[i].get<double>();
    worst = std::max(worst, std::fabs(ours - ref) / ref);
    INFO("step " << i + 1 << ": ours " << ours << ", PEFT " << ref);
    CHECK(std::fabs(ours - ref) / ref < 1e-4);
    opt.step(lr, 1.0f);
    model.sync_values();
  }
  return worst;
}
