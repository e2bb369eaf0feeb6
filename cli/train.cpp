// `lora train RECIPE.yaml [--set key=value ...] [--resume DIR] [--dry-run] [--print-config] [--output DIR]
// [--device cpu|cuda|auto]`; `lora train --resume RUN` (no recipe) continues RUN with RUN/recipe.yaml.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/base/error.h"
#include "core/session/recipe.h"
#include "core/train/trainer.h"

namespace lora {

std::shared_ptr<TrainCliOptions> setup_train(CLI::App& app) {
  auto o = std::make_shared<TrainCliOptions>();
  // Not required: --resume RUN alone reads RUN/recipe.yaml (run_train reports a missing recipe).
  app.add_option("recipe", o->recipe, "Recipe file (YAML); with --resume RUN, RUN/recipe.yaml when left out");
  app.add_option("--set", o->overrides, "Override a recipe key, e.g. --set train.lr=1e-4 (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--resume", o->resume, "Resume from the newest committed checkpoint in this run directory");
  app.add_option("--output", o->output, "Run directory (overrides output.dir)");
  app.add_option("--device", o->device, "cpu, ref (the CPU reference), cuda or auto (overrides model.device)")
      ->check(CLI::IsMember({"cpu", "ref", "cuda", "auto"}));
  app.add_flag("--dry-run", o->dry_run,
               "Print the resolved recipe, trainable parameters, memory plan and first example; train nothing");
  app.add_flag("--print-config", o->print_config,
               "Print the fully resolved recipe and exit (exit 2 with the problems when a value is invalid)");
  return o;
}

int run_train(const TrainCliOptions& o) {
  std::vector<std::string> overrides;
  std::string recipe = o.recipe;
  if (recipe.empty()) {
    if (o.resume.empty())
      fail_usage("no recipe file given", "usage: lora train RECIPE.yaml, or lora train --resume RUN to continue a run");
    // The run's own resolved recipe, which holds every --set it started with; the run goes on in RUN.
    recipe = (std::filesystem::path(o.resume) / "recipe.yaml").string();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(recipe, ec))
      fail_usage("--resume " + o.resume + " without a recipe reads " + recipe + ", which does not exist",
                 "name the run's recipe: lora train RECIPE.yaml --resume " + o.resume);
    overrides.push_back("output.dir=" + o.resume);
  }
  overrides.insert(overrides.end(), o.overrides.begin(), o.overrides.end());
  if (!o.output.empty()) overrides.push_back("output.dir=" + o.output);
  if (!o.device.empty()) overrides.push_back("model.device=" + o.device);
  Recipe r = recipe_load(recipe, overrides);
  if (o.print_config) {
    std::fputs(recipe_to_yaml(r).c_str(), stdout);
    std::fflush(stdout);
    recipe_validate(r);  // printed either way; invalid values are an error (exit 2), as train would stop at them
    return 0;
  }
  recipe_validate(r);
  TrainOptions t;
  t.resume = o.resume;
  t.dry_run = o.dry_run;
  return train_run(r, t);
}

}  // namespace lora
