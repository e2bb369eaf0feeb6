// The subcommands of `lora`: one file each (cli/<name>.cpp) with an options struct, a setup function
// that declares its flags on a CLI11 subcommand, and a run function returning the exit code.
// cli/main.cpp only wires them; all logic lives in core/ where tests reach it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace lora {

class Error;
// "error: MESSAGE" and "  hint: HINT" on stderr, as every lora error is printed (cli/usage.cpp).
void print_error(const Error& e);
// A CLI11 parse error printed as print_error prints lora's errors, with a "did you mean" for a misspelt
// subcommand or option and `--set section.key=VALUE` for a recipe key given as an option (cli/usage.cpp).
// Returns the exit code, EXIT_CODE_USAGE.
int usage_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv);

struct TrainCliOptions {
  std::string recipe;
  std::vector<std::string> overrides;
  std::string resume, output, device;
  bool dry_run = false, print_config = false;
};
std::shared_ptr<TrainCliOptions> setup_train(CLI::App& app);
int run_train(const TrainCliOptions& o);

struct EvalCliOptions {
  std::string recipe, adapter, split = "eval";
  std::vector<std::string> overrides;
  std::string device;
  std::string out;           // output folder; default <adapter>/eval-<split>
  int64_t limit = 0;         // evaluate at most this many examples (0: all)
  bool no_generate = false;  // loss, perplexity and token accuracy only
};
std::shared_ptr<EvalCliOptions> setup_eval(CLI::App& app);
int run_eval(const EvalCliOptions& o);

struct GenerateCliOptions {
  std::string recipe, adapter, prompts_file, device;
  std::vector<std::string> prompts, overrides;
  bool json = false;  // one JSON object a line instead of the text
  // Sampling; a negative temperature means not given (1 when --top-k or --top-p is, else 0: greedy).
  float temperature = -1.0f, top_p = 1.0f;
  int top_k = 0;
  int64_t seed = -1;  // -1: a fresh seed, printed so that the run can be repeated
};
std::shared_ptr<GenerateCliOptions> setup_generate(CLI::App& app);
int run_generate(const GenerateCliOptions& o);

struct MergeCliOptions {
  std::string base, adapter, out, dtype = "fp32";
  std::vector<std::string> labels;
  bool verify = false, force = false, overwrite = false;
};
std::shared_ptr<MergeCliOptions> setup_merge(CLI::App& app);
int run_merge(const MergeCliOptions& o);

struct ExportCliOptions {
  std::string adapter, to, out, base, dtype = "fp32";
  std::vector<std::string> labels;
  bool overwrite = false;
};
std::shared_ptr<ExportCliOptions> setup_export(CLI::App& app);
int run_export(const ExportCliOptions& o);

struct InitCliOptions {
  std::string config, out, tokenizer;
  uint64_t seed = 0;
};
std::shared_ptr<InitCliOptions> setup_init(CLI::App& app);
int run_init(const InitCliOptions& o);

struct InfoCliOptions {
  std::string path;
  bool json = false;  // one JSON object instead of the human summary
  bool all = false;   // every tensor and metadata value, not the first 20
};
std::shared_ptr<InfoCliOptions> setup_info(CLI::App& app);
int run_info(const InfoCliOptions& o);

struct PrepareCliOptions {
  std::string recipe;
  std::vector<std::string> overrides;
  std::string split = "all";  // train, eval or all
};
std::shared_ptr<PrepareCliOptions> setup_prepare(CLI::App& app);
int run_prepare(const PrepareCliOptions& o);

struct ValidateCliOptions {
  std::string recipe;
  std::vector<std::string> overrides;
};
std::shared_ptr<ValidateCliOptions> setup_validate(CLI::App& app);
int run_validate(const ValidateCliOptions& o);

}  // namespace lora
