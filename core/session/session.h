// What `train` and `eval` both set up from a recipe: the backend, the base checkpoint, the tokenizer,
// the model with its base weights, and the tokenized datasets (prepared or reused from the cache).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/model/model.h"
#include "core/ops/backend.h"
#include "core/session/recipe.h"
#include "core/text/tokenizer.h"

namespace lora {

struct Session {
  std::unique_ptr<Backend> be;
  std::unique_ptr<Tokenizer> tok;
  std::string tokenizer_dir;
  std::unique_ptr<Model> model;
  std::shared_ptr<const Dataset> train, eval;
  std::vector<std::string> notes;  // lines worth showing the user (cache reuse, truncation counts)
};

// need_train: data.train must be present. quiet: no notices on stderr.
Session session_open(const Recipe& r, bool need_train, bool quiet);

// The pieces of session_open that `lora prepare` and `lora validate` use without building a model, so
// that they tokenize and check exactly as train and eval do.
// The tokenizer directory a recipe names: data.tokenizer, else model.path.
std::string session_tokenizer_dir(const Recipe& r);
// Loads that tokenizer and checks it fits the model's vocabulary (lora::Error, exit 2, otherwise).
std::unique_ptr<Tokenizer> session_tokenizer_load(const Recipe& r, const ModelConfig& cfg);
// Tokenizes one split (data.train or data.eval) into data.cache_dir, or reuses the cached file.
DatasetPrepareResult session_split_prepare(const Recipe& r, const std::string& path, const Tokenizer& tok);
// The checks every command makes of an opened split against the model, before any step: classification
// data for a classifier only, labels in range (classify_data_check), and no example longer than the
// model's positions (which would otherwise stop a run at the first batch that holds one, hours in).
// `source` names the file in messages, `split` is "train" or "eval". lora::Error (exit 2) otherwise.
void session_split_check(const Dataset& d, const ModelConfig& cfg, const std::string& split, const std::string& source,
                         int max_length);
// The line train prints for a split: "train: SRC -> CACHE (tokenized), N examples, T tokens, ...".
std::string session_split_note(const std::string& what, const std::string& path, const DatasetPrepareResult& p);
// The LoRA spec a recipe asks for.
LoraSpec lora_spec_from_recipe(const Recipe& r);

}  // namespace lora
