// `lora validate`: everything about a recipe that can be checked without training, each part with the
// code train itself runs (recipe_validate, Checkpoint::open, the Model constructor, Model::lora_init,
// adapter_init_from, session_tokenizer_load, dataset_tokenize / Dataset validation), so a recipe that
// validates does not fail at the start of a cluster job. Every problem is collected, not only the first.
//
// Parts, in order: recipe (keys, types, values), model (config.json maps to a known family the trainer
// supports, model.num_labels fits its head, every weight file opens, every block's tensors are present
// with the shapes config.json gives them),
// tokenizer (loads, fits the model's vocabulary), lora (targets and layers exist in this model),
// init_from (lora.init_from, when set, is an adapter that fits those adapters and the model),
// data.train / data.eval (exist, every line parses, tokenizes, fits the model's positions and its head;
// the first bad line is reported with its number), eval (generation settings against the eval data and the model),
// meteor (when eval.meteor_jar or LORA_METEOR_JAR names a jar: the file is a jar, its paraphrase table is beside
// it, `java` is on PATH; Java is not started), output (a directory that already holds a run, or one that cannot
// be created), device.
// Unknown keys and wrong types do not stop the other parts: they run on every key that could be read.
// Without the model (or its tokenizer) the data are still read and parsed line by line, and init_from's
// adapter is still read. A part whose input is missing or broken elsewhere is skipped, saying why. Nothing is written where a
// run would look: the data are tokenized into a temporary directory (removed at the end), not into
// data.cache_dir, and no output directory is created. Weights are not loaded (the model is built
// without reading them).
#pragma once
#include <string>
#include <vector>

namespace lora {

enum class ValidateStatus { ok, warning, problem, skipped };

struct ValidateLine {
  std::string part;    // "recipe", "model", "tokenizer", "lora", "data.train", "data.eval", "eval", ...
  ValidateStatus status = ValidateStatus::ok;
  std::string text;    // ok: the one-line summary; warning/problem: the message; skipped: why
  std::string hint;    // warning/problem: how to fix it
  int code = 0;        // problem: the exit code train would give for it (1 runtime, 2 usage)
};

struct ValidateReport {
  std::string recipe_path;
  std::vector<ValidateLine> lines;
  size_t count(ValidateStatus s) const;
  // 0 without problems; else 2 when any problem is a usage or recipe error, 1 when all are file errors.
  int exit_code() const;
};

// Loads recipe_path with overrides (--set) and checks every part. Never throws a lora::Error for what
// it finds: problems are lines of the report.
ValidateReport validate_recipe(const std::string& recipe_path, const std::vector<std::string>& overrides);
// One line per part that passed, warned or was skipped, and "ok: ..." at the end when nothing failed.
std::string validate_report_text(const ValidateReport& report);
// The lora::Error listing every problem (exit_code()), each with its hint; returns when there is none.
void validate_report_throw(const ValidateReport& report);

}  // namespace lora
