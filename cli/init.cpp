// `lora init --config config.json --out DIR [--tokenizer DIR] [--seed N]`: a randomly initialised model
// directory (GPT-2's initialisation), the starting point of a pretraining run in full mode.
#include <cstdio>

#include "cli/commands.h"
#include "core/commands/model_init.h"

namespace lora {

std::shared_ptr<InitCliOptions> setup_init(CLI::App& app) {
  auto o = std::make_shared<InitCliOptions>();
  app.add_option("--config", o->config, "HF config.json describing the architecture")->required();
  app.add_option("--out", o->out, "Output model directory")->required();
  app.add_option("--tokenizer", o->tokenizer, "Directory whose tokenizer files are copied alongside");
  app.add_option("--seed", o->seed, "Initialisation seed");
  return o;
}

int run_init(const InitCliOptions& o) {
  model_init_write(o.config, o.out, o.tokenizer, o.seed);
  std::printf("random model written to %s\n", o.out.c_str());
  return 0;
}

}  // namespace lora
