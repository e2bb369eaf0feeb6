// `lora eval RECIPE.yaml [--adapter DIR] [--split eval|train] [--out DIR] [--limit N] [--no-generate]
// [--set key=value ...] [--device cpu|cuda|auto]`: loss, perplexity, token accuracy and, for E2E data,
// generation with BLEU / NIST / ROUGE-L / CIDEr, and METEOR when eval.meteor_jar or LORA_METEOR_JAR names
// METEOR 1.5's jar (core/eval/evaluate.h). Prints a table on stdout, notices and the progress bars of
// generation and METEOR (on a terminal) on stderr.
#include <unistd.h>

#include <cstdio>

#include "cli/commands.h"
#include "core/eval/evaluate.h"
#include "core/session/recipe.h"

namespace lora {


std::shared_ptr<EvalCliOptions> setup_eval(CLI::App& app) {
  auto o = std::make_shared<EvalCliOptions>();
  app.add_option("recipe", o->recipe, "Recipe file (YAML)")->required();  // recipe_load reports a missing file
  app.add_option("--adapter", o->adapter, "Adapter directory (the output of lora train); leave out to score the base model");
  app.add_option("--split", o->split, "Data split to evaluate: eval (data.eval, the default) or train (data.train)")
      ->check(CLI::IsMember({"eval", "train"}));
  app.add_option("--out", o->out,
                 "Directory for eval.json, predictions.txt, references.txt (default ADAPTER/eval-SPLIT, or "
                 "OUTPUT_DIR/base-eval-SPLIT without --adapter)");
  app.add_option("--limit", o->limit, "Generate for the first N meaning representations only (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-generate", o->no_generate, "Loss, perplexity and token accuracy only; no generation");
  app.add_option("--set", o->overrides, "Override a recipe key, e.g. --set eval.beam_size=10 (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--device", o->device, "cpu, ref (the CPU reference), cuda or auto (overrides model.device)")
      ->check(CLI::IsMember({"cpu", "ref", "cuda", "auto"}));
  return o;
}

int run_eval(const EvalCliOptions& o) {
  std::vector<std::string> overrides = o.overrides;
  if (!o.device.empty()) overrides.push_back("model.device=" + o.device);
  Recipe r = recipe_load(o.recipe, overrides);
  // recipe_validate asks for data.train, which evaluating the eval split does not need.
  Recipe checked = r;
  if (checked.data.train.empty() && o.split == "eval") checked.data.train = checked.data.eval;
  recipe_validate(checked);
  EvalRunOptions e;
  e.adapter = o.adapter;
  e.split = o.split;
  e.out_dir = o.out;
  e.limit = o.limit;
  e.generate = !o.no_generate;
  e.progress = isatty(fileno(stderr)) != 0;
  EvalReport rep = eval_run(r, e);
  for (const auto& line : rep.notes) std::fprintf(stderr, "%s\n", line.c_str());
  std::fputs(eval_report_table(rep).c_str(), stdout);
  return 0;
}

}  // namespace lora
