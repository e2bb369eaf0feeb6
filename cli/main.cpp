// `lora`: LoRA fine-tuning of transformer language models. Wires the subcommands (cli/*.cpp) and turns
// errors into one message on stderr and the documented exit code (0 ok, 1 runtime, 2 usage, 75 stopped
// by a signal after saving).
#include <cstdio>
#include <exception>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/base/error.h"

int main(int argc, char** argv) {
  using namespace lora;
  CLI::App app{"lora: fine-tune transformer language models with LoRA (Hu et al., 2021)", "lora"};
  app.set_version_flag("--version", std::string("lora ") + LORA_VERSION);
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 runtime failure, 2 bad usage or recipe, 75 stopped by a signal after saving "
             "(resume with --resume).");
  CLI::App* train = app.add_subcommand("train", "Fine-tune a model as a recipe says");
  CLI::App* eval = app.add_subcommand("eval", "Measure an adapter on a data split");
  CLI::App* gen = app.add_subcommand("generate", "Continue prompts with a model and an adapter");
  CLI::App* merge = app.add_subcommand("merge", "Fold an adapter into its base model");
  CLI::App* exp = app.add_subcommand("export", "Write an adapter in another ecosystem's format");
  CLI::App* init = app.add_subcommand("init", "Write a randomly initialised model from a config.json");
  CLI::App* info = app.add_subcommand("info", "Show what a run, adapter, model, dataset or weights file holds");
  CLI::App* prepare = app.add_subcommand("prepare", "Tokenize a recipe's datasets into the cache ahead of training");
  CLI::App* validate = app.add_subcommand("validate", "Check a recipe, its model, tokenizer and data without training");
  auto train_o = setup_train(*train);
  auto eval_o = setup_eval(*eval);
  auto gen_o = setup_generate(*gen);
  auto merge_o = setup_merge(*merge);
  auto export_o = setup_export(*exp);
  auto init_o = setup_init(*init);
  auto info_o = setup_info(*info);
  auto prepare_o = setup_prepare(*prepare);
  auto validate_o = setup_validate(*validate);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // CLI::ExtrasError, CLI::RequiredError, CLI::ValidationError, ...
    return usage_error(app, e, argc, argv);
  }
  try {
    if (train->parsed()) return run_train(*train_o);
    if (eval->parsed()) return run_eval(*eval_o);
    if (gen->parsed()) return run_generate(*gen_o);
    if (merge->parsed()) return run_merge(*merge_o);
    if (exp->parsed()) return run_export(*export_o);
    if (init->parsed()) return run_init(*init_o);
    if (info->parsed()) return run_info(*info_o);
    if (prepare->parsed()) return run_prepare(*prepare_o);
    if (validate->parsed()) return run_validate(*validate_o);
  } catch (const Error& e) {
    print_error(e);
    return e.code();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: internal error: %s\n  hint: please report this with the command that caused it\n",
                 e.what());
    return EXIT_CODE_RUNTIME;
  }
  return EXIT_CODE_USAGE;
}
