// `lora prepare RECIPE.yaml [--set key=value ...] [--split train|eval|all]`: tokenizes the recipe's
// datasets into data.cache_dir exactly as `lora train` would, so the run reuses them (core/commands/prepare.h).
#include <cstdio>

#include "cli/commands.h"
#include "core/commands/prepare.h"
#include "core/session/recipe.h"

namespace lora {

std::shared_ptr<PrepareCliOptions> setup_prepare(CLI::App& app) {
  auto o = std::make_shared<PrepareCliOptions>();
  app.add_option("recipe", o->recipe, "Recipe file (YAML)")->required();  // recipe_load reports a missing file
  app.add_option("--set", o->overrides, "Override a recipe key, e.g. --set data.max_length=256 (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--split", o->split, "Which datasets: train (data.train), eval (data.eval) or all (default)")
      ->check(CLI::IsMember({"train", "eval", "all"}));
  return o;
}

int run_prepare(const PrepareCliOptions& o) {
  Recipe r = recipe_load(o.recipe, o.overrides);
  PrepareReport rep = prepare_run(r, o.split);
  std::fputs(prepare_report_text(rep).c_str(), stdout);
  return 0;
}

}  // namespace lora
