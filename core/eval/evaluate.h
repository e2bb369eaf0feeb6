// `lora eval`: measure a trained adapter on a data split.
//
// The recipe's session is opened (session_open: backend, base checkpoint, tokenizer, tokenized data) and
// the adapter is loaded with adapter_load in place of lora_init. Then:
//   1. loss, perplexity (exp of the mean loss) and token accuracy over every example of the split, in
//      batches of eval.batch_size, exactly as training's evaluation computes them (no label smoothing);
//   2. for generation data (E2E format): one prediction per distinct meaning representation (its
//      references are all lines that share it, in order of first appearance), decoded by generate() with
//      the recipe's eval settings (beam_size, length_penalty, no_repeat_ngram_size, max_new_tokens,
//      batch_size), scored with BLEU, NIST, ROUGE-L and CIDEr as the official E2E scorer computes them
//      (core/metrics/metrics.h), and with METEOR when a METEOR 1.5 jar is configured (eval.meteor_jar, else
//      $LORA_METEOR_JAR): one Java process for all segments, after the files are written; the jar is
//      checked (file, paraphrase table, `java` on PATH) before generation starts. Without a jar METEOR is
//      null in eval.json and metrics_note says how to enable it.
// Without an adapter the base model alone is measured (a classifier only if its checkpoint holds a head),
// into <output.dir>/base-eval-<split> unless out_dir says otherwise.
// Outputs in out_dir (default <adapter>/eval-<split>): eval.json (every number, the settings, the files),
// predictions.txt and references.txt (the official scorer's formats) and sources.txt (the meaning
// representations, one a line, in the predictions' order).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/metrics/metrics.h"
#include "core/session/recipe.h"

namespace lora {

struct EvalRunOptions {
  std::string adapter;          // adapter directory: adapter_config.json + adapter_model.safetensors; "" = the base
  std::string split = "eval";   // "eval" (data.eval) or "train" (data.train)
  std::string out_dir;          // where results go; empty = <adapter>/eval-<split>
  int64_t limit = 0;            // generate for the first this many meaning representations only; 0 = all
  bool generate = true;         // false: loss, perplexity and token accuracy only
  bool progress = false;        // a progress bar on stderr while generating
  bool quiet = false;           // no notices on stderr
};

struct EvalReport {
  std::string split, data_path, adapter, out_dir, backend;
  int64_t examples = 0;         // examples in the split
  int64_t tokens = 0;           // tokens that carry a loss
  double loss = 0, perplexity = 0, token_accuracy = 0;
  bool classification = false;  // a classification model: loss per example and the metrics below
  std::string glue_task;        // eval.glue_task
  std::vector<std::pair<std::string, double>> glue;  // GLUE's metrics, the task's first
  bool generated = false;       // text metrics below are set
  int64_t sources = 0;          // distinct meaning representations scored
  TextMetrics text;
  std::string meteor_jar;       // the jar METEOR ran with; "" = METEOR not computed
  std::vector<std::string> notes;
};

// One meaning representation with its prompt and every reference that shares it.
struct ReferenceGroup {
  std::string source;                // the meaning representation (prompt text)
  std::vector<int32_t> prompt;       // its prompt token ids (the dataset's template)
  std::vector<std::string> references;
};

// Groups a generation dataset's examples by prompt text, in order of first appearance.
std::vector<ReferenceGroup> eval_group_references(const Dataset& data);

// Runs the whole evaluation and writes the outputs. Errors (lora::Error) for a missing adapter
// directory, an adapter that does not fit the base model, an unknown split or a split without data.
EvalReport eval_run(const Recipe& recipe, const EvalRunOptions& options);

// eval.json's text and the table printed on stdout.
std::string eval_report_json(const EvalReport& report, const Recipe& recipe);
std::string eval_report_table(const EvalReport& report);

// True when the base model an adapter records (base_model_name_or_path: an absolute path since adapters
// record one, a path relative to where training ran before) and the one in use are the same directory.
bool same_path(const std::string& recorded, const std::string& used);

}  // namespace lora
