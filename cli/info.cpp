// `lora info PATH [--json] [--all]`: what PATH is (a run, an adapter, a model directory, a tokenized
// dataset, a safetensors or GGUF file) and what it holds (core/commands/inspect.h).
#include <cstdio>

#include "cli/commands.h"
#include "core/commands/inspect.h"

namespace lora {

std::shared_ptr<InfoCliOptions> setup_info(CLI::App& app) {
  auto o = std::make_shared<InfoCliOptions>();
  app.add_option("path", o->path,
                 "A run directory (lora train's output), an adapter, HF model or tokenizer directory, a tokenized "
                 "dataset (.h5), a .safetensors or a .gguf file")
      ->required();
  app.add_flag("--json", o->json, "Print one JSON object instead of the summary");
  app.add_flag("--all", o->all, "List every tensor and metadata value (default: the first 20)");
  return o;
}

int run_info(const InfoCliOptions& o) {
  InspectOptions io;
  io.all = o.all;
  nlohmann::ordered_json j = inspect_path(o.path, io);
  if (o.json)
    std::printf("%s\n", j.dump(2).c_str());
  else
    std::fputs(inspect_text(j).c_str(), stdout);
  return 0;
}

}  // namespace lora
