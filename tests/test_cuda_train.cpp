// Whole training steps on the GPU against the CPU oracle (DESIGN.md section 6; issue 3, "a whole training
// step, and 10 steps, on the GPU against the CPU backend on the golden tiny GPT-2"). On the golden fixture
// (tests/fixtures/golden: gpt2-tiny, the PEFT adapter, batch.json, trajectory.json) the same Model runs on
// backend_cpu_create() and on backend_cuda_create() with f32, bf16 and f16 activations, and we compare
// logits, loss, label-smoothed loss, every LoRA gradient after one backward pass, the loss over the
// golden test's 10 AdamW steps, a LoRA run with dropout, and one with the model's hidden and attention
// dropout (the counter-based RNG of core/backend.h makes the masks equal on both backends, so the losses
// agree to the dtype's tolerance, not just statistically).
//
// Errors are normwise, as in test_golden.cpp: max |gpu - cpu| / max |cpu| over the compared entries, so
// that entries near zero do not dominate. Every comparison prints its error (MESSAGE) so that a passing
// log still shows the margin.
//
// Fixtures are found through, in order: $LORA_FIXTURES_DIR, the source tree's path compiled in
// (LORA_FIXTURES), ./tests/fixtures (a run from a copy of the repository root), and ../fixtures beside
// the executable (a bundle from scripts/gpu_bundle.sh with bin/ and fixtures/).
//
// With no usable CUDA device the suite prints "skipped: no CUDA device (<why>)" and exits 77, which ctest
// reports as skipped (tests/test_suite.h).
#include <doctest/doctest.h>

#include "tests/test_suite.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/adapter.h"
#include "core/backend.h"
#include "core/checkpoint.h"
#include "core/fsutil.h"
#include "core/model.h"
#include "core/optimizer.h"
#include "cuda/backend_cuda.h"
#include "tests/cuda_test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {

// The tolerances, in one place (normwise relative errors, GPU against the CPU backend).
//   f32: the CUDA f32 path is strict fp32 (no TF32, cuda/matmul.cu); only the order of summation differs,
//        so logits and losses agree near 1e-6. 1e-5 as DESIGN.md asks. Gradients and the trajectory get
//        1e-4, as in test_golden.cpp: a gradient is a sum over every (b,t) of products of two backward
//        quantities, and AdamW's first steps are nearly sign(g) per element, which amplifies the relative
//        difference of the smallest gradient entries.
//   bf16: 8 mantissa bits, 2^-9 = 2e-3 relative per rounding. Weights, the residual stream, every matmul
//        input and output are rounded, over 2 blocks: about 5 roundings deep before the logits, which
//        the O(1) activations of the fixture (initializer_range 0.2) pass on without shrinking:
//        about 1e-2, so 2e-2 for logits and losses. Gradients go through the backward chain as well (the
//        loss gradient and every activation gradient rounded again, about twice as deep): 5e-2. The
//        trajectory's losses come from weights updated with those gradients: the gradient tolerance.
//   f16: 11 mantissa bits, 8x finer than bf16 (2^-12 = 2.4e-4 per rounding); the bf16 figures over 4.
// The gradients of the golden adapter after one backward pass are held to DESIGN.md's rule instead: no
// worse than twice a same-precision reference, PyTorch + PEFT run in that dtype on the same batch
// (scripts/make_golden_lowp.py writes its error per tensor into golden/lowp_reference.json: 1.5e-2 to
// 4.2e-2 in bf16, 2e-3 to 5.3e-3 in f16), with `grads_floor` as the floor.
struct Tolerance {
  double logits;       // logits and (label-smoothed) losses
  double grads;        // LoRA gradients of the dropout run (no PyTorch reference for its adapter)
  double grads_floor;  // the least tolerance of a gradient held to twice PyTorch's error
  double trajectory;   // each loss of the 10-step AdamW trajectory
};

Tolerance tolerance(DType act) {
  switch (act) {
    case DType::bf16: return {2e-2, 5e-2, 1e-2, 5e-2};
    case DType::f16: return {5e-3, 1.25e-2, 2.5e-3, 1.25e-2};
    default: return {1e-5, 1e-4, 1e-4, 1e-4};
  }
}

// Twice PyTorch's own error in `act` for the gradient of our tensor `name` ("<hf_name> <role> lora_A"),
// at least tol.grads_floor; f32 gets tol.grads_floor.
// section: "grads" (the golden adapter) or "grads_attn" (adapter-attn, the golden adapter on c_attn alone).
double grad_tolerance(DType act, const Tolerance& tol, const nlohmann::json& lowp, const std::string& name,
                      const std::string& section = "grads") {
  if (act == DType::f32) return tol.grads_floor;
  const std::string hf_name = name.substr(0, name.find(' '));
  const std::string suffix = "." + hf_name + "." + name.substr(name.rfind(' ') + 1) + ".weight";
  for (const auto& [peft_name, err] : lowp.at(dtype_name(act)).at(section).items())
    if (peft_name.size() >= suffix.size() && peft_name.compare(peft_name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return std::max(tol.grads_floor, 2.0 * err.get<double>());
  FAIL("no same-precision reference for " << name << " in lowp_reference.json");
  return 0.0;
}

const std::vector<DType> kActivations = lora_test::test_activations();

// The golden fixture directory, looked for as the header says.
std::string golden_dir() {
  static const std::string dir = [] {
    std::vector<fs::path> candidates;
    if (const char* env = std::getenv("LORA_FIXTURES_DIR")) candidates.emplace_back(env);
    candidates.emplace_back(LORA_FIXTURES);
    candidates.emplace_back("tests/fixtures");
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back(exe.parent_path().parent_path() / "fixtures");
    for (const auto& c : candidates)
      if (fs::exists(c / "golden" / "batch.json")) return (c / "golden").string();
    std::string tried;
    for (const auto& c : candidates) tried += " " + (c / "golden").string();
    std::fprintf(stderr, "test_cuda_train: golden fixtures not found; tried%s\n"
                         "  hint: set LORA_FIXTURES_DIR to the folder that holds golden/\n", tried.c_str());
    std::exit(1);
  }();
  return dir;
}

struct GoldenBatch {
  Tensor tokens, targets, lengths;  // host i32: (B,T), (B,T) with -100 = no loss, (B)
  int B = 0, T = 0;
  int64_t n_targets = 0;
};

GoldenBatch golden_batch() {
  auto j = json_read_file(golden_dir() + "/batch.json");
  GoldenBatch g;
  g.B = int(j["input_ids"].size());
  g.T = int(j["input_ids"][0].size());
  g.tokens = tensor_host({g.B, g.T}, DType::i32);
  g.targets = tensor_host({g.B, g.T}, DType::i32);
  g.lengths = tensor_host({g.B}, DType::i32);
  for (int b = 0; b < g.B; ++b) {
    g.lengths.i32()[b] = j["lengths"][b].get<int>();
    for (int t = 0; t < g.T; ++t) {
      g.tokens.i32()[b * g.T + t] = j["input_ids"][b][t].get<int>();
      // HF shifts inside the loss: the target of position t is labels[t + 1].
      const int y = t + 1 < g.T ? j["labels"][b][t + 1].get<int>() : -100;
      g.targets.i32()[b * g.T + t] = y;
      g.n_targets += y != -100;
    }
  }
  return g;
}

// The one comparison helper: normwise relative error over the entries where mask (if given) is true;
// reports max abs, max |ref|, the error and the first entry whose difference exceeds tol * max |ref|.
double check_normwise(const std::string& what, const Tensor& got, const Tensor& want, double tol,
                      const std::vector<bool>* mask = nullptr) {
  REQUIRE_MESSAGE(got.numel() == want.numel(), what << ": numel " << got.numel() << " vs " << want.numel());
  const float* g = got.f32();
  const float* w = want.f32();
  const int64_t n = want.numel();
  double max_abs = 0.0, max_ref = 0.0;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    if (mask && !(*mask)[size_t(i)]) continue;
    finite = finite && std::isfinite(g[i]);
    max_abs = std::max(max_abs, std::fabs(double(g[i]) - double(w[i])));
    max_ref = std::max(max_ref, std::fabs(double(w[i])));
  }
  const double err = max_abs / std::max(max_ref, 1e-30);
  std::ostringstream os;
  os << what << ": n=" << n << " max_abs=" << max_abs << " max_ref=" << max_ref << " normwise_rel=" << err
     << " tol=" << tol;
  if (!finite || err > tol) {
    for (int64_t i = 0; i < n; ++i) {
      if (mask && !(*mask)[size_t(i)]) continue;
      if (!std::isfinite(g[i]) || std::fabs(double(g[i]) - double(w[i])) > tol * max_ref) {
        os << " | first mismatch at " << i << ": got " << g[i] << ", want " << w[i];
        break;
      }
    }
  }
  MESSAGE(os.str());
  CHECK_MESSAGE((finite && err <= tol), os.str());
  return err;
}

void check_scalar(const std::string& what, double got, double want, double tol) {
  const double err = std::fabs(got - want) / std::max(std::fabs(want), 1e-30);
  std::ostringstream os;
  os << what << ": gpu " << got << ", cpu " << want << ", rel " << err << " tol " << tol;
  MESSAGE(os.str());
  CHECK_MESSAGE((std::isfinite(got) && err <= tol), os.str());
}

// One backend with the tiny GPT-2 loaded on it.
struct Side {
  std::unique_ptr<Backend> be;
  std::unique_ptr<Model> model;

  Side(std::unique_ptr<Backend> backend, const Checkpoint& ck) : be(std::move(backend)) {
    REQUIRE(be != nullptr);
    model = std::make_unique<Model>(*be, ck.config());
    model->load_base(ck);
  }
  LossStats step(const GoldenBatch& g, float dscale, float label_smoothing = 0.0f, uint64_t dropout_key = 0) {
    return model->step(g.tokens, g.targets, g.lengths, dscale, label_smoothing, dropout_key, true);
  }
  double loss(const GoldenBatch& g, float label_smoothing = 0.0f, uint64_t dropout_key = 0) {
    LossStats s = step(g, 0.0f, label_smoothing, dropout_key);
    return s.loss_sum / double(s.tokens);
  }
  // Every LoRA gradient as a host tensor, under PEFT-style names ("h.0.attn.c_attn q lora_A").
  std::map<std::string, Tensor> lora_grads() {
    std::map<std::string, Tensor> out;
    for (auto& blk : model->blocks())
      for (Linear* lin : {&blk.qkv, &blk.attn_out, &blk.fc, &blk.fc_out})
        for (auto& ad : lin->adapters) {
          const std::string key = lin->hf_name + " " + ad.role;
          out[key + " lora_A"] = be->download(ad.da);
          out[key + " lora_B"] = be->download(ad.db);
        }
    return out;
  }
};

// The CPU oracle and one CUDA backend, both with the golden base model.
struct Pair {
  DType act;
  Tolerance tol;
  Checkpoint ck = Checkpoint::open(golden_dir() + "/gpt2-tiny");
  GoldenBatch g = golden_batch();
  Side cpu, gpu;

  static std::unique_ptr<Backend> cuda(DType activations) {
    std::string why;
    auto be = backend_cuda_create(&why, activations);
    REQUIRE_MESSAGE(be != nullptr, "CUDA backend (" << std::string(dtype_name(activations)) << "): " << why);
    return be;
  }
  explicit Pair(DType activations)
      : act(activations), tol(tolerance(activations)), cpu(backend_cpu_create(), ck), gpu(cuda(activations), ck) {}

  std::string tag(const std::string& what) const { return what + " [" + dtype_name(act) + "]"; }
  void load_adapter(const std::string& name = "adapter") {
    adapter_load(*cpu.model, golden_dir() + "/" + name);
    adapter_load(*gpu.model, golden_dir() + "/" + name);
  }
  // The valid (b, t, v) entries of (B,T,V) logits: padded query rows produce numbers nobody reads.
  std::vector<bool> valid_logits(int64_t V) const {
    std::vector<bool> m(size_t(int64_t(g.B) * g.T * V), false);
    for (int b = 0; b < g.B; ++b)
      for (int t = 0; t < g.lengths.i32()[b]; ++t)
        for (int64_t v = 0; v < V; ++v) m[size_t((int64_t(b) * g.T + t) * V + v)] = true;
    return m;
  }
  void compare_logits(const std::string& what) {
    Tensor want = cpu.model->logits(g.tokens, g.lengths);
    Tensor got = gpu.model->logits(g.tokens, g.lengths);
    std::vector<bool> mask = valid_logits(want.dim(2));
    check_normwise(tag(what), got, want, tol.logits, &mask);
  }
};

// Deterministic non-zero values added to every trainable tensor on both sides, so that B != 0 and the
// adapters (and their dropout) change the output from the first step.
void perturb_trainables(Side& side) {
  int k = 0;
  for (auto& p : side.model->trainable()) {
    Tensor h = side.be->download(*p.master);
    for (int64_t i = 0; i < h.numel(); ++i) h.f32()[i] += 0.05f * std::sin(0.37f * float(++k));
    side.be->upload(*p.master, h);
  }
  side.model->sync_values();
}

// One backward pass with dropout key `key` on both backends: every LoRA gradient agrees. A loss averages
// the masks away; a gradient does not (dA = du^T dropout(x) zeroes whole entries of x): the CPU's gradients
// under another key differ from these by far more than the tolerance, so a GPU that drew other masks fails.
void check_masked_grads(Pair& P, const std::string& what, uint64_t key) {
  const float dscale = 1.0f / float(P.g.n_targets);
  auto grads_for = [&](Side& side, uint64_t k) {
    side.model->zero_grads();
    side.step(P.g, dscale, 0.0f, k);
    return side.lora_grads();
  };
  auto other = grads_for(P.cpu, key + 2);
  auto want = grads_for(P.cpu, key);
  auto got = grads_for(P.gpu, key);
  REQUIRE(got.size() == want.size());
  for (auto& [name, w] : want) {
    check_normwise(P.tag(what + name), got.at(name), w, P.tol.grads);
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(other.at(name).f32()[i] - w.f32()[i])));
      max_ref = std::max(max_ref, double(std::fabs(w.f32()[i])));
    }
    MESSAGE(P.tag(what + name) << ": another key's masks move it by " << max_diff / max_ref);
    CHECK(max_diff > 4 * P.tol.grads * max_ref);
  }
}

AdamWConfig trajectory_config(const nlohmann::json& traj) {
  AdamWConfig c;
  c.beta1 = traj["betas"][0].get<float>();
  c.beta2 = traj["betas"][1].get<float>();
  c.eps = traj.value("eps", 1e-8f);
  c.weight_decay = traj["weight_decay"].get<float>();
  return c;
}

}  // namespace

TEST_CASE("cuda train: base and adapter logits, loss and label-smoothed loss equal the CPU's") {
  for (DType act : kActivations) {
    Pair P(act);
    P.compare_logits("base logits");
    check_scalar(P.tag("base loss"), P.gpu.loss(P.g), P.cpu.loss(P.g), P.tol.logits);
    P.load_adapter();
    P.compare_logits("adapter logits");
    LossStats gs = P.gpu.step(P.g, 0.0f), cs = P.cpu.step(P.g, 0.0f);
    CHECK(gs.tokens == P.g.n_targets);
    CHECK(cs.tokens == P.g.n_targets);
    check_scalar(P.tag("adapter loss"), gs.loss_sum / double(gs.tokens), cs.loss_sum / double(cs.tokens),
                 P.tol.logits);
    check_scalar(P.tag("adapter loss, label smoothing 0.1"), P.gpu.loss(P.g, 0.1f), P.cpu.loss(P.g, 0.1f),
                 P.tol.logits);
  }
}

TEST_CASE("cuda train: every LoRA gradient after one backward pass equals the CPU's") {
  for (DType act : kActivations) {
    Pair P(act);
    P.load_adapter();
    const float dscale = 1.0f / float(P.g.n_targets);
    for (Side* s : {&P.cpu, &P.gpu}) {
      s->model->zero_grads();
      s->step(P.g, dscale);
    }
    auto want = P.cpu.lora_grads();
    auto got = P.gpu.lora_grads();
    CHECK(want.size() == 16);  // c_attn, attn c_proj, c_fc, mlp c_proj x 2 layers x (A, B)
    REQUIRE(got.size() == want.size());
    const auto lowp = json_read_file(golden_dir() + "/lowp_reference.json");
    for (auto& [name, w] : want) {
      REQUIRE_MESSAGE(got.count(name), name << " missing on the GPU");
      check_normwise(P.tag("grad " + name), got.at(name), w, grad_tolerance(act, P.tol, lowp, name));
    }
  }
}

TEST_CASE("cuda train: 10 AdamW steps follow the CPU's loss trajectory") {
  const auto traj = json_read_file(golden_dir() + "/trajectory.json");
  const float lr = traj["lr"].get<float>();
  const auto& ref = traj["losses"];
  REQUIRE(ref.size() == 10);
  for (DType act : kActivations) {
    Pair P(act);
    P.load_adapter();
    AdamW cpu_opt(*P.cpu.be, P.cpu.model->trainable(), trajectory_config(traj));
    AdamW gpu_opt(*P.gpu.be, P.gpu.model->trainable(), trajectory_config(traj));
    const float dscale = 1.0f / float(P.g.n_targets);
    for (size_t i = 0; i < ref.size(); ++i) {
      double losses[2];
      int k = 0;
      for (auto [side, opt] : {std::pair<Side*, AdamW*>{&P.cpu, &cpu_opt}, {&P.gpu, &gpu_opt}}) {
        side->model->zero_grads();
        LossStats s = side->step(P.g, dscale);
        losses[k++] = s.loss_sum / double(s.tokens);
        OptimizerStep os = opt->step(lr, 1.0f);
        CHECK_FALSE(os.skipped);
        side->model->sync_values();
      }
      check_scalar(P.tag("trajectory step " + std::to_string(i + 1)), losses[1], losses[0], P.tol.trajectory);
      // The CPU itself against PEFT's trajectory, as test_golden.cpp checks (a sanity check of the oracle).
      CHECK(std::fabs(losses[0] - ref[i].get<double>()) / ref[i].get<double>() < 1e-4);
    }
    check_scalar(P.tag("loss after the last step"), P.gpu.loss(P.g), P.cpu.loss(P.g), P.tol.trajectory);
  }
}

// LoRA on the attention alone (golden/adapter-attn: the golden adapter's c_attn tensors), as the paper
// places it for E2E. The MLP's linears then have no adapter, so CUDA runs c_fc's bias and GELU in its
// GEMM's epilogue and the GELU's backward in mlp c_proj's input-gradient GEMM (Model::linear_forward /
// linear_backward); the CPU runs the ops one by one. Gradients are held to twice PyTorch + PEFT's own
// error on this adapter ("grads_attn" in lowp_reference.json).
TEST_CASE("cuda train: LoRA on c_attn alone, the MLP's bias and GELU fused into its GEMMs, equals the CPU") {
  const auto lowp = json_read_file(golden_dir() + "/lowp_reference.json");
  for (DType act : kActivations) {
    Pair P(act);
    P.load_adapter("adapter-attn");
    P.compare_logits("c_attn adapter logits");
    const float dscale = 1.0f / float(P.g.n_targets);
    for (Side* s : {&P.cpu, &P.gpu}) {
      s->model->zero_grads();
      s->step(P.g, dscale);
    }
    auto want = P.cpu.lora_grads(), got = P.gpu.lora_grads();
    REQUIRE(want.size() == 4);  // c_attn x 2 layers x (A, B)
    for (auto& [name, w] : want)
      check_normwise(P.tag("c_attn grad " + name), got.at(name), w,
                     grad_tolerance(act, P.tol, lowp, name, "grads_attn"));
  }
}

TEST_CASE("cuda train: LoRA dropout draws the same masks on both backends") {
  LoraSpec spec;
  spec.r = 4;
  spec.alpha = 8;
  spec.dropout = 0.3f;
  spec.targets = {"q", "v", "o", "up", "down"};
  spec.init_seed = 11;
  for (DType act : kActivations) {
    Pair P(act);
    for (Side* s : {&P.cpu, &P.gpu}) {
      s->model->lora_init(spec);
      perturb_trainables(*s);
    }
    // The loss with masks against the CPU's with the same key.
    const uint64_t key = 0x5eed5eedull;
    const double cpu_drop = P.cpu.loss(P.g, 0.0f, key);
    check_scalar(P.tag("dropout loss"), P.gpu.loss(P.g, 0.0f, key), cpu_drop, P.tol.logits);
    // Dropout is active: in fp32 on the CPU the loss with masks differs from the loss without (eval mode)
    // by far more than rounding (about 1% here).
    LossStats eval = P.cpu.model->step(P.g.tokens, P.g.targets, P.g.lengths, 0.0f, 0.0f, key, false);
    CHECK(std::fabs(cpu_drop - eval.loss_sum / double(eval.tokens)) > 1e-3 * cpu_drop);

    // The backward pass recomputes the mask from the same seed: gradients agree too.
    const float dscale = 1.0f / float(P.g.n_targets);
    check_masked_grads(P, "dropout grad ", key);

    // Three AdamW steps with a new key each (as the trainer does per micro-batch).
    AdamWConfig c;
    c.weight_decay = 0.01f;
    AdamW cpu_opt(*P.cpu.be, P.cpu.model->trainable(), c);
    AdamW gpu_opt(*P.gpu.be, P.gpu.model->trainable(), c);
    for (int i = 0; i < 3; ++i) {
      const uint64_t k = key + 16 * uint64_t(i + 1);
      double losses[2];
      int j = 0;
      for (auto [side, opt] : {std::pair<Side*, AdamW*>{&P.cpu, &cpu_opt}, {&P.gpu, &gpu_opt}}) {
        side->model->zero_grads();
        LossStats s = side->step(P.g, dscale, 0.0f, k);
        losses[j++] = s.loss_sum / double(s.tokens);
        opt->step(1e-2f, 1.0f);
        side->model->sync_values();
      }
      check_scalar(P.tag("dropout trajectory step " + std::to_string(i + 1)), losses[1], losses[0],
                   P.tol.trajectory);
    }
  }
}

TEST_CASE("cuda train: the model's hidden and attention dropout draw the same masks on both backends") {
  LoraSpec spec;
  spec.r = 4;
  spec.alpha = 8;
  spec.targets = {"q", "v", "o", "down"};  // o and down: adapters right before a hidden dropout
  spec.init_seed = 13;
  for (DType act : kActivations) {
    Pair P(act);
    for (Side* s : {&P.cpu, &P.gpu}) {
      s->model->lora_init(spec);
      perturb_trainables(*s);
      s->model->set_dropout(0.1f, 0.1f);
    }
    const uint64_t key = 0xd20d20ull;
    const double cpu_drop = P.cpu.loss(P.g, 0.0f, key);
    check_scalar(P.tag("model dropout loss"), P.gpu.loss(P.g, 0.0f, key), cpu_drop, P.tol.logits);
    LossStats eval = P.cpu.model->step(P.g.tokens, P.g.targets, P.g.lengths, 0.0f, 0.0f, key, false);
    CHECK(std::fabs(cpu_drop - eval.loss_sum / double(eval.tokens)) > 1e-3 * cpu_drop);

    check_masked_grads(P, "model dropout grad ", key);
  }
}

bool cuda_present(std::string* why) {
  if (!cuda_device_available(why)) {
    *why = "no CUDA device (" + *why + ")";
    return false;
  }
  std::printf("test_cuda_train: fixtures in %s\n", golden_dir().c_str());
  return true;
}
LORA_TEST_REQUIRES(cuda_present);

}  // namespace
