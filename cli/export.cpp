// `lora export --adapter DIR --to gguf|peft|merged --out PATH`
#include "cli/commands.h"
#include "core/error.h"

namespace lora {

std::shared_ptr<ExportCliOptions> setup_export(CLI::App& app) {
  auto o = std::make_shared<ExportCliOptions>();
  app.add_option("--adapter", o->adapter, "Adapter directory")->required();
  app.add_option("--to", o->to, "Format: gguf, peft or merged")->required();
  app.add_option("--out", o->out, "Output path")->required();
  app.add_option("--base", o->base, "Base model directory (for merged)");
  app.add_flag("--overwrite", o->overwrite, "Replace an existing output");
  return o;
}

int run_export(const ExportCliOptions&) {
  fail_usage("lora export is not yet implemented in this version", "see the README for what works today");
}

}  // namespace lora
