// `lora validate RECIPE.yaml [--set key=value ...]`: checks the recipe, the model directory, the tokenizer,
// the LoRA targets, the data files and the eval and output settings without training
// (core/commands/validate.h). Prints one line per part; every problem goes to stderr at once, exit 2 (recipe or
// usage) or 1 (files).
#include <cstdio>

#include "cli/commands.h"
#include "core/commands/validate.h"

namespace lora {

std::shared_ptr<ValidateCliOptions> setup_validate(CLI::App& app) {
  auto o = std::make_shared<ValidateCliOptions>();
  app.add_option("recipe", o->recipe, "Recipe file (YAML)")->required();  // recipe_load reports a missing file
  app.add_option("--set", o->overrides, "Override a recipe key, e.g. --set data.train=other.txt (repeatable)")
      ->allow_extra_args(false);
  return o;
}

int run_validate(const ValidateCliOptions& o) {
  ValidateReport rep = validate_recipe(o.recipe, o.overrides);
  std::fputs(validate_report_text(rep).c_str(), stdout);
  validate_report_throw(rep);
  return 0;
}

}  // namespace lora
