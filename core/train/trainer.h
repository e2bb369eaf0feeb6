// `lora train`: the whole run from a resolved recipe. Loads the checkpoint, tokenizer and datasets,
// builds the model with its adapters, plans memory, then loops: gather grad_accum micro-batches,
// normalise the loss by the loss tokens of the whole optimizer step, backward, clip, AdamW, schedule.
// Logs to metrics.jsonl and the terminal, evaluates, saves resumable checkpoints, and on SIGINT/SIGTERM
// saves and returns EXIT_CODE_INTERRUPTED. Outputs: the adapter (PEFT layout) or, in full mode, a HF
// model directory under <output>/model, recipe.yaml, metrics.jsonl, checkpoints/.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/session/recipe.h"

namespace lora {

struct TrainOptions {
  std::string resume;       // output or checkpoint directory to resume from ("" = fresh run)
  bool dry_run = false;     // print the plan and the first example, train nothing
};

// Runs training; returns the process exit code (0, or EXIT_CODE_INTERRUPTED after a signal).
int train_run(const Recipe& recipe, const TrainOptions& options);

// The trainable weights before the first step: the adapters (and a classification head) as lora_init
// places them, then, for a fresh run with lora.init_from, the trained adapter's (adapter_init_from).
// A resumed run (resume true) restores its checkpoint over them afterwards and never reads
// lora.init_from, so a moved or changed source does not alter it. Returns the notices to show.
std::vector<std::string> train_weights_init(Model& model, const Recipe& recipe, bool resume);

// Optimizer steps a run takes over n_examples training examples: train.max_steps, or epochs times
// max(1, ceil(n_examples / batch_size) / grad_accum).
int64_t train_total_steps(const Recipe& recipe, int64_t n_examples);

// The steps between evaluations: train.eval_every, or when it is -1 (the default) max(1, total_steps / 10),
// so that a run's eval curve has about ten points; 0 = only before the first step and at the end.
int64_t train_eval_every(const Recipe& recipe, int64_t total_steps);

// Memory the run needs, in bytes, by kind (printed by --dry-run).
struct MemoryPlan {
  int64_t weights = 0, trainable = 0, optimizer = 0, activations = 0, workspace = 0;
  int64_t total() const { return weights + trainable + optimizer + activations + workspace; }
};

}  // namespace lora
