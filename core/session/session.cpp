// See session.h.
#include "core/session/session.h"

#include "core/base/error.h"
#include "core/data/dataset_stats.h"
#include "core/formats/checkpoint.h"
#include "core/session/classify.h"

namespace lora {

LoraSpec lora_spec_from_recipe(const Recipe& r) {
  LoraSpec s;
  s.full = r.lora.mode == "full";
  s.r = r.lora.r;
  s.alpha = float(r.lora.alpha);
  s.dropout = float(r.lora.dropout);
  s.rslora = r.lora.rslora;
  s.targets = r.lora.targets;
  s.layers = r.lora.layers;
  s.init_seed = uint64_t(r.lora.init_seed != 0 ? r.lora.init_seed : r.train.seed);
  return s;
}

std::string session_tokenizer_dir(const Recipe& r) { return r.data.tokenizer.empty() ? r.model.path : r.data.tokenizer; }

std::unique_ptr<Tokenizer> session_tokenizer_load(const Recipe& r, const ModelConfig& cfg) {
  const std::string dir = session_tokenizer_dir(r);
  std::unique_ptr<Tokenizer> tok = tokenizer_load(dir);
  if (tok->vocab_size() > cfg.vocab_size)
    fail_usage("the tokenizer in '" + dir + "' has " + std::to_string(tok->vocab_size()) +
                   " tokens but the model's vocab_size is " + std::to_string(cfg.vocab_size),
               "use the tokenizer that belongs to the model (data.tokenizer)");
  return tok;
}

DatasetPrepareResult session_split_prepare(const Recipe& r, const std::string& path, const Tokenizer& tok) {
  return dataset_prepare(path, r.data.format, tok, r.data.max_length, r.data.cache_dir, classify_dataset_options(r));
}

void session_split_check(const Dataset& d, const ModelConfig& cfg, const std::string& split, const std::string& source,
                         int max_length) {
  classify_data_check(d, cfg, split);
  const LengthStats st = dataset_length_stats(d, d.info().max_length);
  if (st.max > cfg.max_positions)
    fail_usage(source + ": examples of up to " + std::to_string(st.max) + " tokens, but the model has " +
                   std::to_string(cfg.max_positions) + " positions (data.max_length is " + std::to_string(max_length) +
                   ")",
               "lower data.max_length to at most " + std::to_string(cfg.max_positions));
}

std::string session_split_note(const std::string& what, const std::string& path, const DatasetPrepareResult& p) {
  std::string line = what + ": " + path + " -> " + p.path + (p.reused ? " (reusing tokenized cache)" : " (tokenized)") +
                     ", " + std::to_string(p.info.n_examples) + " examples, " + std::to_string(p.info.n_tokens) +
                     " tokens";
  if (p.info.n_truncated) line += ", " + std::to_string(p.info.n_truncated) + " truncated to data.max_length";
  if (p.info.n_dropped) line += ", " + std::to_string(p.info.n_dropped) + " dropped (prompt longer than data.max_length)";
  return line;
}

namespace {
std::shared_ptr<const Dataset> open_split(const std::string& path, const Recipe& r, const Tokenizer& tok,
                                          int vocab, const char* what, std::vector<std::string>& notes) {
  DatasetPrepareResult p = session_split_prepare(r, path, tok);
  notes.push_back(session_split_note(what, path, p));
  return std::make_shared<const Dataset>(Dataset::open(p.path, vocab));
}
}  // namespace

Session session_open(const Recipe& r, bool need_train, bool quiet) {
  Session s;
  // GPU precision: train.precision, else model.dtype, else bf16 ("auto").
  const std::string& prec = r.train.precision != "auto" ? r.train.precision : r.model.dtype;
  const DType act = prec == "fp16" ? DType::f16 : prec == "fp32" ? DType::f32 : DType::bf16;
  s.be = backend_create(r.model.device, quiet, act);
  Checkpoint ck = Checkpoint::open(r.model.path);
  ModelConfig cfg = ck.config();
  classify_config_apply(r, cfg);  // model.num_labels
  s.tokenizer_dir = session_tokenizer_dir(r);
  s.tok = session_tokenizer_load(r, cfg);
  s.model = std::make_unique<Model>(*s.be, cfg);
  s.model->load_base(ck);
  s.model->set_recompute(r.train.recompute);
  s.model->set_dropout(float(r.model.hidden_dropout), float(r.model.attention_dropout));
  if (need_train) {
    if (r.data.train.empty()) fail_usage("data.train is not set", "name the training file in the recipe or with --set data.train=PATH");
    s.train = open_split(r.data.train, r, *s.tok, cfg.vocab_size, "train", s.notes);
  }
  if (!r.data.eval.empty()) s.eval = open_split(r.data.eval, r, *s.tok, cfg.vocab_size, "eval", s.notes);
  if (s.train) session_split_check(*s.train, cfg, "train", r.data.train, r.data.max_length);
  if (s.eval) session_split_check(*s.eval, cfg, "eval", r.data.eval, r.data.max_length);
  return s;
}

}  // namespace lora
