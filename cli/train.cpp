// `lora train RECIPE.yaml [--set key=value ...] [--resume DIR] [--dry-run] [--print-config] [--output DIR]
// [--device cpu|cuda|auto]`
#include <cstdio>

#include "cli/commands.h"
#include "core/session/recipe.h"
#include "core/train/trainer.h"

namespace lora {

std::shared_ptr<TrainCliOptions> setup_train(CLI::App& app) {
  auto o = std::make_shared<TrainCliOptions>();
  app.add_option("recipe", o->recipe, "Recipe file (YAML)")->required();  // recipe_load reports a missing file
  app.add_option("--set", o->overrides, "Override a recipe key, e.g. --set train.lr=1e-4 (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--resume", o->resume, "Resume from the newest committed checkpoint in this run directory");
  app.add_option("--output", o->output, "Run directory (overrides output.dir)");
  app.add_option("--device", o->device, "cpu, cuda or auto (overrides model.device)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_flag("--dry-run", o->dry_run,
               "Print the resolved recipe, trainable parameters, memory plan and first example; train nothing");
  app.add_flag("--print-config", o->print_config, "Print the fully resolved recipe and exit");
  return o;
}

int run_train(const TrainCliOptions& o) {
  std::vector<std::string> overrides = o.overrides;
  if (!o.output.empty()) overrides.push_back("output.dir=" + o.output);
  if (!o.device.empty()) overrides.push_back("model.device=" + o.device);
  Recipe r = recipe_load(o.recipe, overrides);
  if (o.print_config) {
    std::fputs(recipe_to_yaml(r).c_str(), stdout);
    return 0;
  }
  recipe_validate(r);
  TrainOptions t;
  t.resume = o.resume;
  t.dry_run = o.dry_run;
  return train_run(r, t);
}

}  // namespace lora
