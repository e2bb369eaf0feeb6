// See prepare.h.
#include "core/commands/prepare.h"

#include "core/base/error.h"
#include "core/formats/model_config.h"
#include "core/session/classify.h"
#include "core/session/session.h"

namespace lora {

PrepareReport prepare_run(const Recipe& recipe, const std::string& split) {
  if (split != "train" && split != "eval" && split != "all")
    fail_usage("--split must be train, eval or all, found '" + split + "'");
  Recipe checked = recipe;  // tokenizing only the eval split does not need data.train
  if (split == "eval" && checked.data.train.empty()) checked.data.train = checked.data.eval;
  recipe_validate(checked);
  if (split == "eval" && recipe.data.eval.empty())
    fail_usage("--split eval: data.eval is not set in " + (recipe.source.empty() ? "the recipe" : recipe.source),
               "name the evaluation file in the recipe or with --set data.eval=PATH");

  ModelConfig cfg = model_config_load(recipe.model.path);
  classify_config_apply(recipe, cfg);  // model.num_labels, as session_open applies it
  auto tok = session_tokenizer_load(recipe, cfg);
  PrepareReport rep;
  rep.tokenizer_dir = session_tokenizer_dir(recipe);
  rep.tokenizer_kind = tok->kind();
  rep.tokenizer_vocab = tok->vocab_size();
  std::vector<std::pair<std::string, std::string>> todo;
  if (split != "eval") todo.push_back({"train", recipe.data.train});
  if (split != "train" && !recipe.data.eval.empty()) todo.push_back({"eval", recipe.data.eval});
  for (const auto& [name, source] : todo) {
    PrepareSplit s;
    s.split = name;
    s.source = source;
    s.result = session_split_prepare(recipe, source, *tok);
    s.note = session_split_note(name, source, s.result);
    Dataset d = Dataset::open(s.result.path, cfg.vocab_size);  // the checks train makes when it opens it
    session_split_check(d, cfg, name, source, recipe.data.max_length);
    s.stats = dataset_length_stats(d, s.result.info.max_length);
    rep.splits.push_back(std::move(s));
  }
  return rep;
}

std::string prepare_report_text(const PrepareReport& rep) {
  std::string out = "tokenizer: " + rep.tokenizer_kind + " from " + rep.tokenizer_dir + " (" +
                    std::to_string(rep.tokenizer_vocab) + " tokens)\n";
  for (const PrepareSplit& s : rep.splits) {
    const DatasetInfo& i = s.result.info;
    out += s.note + "\n";
    std::string cache = s.result.reused ? "already up to date, nothing tokenized"
                        : s.result.stale_reason.empty() ? "written"
                                                        : "rebuilt (" + s.result.stale_reason + ")";
    out += "  cache      " + cache + "\n";
    out += "  examples   " + std::to_string(i.n_examples) + ", " + std::to_string(i.n_tokens) + " tokens (" +
           std::to_string(s.stats.prompt_tokens) + " prompt, " + std::to_string(s.stats.tokens - s.stats.prompt_tokens) +
           " completion); " + std::to_string(i.n_truncated) + " truncated to max_length " +
           std::to_string(i.max_length) + ", " + std::to_string(i.n_dropped) + " dropped\n";
    out += "  " + length_stats_line(s.stats) + "\n";
    out += "  histogram  " + length_histogram_line(s.stats) + "\n";
  }
  return out;
}

}  // namespace lora
