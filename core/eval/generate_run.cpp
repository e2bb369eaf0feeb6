// See generate_run.h.
#include "core/eval/generate_run.h"

#include <filesystem>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/data/dataset.h"
#include "core/eval/evaluate.h"
#include "core/model/adapter.h"
#include "core/model/generate.h"
#include "core/session/session.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

// How the recipe's training data lays out a prompt: the format of data.train, else data.eval; a prepared
// .h5 file says which format it was made from.
std::string prompt_format(const Recipe& r) {
  const std::string source = !r.data.train.empty() ? r.data.train : r.data.eval;
  if (source.empty())
    fail_usage("the recipe names no data (data.train or data.eval), so the prompt layout is unknown",
               "generate with the recipe the adapter was trained with: its data format (E2E or JSONL) sets how a "
               "prompt is laid out");
  std::string format = recipe_data_format(r.data.format, source);
  if (format == "h5") format = dataset_h5_read_info(source).format;
  if (format == "glue")
    fail_usage("the recipe's data (" + source + ") is classification data: a classifier has nothing to generate",
               "use lora eval to score it");
  if (format != "e2e" && format != "jsonl")
    fail_usage("cannot tell the data format of " + source + " (data.format is " + r.data.format + ")",
               "set data.format to e2e or jsonl");
  return format;
}

}  // namespace

GenerateRunResult generate_run(const Recipe& recipe, const GenerateRunOptions& o) {
  if (o.prompts.empty()) fail_usage("no prompts given", "pass --prompt TEXT (repeatable) or --prompts FILE");
  const std::string format = prompt_format(recipe);
  if (!o.adapter.empty() && !fs::exists(fs::path(o.adapter) / "adapter_config.json"))
    fail_usage("'" + o.adapter + "' holds no adapter_config.json",
               "pass the output directory of `lora train`, or leave --adapter out to generate with the base model");
  // The model, its tokenizer and the adapter; no dataset is tokenized.
  Recipe r = recipe;
  const std::string train = r.data.train, eval = r.data.eval;
  r.data.train.clear();
  r.data.eval.clear();
  Session s = session_open(r, /*need_train=*/false, o.quiet);
  r.data.train = train;
  r.data.eval = eval;
  Model& model = *s.model;
  if (model.config().head == HeadKind::classifier)
    fail_usage("model " + r.model.path + " is a sequence classifier: it has nothing to generate",
               "use lora eval to score a classification adapter");
  GenerateRunResult out;
  out.notes = s.notes;
  if (!o.adapter.empty()) {
    adapter_load(model, o.adapter);
    const std::string recorded = adapter_base_name(o.adapter);
    if (!recorded.empty() && !same_path(recorded, r.model.path))
      out.notes.push_back("note: the adapter records base model '" + recorded + "'; generating with '" +
                          r.model.path + "'");
  }
  out.format = format;
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < o.prompts.size(); ++i) {
    try {
      prompts.push_back(dataset_prompt_ids(out.format, o.prompts[i], *s.tok));
    } catch (const Error& e) {
      throw Error(e.code(), "prompt " + std::to_string(i + 1) + ": " + e.what(), e.hint());
    }
  }
  GenerateOptions go;
  go.max_new_tokens = r.eval.max_new_tokens;
  go.beam_size = r.eval.beam_size;
  go.length_penalty = float(r.eval.length_penalty);
  go.no_repeat_ngram_size = r.eval.no_repeat_ngram_size;
  go.eos_id = s.tok->eos_id();
  go.batch_size = r.eval.batch_size;
  go.temperature = o.temperature;
  go.top_k = o.top_k;
  go.top_p = o.top_p;
  go.seed = o.seed;
  out.ids = generate(model, prompts, go);
  for (const auto& ids : out.ids) out.texts.push_back(trim(s.tok->decode(ids)));
  return out;
}

}  // namespace lora
