// What a training run leaves in its output directory for a person to look at, beside metrics.jsonl:
//   train.log      the lines the console showed (notices, step lines, evaluations, the summary), without
//                  the progress bar's redraws: with the bar, the step line of every log.every steps;
//   samples.jsonl  at each evaluation, greedy continuations of the first eval.num_samples distinct
//                  held-out prompts: {"step", "prompt", "generated", "reference"} a line;
//   loss.svg       training loss, eval loss and learning rate against steps, drawn from metrics.jsonl
//                  (hand-written SVG, opened by any browser), rewritten at every evaluation and at the end.
// A resumed run appends to train.log and samples.jsonl; loss.svg is always drawn from the whole file.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/model/model.h"
#include "core/text/tokenizer.h"

namespace lora {

struct RunSample {
  std::string prompt, generated, reference;
};

class RunOutputs {
 public:
  // Opens <out_dir>/train.log and <out_dir>/samples.jsonl (appending when resuming).
  RunOutputs(const std::string& out_dir, bool append);
  ~RunOutputs();
  RunOutputs(const RunOutputs&) = delete;
  RunOutputs& operator=(const RunOutputs&) = delete;
  // One console line (without its newline) into train.log.
  void line(const std::string& text);
  void samples(int64_t step, const std::vector<RunSample>& samples);
  // Rewrites loss.svg from metrics.jsonl; a run without rows yet draws empty axes.
  void plot() const;

 private:
  std::string dir_;
  std::FILE* log_ = nullptr;
  std::FILE* samples_ = nullptr;
};

// Greedy continuations (at most max_new tokens; outer whitespace trimmed) of the first n distinct prompts of data, an E2E or JSONL
// set (consecutive examples with the same prompt, E2E's references of one meaning representation, count once;
// examples without a prompt, JSONL's {"text": ...}, are left out).
std::vector<RunSample> run_samples(Model& model, const Dataset& data, const Tokenizer& tok, int n, int max_new);

// The loss.svg picture of metrics.jsonl's text: train rows ({"step", "loss", "lr"}) and eval rows
// ({"step", "eval_loss"}); the last row of a step wins; rows that are neither are ignored.
std::string loss_svg(const std::string& metrics_jsonl, const std::string& title);

}  // namespace lora
