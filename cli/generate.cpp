// `lora generate RECIPE.yaml [--adapter DIR] (--prompt TEXT ... | --prompts FILE|-) [--json] [--set ...]
// [--device cpu|cuda|auto] [--temperature T] [--top-k K] [--top-p P] [--seed N]`: continuations of prompts
// with the recipe's model and an adapter, laid out as the recipe's training data lays out a prompt, with
// the recipe's eval generation settings (core/eval/generate_run.h), or sampled: --temperature > 0 (1 when
// only --top-k or --top-p is given); without --seed a fresh seed is drawn and printed on stderr. Prints one continuation a line (a newline inside one written as \n), or with
// --json one JSON object a line: {"prompt", "generated", "tokens"}.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/eval/generate_run.h"
#include "core/session/recipe.h"

namespace lora {

std::shared_ptr<GenerateCliOptions> setup_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateCliOptions>();
  app.add_option("recipe", o->recipe, "Recipe file (YAML): the model, the data format and eval's generation settings")
      ->required();
  app.add_option("--adapter", o->adapter, "Adapter directory (the output of lora train); leave out for the base model");
  app.add_option("--prompt", o->prompts, "A prompt: an E2E meaning representation or a JSONL prompt (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--prompts", o->prompts_file, "A file of prompts, one a line (- reads standard input)");
  app.add_flag("--json", o->json, "One JSON object a line: prompt, generated text, token ids");
  app.add_option("--set", o->overrides, "Override a recipe key, e.g. --set eval.beam_size=10 (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--device", o->device, "cpu, ref (the CPU reference), cuda or auto (overrides model.device)")
      ->check(CLI::IsMember({"cpu", "ref", "cuda", "auto"}));
  app.add_option("--temperature", o->temperature,
                 "Sample at this temperature (0: greedy or the recipe's beam search; default 1 with --top-k/--top-p)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--top-k", o->top_k, "Sample among the K most likely tokens only (0: all; 1: greedy)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", o->top_p, "Sample among the smallest set of tokens whose probability reaches P (1: all)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o->seed, "Seed of the sampling: the same seed gives the same text (default: a fresh one, printed)")
      ->check(CLI::NonNegativeNumber);
  return o;
}

int run_generate(const GenerateCliOptions& o) {
  std::vector<std::string> overrides = o.overrides;
  if (!o.device.empty()) overrides.push_back("model.device=" + o.device);
  Recipe r = recipe_load(o.recipe, overrides);
  // recipe_validate asks for data.train, which generating reads only for its format (generate_run
  // reports a recipe with no data at all).
  Recipe checked = r;
  if (checked.data.train.empty()) checked.data.train = checked.data.eval;
  if (!checked.data.train.empty()) recipe_validate(checked);

  GenerateRunOptions g;
  g.adapter = o.adapter;
  g.prompts = o.prompts;
  if (!o.prompts_file.empty()) {
    std::string text;
    if (o.prompts_file == "-") {
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else {
      text = file_read(o.prompts_file);
    }
    for (std::string& line : text_lines(text))
      if (line.find_first_not_of(" \t\r") != std::string::npos) g.prompts.push_back(line);
    if (g.prompts.empty())
      fail_usage("--prompts " + o.prompts_file + " holds no prompt (every line is blank)", "write one prompt a line");
  }
  const bool sampling_asked = o.top_k > 0 || o.top_p < 1.0f;
  g.temperature = o.temperature >= 0 ? o.temperature : sampling_asked ? 1.0f : 0.0f;
  g.top_k = o.top_k;
  g.top_p = o.top_p;
  const bool sampling = g.temperature > 0 && g.top_k != 1;
  if (o.seed >= 0) {
    g.seed = uint64_t(o.seed);
  } else {
    // A fresh seed, small enough to type back: --seed N repeats this run.
    g.seed = uint64_t(std::chrono::system_clock::now().time_since_epoch().count() ^ ::getpid()) % 1000000000u;
  }
  GenerateRunResult res = generate_run(r, g);
  for (const auto& line : res.notes) std::fprintf(stderr, "%s\n", line.c_str());
  if (sampling && o.seed < 0)
    std::fprintf(stderr, "note: sampled with seed %llu (--seed %llu repeats it)\n", (unsigned long long)g.seed,
                 (unsigned long long)g.seed);
  for (size_t i = 0; i < res.texts.size(); ++i) {
    if (o.json) {
      nlohmann::ordered_json j = {{"prompt", g.prompts[i]}, {"generated", res.texts[i]}, {"tokens", res.ids[i]}};
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
    } else {
      std::string line;
      for (char c : res.texts[i]) line += c == '\n' ? std::string("\\n") : std::string(1, c);
      std::printf("%s\n", line.c_str());
    }
  }
  return 0;
}

}  // namespace lora
