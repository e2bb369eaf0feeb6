// See trainer.h. The loop, its set-up, evaluation and the end-of-run outputs.
#include "core/train/trainer.h"

#include <csignal>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/rng.h"
#include "core/data/dataset.h"
#include "core/formats/checkpoint.h"
#include "core/model/generate.h"
#include "core/session/classify.h"
#include "core/session/session.h"
#include "core/train/adapter_init.h"
#include "core/train/optimizer.h"
#include "core/train/run_dir.h"
#include "core/train/run_outputs.h"
#include "core/train/train_log.h"
#include "core/train/train_state.h"

namespace lora {

namespace fs = std::filesystem;

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
void on_signal(int sig) { g_stop_signal = sig; }

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string mib(int64_t bytes) { return fmt("%.1f MiB", double(bytes) / (1024.0 * 1024.0)); }

MemoryPlan memory_plan(Model& m, const Recipe& r) {
  const ModelConfig& c = m.config();
  MemoryPlan p;
  const int64_t act = dtype_size(m.backend().activation_dtype());
  p.weights = m.base_param_count() * act;
  int64_t trainable = 0;
  for (auto& kv : m.trainable_counts()) trainable += kv.second;
  p.trainable = trainable * 4 * (act == 4 ? 2 : 3);   // fp32 master + gradient (+ low-precision copy)
  p.optimizer = trainable * 4 * 2;                     // AdamW m and v, fp32
  const int64_t N = int64_t(r.train.batch_size) * std::min(r.data.max_length, c.max_positions);
  const int64_t C = c.d_model, F = c.d_ff, L = c.n_layer, T = std::min(r.data.max_length, c.max_positions);
  // Per layer: residual, x_mid, ln1, ln2 (C each), qkv (3C), attention out (C), fc pre/act (2F), stats.
  int64_t per_layer = N * (7 * C + 2 * F) * act + N * 16;
  // The CPU keeps attention probabilities (B,NH,T,T); CUDA keeps only the log-sum-exp.
  if (m.backend().device() == Device::cpu) per_layer += int64_t(r.train.batch_size) * c.n_head * T * T * 4;
  // With recomputation one block's activations are kept, plus every block's residual input.
  p.activations = (m.recompute() ? per_layer + L * N * C * act : L * per_layer) + N * C * act * 2;
  p.workspace = N * (6 * C + F + 2 * std::max(C, F)) * act + std::min<int64_t>(N * c.vocab_size * act, 64ll << 20) +
                m.backend().workspace_bytes();
  return p;
}

// After a step whose gradient norm is not finite: the first tensor that is not, as words. The weights
// first (a cause from before this step: an initialisation or an earlier overflow), then the loss, then
// each gradient.
std::string nonfinite_first(Model& m, double loss) {
  Backend& be = m.backend();
  auto finite = [&](const Tensor& t) {
    const Tensor h = be.download(t);
    for (int64_t i = 0; i < h.numel(); ++i)
      if (!std::isfinite(h.f32()[i])) return false;
    return true;
  };
  for (auto& p : m.trainable())
    if (!finite(*p.master)) return "the trainable weight '" + p.name + "'";
  if (!std::isfinite(loss)) return "the loss";
  for (auto& p : m.trainable())
    if (!finite(*p.grad)) return "the gradient of '" + p.name + "'";
  return "the gradient norm";
}

// The first training example with its loss mask: prompt tokens carry no loss.
void print_first_example(const Dataset& d, const Tokenizer& tok) {
  if (d.size() == 0) return;
  TokenSpan t = d.tokens(0);
  if (d.info().format == "glue") {  // classification: the tokens and the label (the target)
    std::string text;
    for (int64_t i = 0; i < t.size; ++i) text += tok.token_text(t[i]) + "|";
    std::printf("first training example (%lld tokens; '|' separates tokens), label %g:\n  %s\n", (long long)t.size,
                double(d.label(0)), text.c_str());
    return;
  }
  const int64_t P = d.prompt_length(0);
  std::string prompt, completion;
  for (int64_t i = 0; i < t.size; ++i) (i < P ? prompt : completion) += tok.token_text(t[i]) + "|";
  std::printf("first training example (%lld tokens: %lld prompt without loss, %lld with loss; '|' separates tokens):\n",
              (long long)t.size, (long long)P, (long long)(t.size - P));
  std::printf("  no loss : %s\n", prompt.c_str());
  std::printf("  loss    : %s\n", completion.c_str());
}

struct EvalResult {
  double loss = NAN;
  double accuracy = NAN;
  int64_t tokens = 0;
  std::vector<std::pair<std::string, double>> metrics;  // classification: GLUE's metrics of the task
};

EvalResult evaluate(Model& m, std::shared_ptr<const Dataset> data, const Recipe& r, int max_batches) {
  if (m.config().head == HeadKind::classifier) {
    ClassifyEval ev = classify_evaluate(m, data, r.eval.batch_size, max_batches, r.eval.glue_task);
    EvalResult out;
    out.tokens = ev.examples;
    out.loss = ev.examples ? ev.loss : NAN;
    out.metrics = ev.metrics;
    return out;
  }
  BatchStreamOptions o;
  o.batch_size = r.eval.batch_size;
  o.shuffle = false;
  BatchStream stream(data, o);
  Batch b;
  double loss = 0;
  int64_t tokens = 0, correct = 0;
  for (int i = 0; stream.next(b) && (max_batches <= 0 || i < max_batches); ++i) {
    LossStats s = m.step(b.tokens, b.targets, b.lengths, 0.0f, 0.0f, 0, false);
    loss += s.loss_sum;
    tokens += s.tokens;
    correct += s.correct;
  }
  EvalResult out;
  out.tokens = tokens;
  if (tokens > 0) {
    out.loss = loss / double(tokens);
    out.accuracy = double(correct) / double(tokens);
  }
  return out;
}
}  // namespace

int64_t train_total_steps(const Recipe& r, int64_t n_examples) {
  const int64_t batches_per_epoch = (n_examples + r.train.batch_size - 1) / r.train.batch_size;
  const int64_t steps_per_epoch = std::max<int64_t>(1, batches_per_epoch / r.train.grad_accum);
  return r.train.max_steps > 0 ? r.train.max_steps : steps_per_epoch * r.train.epochs;
}

int64_t train_eval_every(const Recipe& r, int64_t total_steps) {
  return r.train.eval_every >= 0 ? r.train.eval_every : std::max<int64_t>(1, total_steps / 10);
}

std::vector<std::string> train_weights_init(Model& model, const Recipe& r, bool resume) {
  model.lora_init(lora_spec_from_recipe(r));
  if (r.lora.init_from.empty()) return {};
  if (resume) return {"lora.init_from is not read when resuming: the checkpoint holds the weights"};
  return adapter_init_from(model, r.lora.init_from);
}

int train_run(const Recipe& recipe, const TrainOptions& options) {
  const Recipe& r = recipe;
  const bool resume = !options.resume.empty();
  const std::string out_dir = r.output.dir;
  // One writer per output directory, from before anything in it is read or cleaned until the process
  // ends; then what a killed run left half-done is cleared.
  std::unique_ptr<RunLock> lock;
  std::vector<std::string> dir_notes;
  if (!options.dry_run) {
    dir_ensure_writable(out_dir, "output directory");
    lock = std::make_unique<RunLock>(out_dir);
    dir_notes = run_dir_clean(out_dir);
  }
  // A resume starts from the newest intact committed checkpoint, with the recipe that checkpoint ran with.
  std::string resume_from;
  std::vector<std::string> resume_notes;
  if (resume) {
    resume_from = train_state_latest_intact(options.resume, &resume_notes);
    if (resume_from.empty()) {
      const std::string stored = (fs::path(options.resume) / "recipe.yaml").string();
      if (fs::exists(fs::path(options.resume) / "metrics.jsonl") && fs::exists(stored))
        fail_runtime("--resume " + options.resume + ": the run there stopped before its first checkpoint",
                     "start it again without --resume: lora train " + stored +
                         " (set output.save_every to save checkpoints more often)");
      fail_runtime("--resume " + options.resume + ": no committed checkpoint found there",
                   "pass the output directory of an earlier run (it holds checkpoints/step-N/COMMITTED)");
    }
    for (auto& line : resume_recipe_check(r, resume_from, options.resume)) resume_notes.push_back(line);
  }
  // From here on a SIGINT/SIGTERM (a scheduler's preemption) lets the current step finish, saves a
  // checkpoint and returns EXIT_CODE_INTERRUPTED.
  g_stop_signal = 0;
  if (!options.dry_run) {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
  }
  Session s = session_open(r, /*need_train=*/true, options.dry_run);
  Model& model = *s.model;

  const std::vector<std::string> init_notes = train_weights_init(model, r, resume);
  const LoraSpec& spec = model.lora_spec();
  const bool classifier = model.config().head == HeadKind::classifier;  // loss per example, not per token

  const int64_t batches_per_epoch = (int64_t(s.train->size()) + r.train.batch_size - 1) / r.train.batch_size;
  const int64_t total_steps = train_total_steps(r, int64_t(s.train->size()));
  const int64_t eval_every = train_eval_every(r, total_steps);
  const int64_t warmup = r.train.warmup_steps > 0 ? r.train.warmup_steps
                                                  : int64_t(std::ceil(r.train.warmup_ratio * double(total_steps)));
  MemoryPlan plan = memory_plan(model, r);

  const int64_t device_free = model.backend().memory_free();
  if (!options.dry_run && device_free >= 0 && plan.total() > device_free)
    fail_runtime("the run needs about " + mib(plan.total()) + " of device memory (weights " + mib(plan.weights) +
                     ", activations " + mib(plan.activations) + ", workspace " + mib(plan.workspace) + ") but only " +
                     mib(device_free) + " are free on " + model.backend().name(),
                 "lower train.batch_size (with train.grad_accum to keep the step size) or data.max_length");

  if (options.dry_run) {
    std::printf("resolved recipe:\n%s\n", recipe_to_yaml(r).c_str());
    std::printf("backend: %s\n", model.backend().name().c_str());
    std::printf("model: %s, %d layers, d_model %d, %d heads, vocab %d, %lld parameters (frozen%s)\n",
                model.config().family.c_str(), model.config().n_layer, model.config().d_model, model.config().n_head,
                model.config().vocab_size, (long long)model.base_param_count(), spec.full ? " except in full mode" : "");
    int64_t total = 0;
    std::printf("trainable parameters by module:\n");
    for (auto& kv : model.trainable_counts()) {
      std::printf("  %-28s %12lld\n", kv.first.c_str(), (long long)kv.second);
      total += kv.second;
    }
    std::printf("  %-28s %12lld (%.3f%% of the base model)\n", "total", (long long)total,
                100.0 * double(total) / double(model.base_param_count()));
    std::printf("data: %zu training examples, %lld batches of %d an epoch, %lld optimizer steps (%d epochs, "
                "grad_accum %d), warm-up %lld\n",
                s.train->size(), (long long)batches_per_epoch, r.train.batch_size, (long long)total_steps,
                r.train.epochs, r.train.grad_accum, (long long)warmup);
    if (s.eval)
      std::printf("evaluation: %zu examples, before the first step, %s and at the end\n", s.eval->size(),
                  eval_every == 1  ? "after every step"
                  : eval_every > 0 ? ("every " + std::to_string(eval_every) + " steps").c_str()
                                   : "not in between");
    std::printf("memory plan (batch %d x %d tokens at most):\n", r.train.batch_size,
                std::min(r.data.max_length, model.config().max_positions));
    std::printf("  weights      %s\n  trainable    %s (masters and gradients)\n  optimizer    %s\n"
                "  activations  %s\n  workspace    %s\n  total        %s\n",
                mib(plan.weights).c_str(), mib(plan.trainable).c_str(), mib(plan.optimizer).c_str(),
                mib(plan.activations).c_str(), mib(plan.workspace).c_str(), mib(plan.total()).c_str());
    if (device_free >= 0)
      std::printf("  device free  %s%s\n", mib(device_free).c_str(),
                  plan.total() > device_free ? "  (does not fit: lower train.batch_size or data.max_length)" : "");
    for (const auto& line : init_notes) std::printf("%s\n", line.c_str());
    print_first_example(*s.train, *s.tok);
    return EXIT_CODE_OK;
  }

  // The output directory: a fresh run refuses to overwrite a finished one unless asked; one killed before
  // its first checkpoint left nothing to resume and is started again. An overwrite clears the previous
  // run before the first step, so that its checkpoints are never pruned, resumed or mixed with these.
  if (!resume && !r.output.overwrite && run_dir_has_run(out_dir)) {
    fail_usage("output directory '" + out_dir + "' already holds a run",
               "resume it with --resume " + out_dir + ", choose another with --output, or set output.overwrite: true");
  }
  if (!resume && fs::exists(fs::path(out_dir) / "metrics.jsonl") && !run_dir_has_run(out_dir))
    dir_notes.push_back("the run in " + out_dir + " stopped before its first checkpoint: starting it again");
  if (!resume && r.output.overwrite)
    for (auto& line : run_dir_clear(out_dir)) dir_notes.push_back(line);
  const std::string recipe_yaml = recipe_to_yaml(r, (fs::path(out_dir) / "recipe.yaml").string());
  file_write_atomic((fs::path(out_dir) / "recipe.yaml").string(), recipe_yaml);

  AdamWConfig oc;
  oc.beta1 = float(r.train.beta1);
  oc.beta2 = float(r.train.beta2);
  oc.eps = float(r.train.eps);
  oc.weight_decay = float(r.train.weight_decay);
  oc.clip_grad_norm = float(r.train.clip_grad_norm);
  AdamW opt(model.backend(), model.trainable(), oc);
  TrainProgress prog;
  prog.seed = uint64_t(r.train.seed);
  LossScaler scaler;
  scaler.enabled = model.backend().activation_dtype() == DType::f16;
  const std::string metrics_path = (fs::path(out_dir) / "metrics.jsonl").string();
  if (resume) {
    train_state_load(resume_from, model, opt, prog);
    scaler.scale = prog.loss_scale;
    scaler.good_steps = prog.good_steps;
    // The checkpoint's data position counts examples of the data it was saved with: other data under
    // the same name would silently train on other examples from that position.
    const std::string& now_hash = s.train->info().source_hash;
    if (!prog.train_data_hash.empty() && prog.train_data_hash != now_hash)
      fail_usage("--resume " + options.resume + ": the training data " + r.data.train +
                     " changed since the checkpoint was saved (" + prog.train_data_hash + " then, " + now_hash + " now)",
                 "resume with the data the run started with, or start a new run on the new data");
    // What the stopped run logged after its checkpoint is done again from here: dropped, not repeated.
    if (const int64_t cut = metrics_truncate(metrics_path, prog.step); cut > 0)
      resume_notes.push_back("metrics.jsonl: dropped " + std::to_string(cut) + " record(s) written after step " +
                             std::to_string(prog.step) + ", which this run repeats");
    if (const int64_t cut = metrics_truncate((fs::path(out_dir) / "samples.jsonl").string(), prog.step); cut > 0)
      resume_notes.push_back("samples.jsonl: dropped " + std::to_string(cut) + " sample(s) written after step " +
                             std::to_string(prog.step) + ", which this run repeats");
  }
  prog.train_data_hash = s.train->info().source_hash;
  RunOutputs outputs(out_dir, resume);  // train.log, samples.jsonl, loss.svg (run_outputs.h)
  TrainLog log(r.log.progress, metrics_path, total_steps, resume);
  log.echo_to([&outputs](const std::string& line) { outputs.line(line); });
  for (const auto& line : dir_notes) log.message(line);
  if (resume) log.message("resuming from " + resume_from + " at step " + std::to_string(prog.step));
  for (const auto& line : resume_notes) log.message(line);
  log.message("training on " + model.backend().name() + ": " + std::to_string(s.train->size()) + " examples, " +
              std::to_string(total_steps) + " steps, memory plan " + mib(plan.total()));
  if (const std::string note = model.backend().run_note(); !note.empty()) log.message(note);
  for (const auto& line : s.notes) log.message(line);
  for (const auto& line : init_notes) log.message(line);

  std::vector<RunSample> last_samples;  // the latest evaluation's
  auto run_eval = [&](int64_t step) {
    if (!s.eval) return EvalResult{};
    EvalResult e = evaluate(model, s.eval, r, r.train.eval_batches);
    if (classifier) {
      nlohmann::json rec = {{"step", step}, {"eval_loss", e.loss}, {"eval_examples", e.tokens}};
      std::string line = "eval at step " + std::to_string(step) + ": loss " + fmt("%.4f", e.loss);
      for (const auto& [name, value] : e.metrics) {
        rec["eval_" + name] = value;
        line += ", " + name + " " + fmt("%.4f", value);
      }
      log.record(rec, line);
      outputs.plot();
      return e;
    }
    log.record({{"step", step}, {"eval_loss", e.loss}, {"eval_token_accuracy", e.accuracy}, {"eval_tokens", e.tokens}},
               "eval at step " + std::to_string(step) + ": loss " + fmt("%.4f", e.loss) + ", token accuracy " +
                   fmt("%.3f", e.accuracy));
    last_samples = run_samples(model, *s.eval, *s.tok, r.eval.num_samples, r.eval.max_new_tokens);
    outputs.samples(step, last_samples);
    outputs.plot();
    return e;
  };
  if (!resume && s.eval) prog.first_eval_loss = run_eval(0).loss;

  BatchStreamOptions so;
  so.batch_size = r.train.batch_size;
  so.seed = prog.seed;
  so.start = {prog.epoch, prog.cursor};
  BatchStream stream(s.train, so);

  // The newest committed checkpoint of this run and its step (the one resumed from, at first).
  std::string saved_dir = resume ? resume_from : "";
  int64_t saved_step = resume ? prog.step : -1;
  auto save = [&]() {
    prog.loss_scale = scaler.scale;
    prog.good_steps = scaler.good_steps;
    saved_dir = train_state_save(out_dir, model, opt, prog, r, r.output.keep_last);
    saved_step = prog.step;
    return saved_dir;
  };
  // After SIGINT/SIGTERM: the step's checkpoint is committed; say how to resume and stop.
  auto stopped = [&](const std::string& where) {
    log.finish();
    // The run's own resolved recipe holds every --set it was given, so this resumes it exactly.
    const std::string run_recipe = (fs::path(out_dir) / "recipe.yaml").string();
    const std::string text = "stopped by signal " + std::to_string(int(g_stop_signal)) + " at step " +
                             std::to_string(prog.step) + "; checkpoint saved to " + where + "\n  resume with: lora train " +
                             run_recipe + " --resume " + out_dir +
                             "\n  (or with the first run's recipe and the same --set options: lora train " + r.source +
                             " ... --resume " + out_dir + ")";
    std::fprintf(stderr, "%s\n", text.c_str());
    outputs.line(text);
    outputs.plot();
    return EXIT_CODE_INTERRUPTED;
  };

  auto t_last = std::chrono::steady_clock::now();
  int64_t tokens_since = 0;
  double loss_since = 0;
  int64_t loss_tokens_since = 0;
  std::vector<Batch> micro(size_t(r.train.grad_accum));
  int nonfinite_run = 0;  // consecutive steps skipped for non-finite values (train.nonfinite: skip)
  while (prog.step < total_steps) {
    double step_loss = 0;
    int64_t n_loss = 0;
    for (auto& b : micro) {
      stream.next(b);
      n_loss += classifier ? b.B : b.n_loss_tokens;
    }
    model.zero_grads();
    const float dscale = scaler.value() / float(std::max<int64_t>(1, n_loss));
    for (auto& b : micro) {
      const uint64_t key = rng_mix(prog.seed ^ rng_mix(uint64_t(prog.micro_steps) + 1)) | 1;
      LossStats st = classifier ? model.classify_step(b.tokens, b.lengths, b.labels, dscale, key, true)
                                : model.step(b.tokens, b.targets, b.lengths, dscale, float(r.train.label_smoothing), key, true);
      loss_since += st.loss_sum;
      step_loss += st.loss_sum;
      loss_tokens_since += st.tokens;
      for (int i = 0; i < b.B; ++i) tokens_since += b.lengths.i32()[i];
      prog.micro_steps += 1;
    }
    const float lr = schedule_lr(r.train.schedule, float(r.train.lr), prog.step, warmup, total_steps);
    OptimizerStep os = opt.step(lr, 1.0f / scaler.value());
    scaler.update(os.skipped);
    StreamPosition pos = stream.position();
    prog.epoch = pos.epoch;
    prog.cursor = pos.cursor;
    if (os.skipped) {
      if (!scaler.enabled) {
        const std::string step_no = std::to_string(prog.step + 1);
        const std::string what = nonfinite_first(model, step_loss);
        const std::string hint = what.rfind("the trainable weight", 0) == 0
                                     ? "the weights were not finite before this step: check lora.init_from or the "
                                       "checkpoint resumed from"
                                     : "lower train.lr, enable train.clip_grad_norm, or check the data; the last "
                                       "checkpoint in " + out_dir + "/checkpoints is intact";
        if (r.train.nonfinite == "abort")
          fail_runtime("training diverged at step " + step_no + ": " + what + " is not finite (train.nonfinite: abort)",
                       hint);
        if (++nonfinite_run > r.train.nonfinite_skips)
          fail_runtime("training diverged at step " + step_no + ": " + what + " is not finite on " +
                           std::to_string(nonfinite_run) + " batches in a row, more than train.nonfinite_skips " +
                           std::to_string(r.train.nonfinite_skips),
                       hint);
        log.message("step " + step_no + " skipped: " + what + " is not finite (train.nonfinite: skip; " +
                    std::to_string(nonfinite_run) + " of at most " + std::to_string(r.train.nonfinite_skips) +
                    " in a row); its batch is passed over");
        loss_since = 0;  // the next logged loss is that of the next good step
        loss_tokens_since = 0;
        continue;
      }
      log.message("fp16 overflow at step " + std::to_string(prog.step + 1) + ": step skipped, loss scale now " +
                  fmt("%.0f", scaler.scale));
      continue;
    }
    nonfinite_run = 0;
    model.sync_values();
    prog.step += 1;
    prog.tokens_seen += tokens_since;
    const bool report = prog.step % std::max(1, r.log.every) == 0 || prog.step == total_steps;
    auto now = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(now - t_last).count();
    double loss_avg = loss_tokens_since ? loss_since / double(loss_tokens_since) : 0.0;
    log.step(prog.step, loss_avg, lr, os.grad_norm, dt > 0 ? double(tokens_since) / dt : 0.0, report);
    t_last = now;
    tokens_since = 0;
    loss_since = 0;
    loss_tokens_since = 0;
    if (eval_every > 0 && prog.step % eval_every == 0 && prog.step < total_steps) run_eval(prog.step);
    if (r.output.save_every > 0 && prog.step % r.output.save_every == 0 && prog.step < total_steps) save();
    if (g_stop_signal) return stopped(save());
  }

  // The last step's checkpoint is committed before the final evaluation and the adapter are written, and
  // the signal handlers stay until then: a stop in between loses nothing, and resuming the finished run
  // writes them (without saving the same step again).
  const std::string where = saved_step == prog.step ? saved_dir : save();
  if (g_stop_signal) return stopped(where);
  EvalResult final_eval = run_eval(prog.step);
  if (g_stop_signal) return stopped(where);
  if (const int64_t peak = model.backend().memory_peak(); peak >= 0)  // this process's run, resumed or not
    log.record({{"peak_memory_mib", double(peak) / double(1 << 20)}, {"memory_plan_mib", double(plan.total()) / double(1 << 20)}},
               "peak device memory: " + mib(peak) + " (tensors and workspace, as the allocator counts them; memory plan " +
                   mib(plan.total()) + ")");
  log.finish();
  outputs.plot();
  // The summary, on stdout and in train.log.
  auto say = [&outputs](const std::string& line) {
    std::printf("%s\n", line.c_str());
    outputs.line(line);
  };
  if (spec.full) {
    const std::string model_dir = (fs::path(out_dir) / "model").string();
    checkpoint_write(model_dir, model.config(), model.export_base(), DType::f32, 0);
    tokenizer_files_copy(s.tokenizer_dir, model_dir);
    say("model written to " + model_dir);
  } else {
    // The base as an absolute path, so that export --to merged, eval and generate find it from any directory.
    adapter_save(model, out_dir, fs::absolute(r.model.path).lexically_normal().string());
    say("adapter written to " + out_dir + " (adapter_config.json, adapter_model.safetensors)");
  }
  say("checkpoint: " + where);
  if (s.eval && prog.first_eval_loss >= 0)
    say("held-out loss: " + fmt("%.4f", prog.first_eval_loss) + " before training, " + fmt("%.4f", final_eval.loss) +
        " after (" + fmt("%.1f", 100.0 * final_eval.loss / prog.first_eval_loss) + "% of the start)");
  if (s.eval && classifier && !final_eval.metrics.empty()) {
    std::string line = "held-out " + std::string(r.eval.glue_task == "auto" ? "metrics" : r.eval.glue_task) + ":";
    for (const auto& [name, value] : final_eval.metrics) line += " " + name + " " + fmt("%.4f", value);
    say(line + " (" + std::to_string(final_eval.tokens) + " examples)");
  }
  if (s.eval && !classifier && r.eval.num_samples > 0) {
    // The final evaluation's samples (samples.jsonl holds them too).
    say("samples (greedy, held-out prompts):");
    for (const RunSample& x : last_samples)
      say("  prompt    : " + x.prompt + "\n  generated : " + x.generated + "\n  reference : " + x.reference);
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  return EXIT_CODE_OK;
}

}  // namespace lora
