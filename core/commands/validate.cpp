// See validate.h.
#include "core/commands/validate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/commands/inspect.h"
#include "core/data/dataset.h"
#include "core/formats/checkpoint.h"
#include "core/metrics/metrics.h"
#include "core/model/adapter.h"
#include "core/model/model.h"
#include "core/ops/backend.h"
#include "core/session/classify.h"
#include "core/session/recipe.h"
#include "core/session/session.h"
#include "core/text/tokenizer.h"
#include "core/train/adapter_init.h"
#include "core/train/run_dir.h"
#include "core/train/train_state.h"
#include "core/train/trainer.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

std::string fmt_count(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", double(n) / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", double(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%lld", (long long)n);
  return buf;
}

// What a recipe part needs from the parts before it.
struct State {
  Recipe r;
  std::string recipe_problem;          // recipe_validate's message, "" when the recipe is valid
  std::unique_ptr<Checkpoint> ck;
  std::unique_ptr<Backend> be;         // the CPU backend the model is built on (weights are never read)
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::shared_ptr<Dataset> eval_data;  // tokenized eval split, for the generation checks
  std::string scratch;                 // private cache directory for tokenizing, removed at the end

  ~State() {
    std::error_code ec;
    if (!scratch.empty()) fs::remove_all(scratch, ec);
  }
  // A fresh directory under $TMPDIR: the data are tokenized there exactly as train tokenizes them
  // (session_split_prepare), so nothing lands in data.cache_dir.
  const std::string& scratch_dir() {
    if (scratch.empty()) {
      std::string tmpl = (fs::temp_directory_path() / "lora-validate-XXXXXX").string();
      if (!::mkdtemp(tmpl.data()))
        fail_runtime("cannot create a temporary directory under " + fs::temp_directory_path().string(),
                     "set TMPDIR to a writable directory");
      scratch = tmpl;
    }
    return scratch;
  }
};

class Validator {
 public:
  explicit Validator(ValidateReport& rep) : rep_(rep) {}
  // Runs one part: its summary on success, its lora::Error as a problem otherwise. Returns success.
  bool run(const std::string& part, const std::function<std::string()>& check) {
    try {
      std::string summary = check();
      if (!summary.empty()) add(part, ValidateStatus::ok, summary);
      return true;
    } catch (const Error& e) {
      add(part, ValidateStatus::problem, e.what(), e.hint(), e.code());
    } catch (const std::exception& e) {
      add(part, ValidateStatus::problem, std::string("internal error: ") + e.what(), "please report this", 1);
    }
    return false;
  }
  void add(const std::string& part, ValidateStatus s, const std::string& text, const std::string& hint = {},
           int code = 0) {
    rep_.lines.push_back({part, s, text, hint, code});
  }

 private:
  ValidateReport& rep_;
};

// Whether a recipe message names a key of section: recipe_validate's and type errors' lines read
// "<where>: <section>.<key>: ...", unknown keys' "unknown key 'k' in section '<section>'".
bool mentions(const std::string& message, const std::string& section) {
  return message.find(": " + section + ".") != std::string::npos ||
         message.find("in section '" + section + "'") != std::string::npos;
}

// Bytes as ids (special tokens such as "<s>" one id each, as a real vocabulary has them): what the data
// parts parse a split with when the model's tokenizer cannot be loaded, so that every line of the file is
// still checked. Nothing about lengths or the vocabulary is concluded from it.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    if (text.size() > 2 && text.front() == '<' && text.back() == '>' && text.find(' ') == std::string::npos)
      return {257};
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode(const std::vector<int32_t>&) const override { return ""; }
  std::string token_text(int32_t) const override { return ""; }
  int32_t eos_id() const override { return 256; }
  int vocab_size() const override { return 258; }
  std::string fingerprint() const override { return "bytes"; }
  std::string kind() const override { return "bytes"; }
};

// A split read and parsed line by line without the model's tokenizer (why: what is missing).
std::string check_split_parse(const Recipe& r, const std::string& source, const std::string& why) {
  DatasetInfo info;
  ByteTokenizer bytes;
  dataset_tokenize(source, r.data.format, bytes, std::max(2, r.data.max_length), &info, classify_dataset_options(r));
  return source + ": " + info.format + ", " + std::to_string(info.n_examples) +
         " examples, every line read (not tokenized: " + why + ")";
}

std::string recipe_summary(const Recipe& r) {
  std::string s = r.lora.mode == "full" ? "full fine-tune" : "lora r " + std::to_string(r.lora.r) + ", alpha " +
                                                                 recipe_format_number(r.lora.alpha) + " on " +
                                                                 join(r.lora.targets);
  s += "; lr " + recipe_format_number(r.train.lr) + " " + r.train.schedule + ", batch " +
       std::to_string(r.train.batch_size) + " x grad_accum " + std::to_string(r.train.grad_accum) + ", " +
       (r.train.max_steps > 0 ? std::to_string(r.train.max_steps) + " steps" : std::to_string(r.train.epochs) + " epochs");
  return s;
}

// Every block's tensors (norms and linear layers, by the names the model reads them under) and an
// untied LM head, present in the checkpoint with the shapes config.json gives them. Embeddings and the
// final norm are checked when training loads them.
void check_tensors(Model& m, const Checkpoint& ck) {
  std::vector<std::string> bad;
  auto want = [&](const std::string& name, const Tensor& t) {
    if (t.empty()) return;
    if (!ck.has(name)) {
      bad.push_back(name + ": missing");
      return;
    }
    std::vector<int64_t> shape = ck.shape(name);
    if (shape != t.shape)
      bad.push_back(name + ": shape " + tensor_host(shape).shape_str() + " in the checkpoint, " + t.shape_str() +
                    " from config.json");
  };
  if (!m.config().tied_head) want("lm_head.weight", m.head());
  for (auto& b : m.blocks()) {
    for (Norm* n : {&b.ln1, &b.ln2}) {
      want(n->hf_name + ".weight", n->w);
      want(n->hf_name + ".bias", n->b);
    }
    for (Linear* lin : b.linears()) {
      want(lin->hf_name + ".weight", lin->w);
      want(lin->hf_name + ".bias", lin->b);
    }
  }
  if (!bad.empty())
    fail_runtime("the weights in '" + ck.dir() + "' do not match its config.json: " + std::to_string(bad.size()) +
                     " tensor(s) missing or of another shape:" + error_list(bad),
                 "check that config.json belongs to these weights (layers, hidden size, heads, vocabulary)");
}

std::string check_model(State& st) {
  st.ck = std::make_unique<Checkpoint>(Checkpoint::open(st.r.model.path));
  ModelConfig c = st.ck->config();
  classify_config_apply(st.r, c);  // model.num_labels, as session_open applies it
  st.be = backend_cpu_create();
  st.model = std::make_unique<Model>(*st.be, c);  // refuses families and shapes the trainer cannot run
  check_tensors(*st.model, *st.ck);
  st.model->checkpoint_head_check(*st.ck);  // a stored head of another size than model.num_labels stops train
  return st.r.model.path + ": " + c.family + " (" + c.model_type + "), " + std::to_string(c.n_layer) + " layers, d_model " +
         std::to_string(c.d_model) + ", " + std::to_string(c.n_head) + " heads, vocab " + std::to_string(c.vocab_size) +
         ", context " + std::to_string(c.max_positions) +
         (c.head == HeadKind::classifier ? ", classification head of " + std::to_string(c.num_labels) + " labels" : "") +
         "; " + fmt_count(st.model->base_param_count()) +
         " parameters in " + std::to_string(st.ck->files().size()) + " weight file(s)";
}

std::string check_lora(State& st) {
  LoraSpec spec = lora_spec_from_recipe(st.r);
  st.model->lora_init(spec);  // unknown targets for this family, layers out of range, overlapping targets
  int64_t total = 0;
  std::string by;
  for (const auto& kv : st.model->trainable_counts()) {
    total += kv.second;
    by += (by.empty() ? "" : ", ") + kv.first + " " + std::to_string(kv.second);
  }
  char pct[32];
  std::snprintf(pct, sizeof pct, "%.3f%%", 100.0 * double(total) / double(std::max<int64_t>(1, st.model->base_param_count())));
  std::string where = spec.full ? "every weight" : join(spec.targets) + " on " +
                      (spec.layers.empty() ? "all " + std::to_string(st.model->config().n_layer) + " layers"
                                           : std::to_string(spec.layers.size()) + " of " +
                                                 std::to_string(st.model->config().n_layer) + " layers");
  return where + ": " + std::to_string(total) + " trainable parameters (" + pct + " of the base; " + by + ")";
}

// Parses and tokenizes one split as train does, into the scratch directory, and checks it against the
// model. A prepared dataset (HDF5) is opened where it is.
std::string check_split(State& st, const std::string& split, const std::string& source) {
  Recipe r = st.r;
  r.data.cache_dir = st.scratch_dir();
  const ModelConfig& c = st.model->config();
  std::error_code ec;
  const bool prepared = fs::is_regular_file(source, ec) && path_is_hdf5(source);
  DatasetPrepareResult p = session_split_prepare(r, source, *st.tok);
  auto d = std::make_shared<Dataset>(Dataset::open(p.path, c.vocab_size));
  session_split_check(*d, c, split, source, r.data.max_length);  // as train and eval check it
  const std::string what = prepared ? "prepared dataset, " : "";
  const DatasetInfo& info = d->info();
  LengthStats s = dataset_length_stats(*d, info.max_length);
  std::string out = source + ": " + what + info.format + ", " + std::to_string(info.n_examples) + " examples, " +
                    std::to_string(info.n_tokens) + " tokens, lengths " + std::to_string(s.min) + "-" +
                    std::to_string(s.max) + ", " + std::to_string(info.n_truncated) + " truncated, " +
                    std::to_string(info.n_dropped) + " dropped";
  if (split == "train") out += "; " + std::to_string(train_total_steps(r, info.n_examples)) + " optimizer steps";
  if (split == "eval") st.eval_data = d;
  return out;
}

std::string check_eval(State& st, Validator& v) {
  const Recipe& r = st.r;
  const EvalSection& e = r.eval;
  std::string gen = e.beam_size > 1 ? "beam " + std::to_string(e.beam_size) + ", length_penalty " +
                                          recipe_format_number(e.length_penalty)
                                    : std::string("greedy");
  if (e.no_repeat_ngram_size > 0) gen += ", no_repeat_ngram_size " + std::to_string(e.no_repeat_ngram_size);
  gen += ", max_new_tokens " + std::to_string(e.max_new_tokens);
  if (st.model->config().head == HeadKind::classifier)
    return "batch " + std::to_string(e.batch_size) + "; classification: loss and GLUE metrics (eval.glue_task " +
           e.glue_task + ")";
  if (!st.eval_data) return "batch " + std::to_string(e.batch_size) + "; " + gen;
  const Dataset& d = *st.eval_data;
  const int P = st.model->config().max_positions;
  int64_t longest_prompt = 0;
  for (size_t i = 0; i < d.size(); ++i) longest_prompt = std::max<int64_t>(longest_prompt, d.prompt_length(i));
  const bool generates = d.info().format == "e2e";
  if (generates && longest_prompt >= P)
    fail_usage("data.eval has a prompt of " + std::to_string(longest_prompt) + " tokens; the model has " +
                   std::to_string(P) + " positions, leaving none to generate",
               "lower data.max_length or shorten the prompts");
  if (generates && longest_prompt + e.max_new_tokens > P)
    v.add("eval", ValidateStatus::warning,
          "the longest eval prompt (" + std::to_string(longest_prompt) + " tokens) plus eval.max_new_tokens (" +
              std::to_string(e.max_new_tokens) + ") exceeds the model's " + std::to_string(P) +
              " positions: generation stops at the last position",
          "lower eval.max_new_tokens to " + std::to_string(P - longest_prompt) + " to make the limit explicit");
  if (!generates && (e.beam_size > 1 || e.no_repeat_ngram_size > 0))
    v.add("eval", ValidateStatus::warning,
          "eval.beam_size / eval.no_repeat_ngram_size apply to generation, which runs on E2E data only; data.eval is " +
              d.info().format,
          "remove them, or evaluate E2E-format data");
  return "batch " + std::to_string(e.batch_size) + "; " +
         (generates ? "generation " + gen + " (longest prompt " + std::to_string(longest_prompt) + " tokens)"
                    : std::string("loss, perplexity and token accuracy (") + d.info().format + " data: no generation)");
}

void check_output(State& st, Validator& v) {
  const Recipe& r = st.r;
  const fs::path out(r.output.dir);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) {
      v.add("output", ValidateStatus::problem, "output.dir '" + r.output.dir + "' exists and is not a directory",
            "choose another output.dir (or --output with train)", EXIT_CODE_RUNTIME);
      return;
    }
    // As train decides it: a run killed before its first checkpoint is simply started again.
    if (!r.output.overwrite && run_dir_has_run(r.output.dir)) {
      v.add("output", ValidateStatus::warning,
            "output.dir '" + r.output.dir + "' already holds a run: a fresh `lora train` refuses it",
            "resume it with --resume " + r.output.dir + ", choose another with --output, or set output.overwrite: true");
      return;
    }
  }
  // The nearest existing ancestor must let us create the directory (nothing is created here).
  fs::path p = fs::absolute(out, ec);
  while (!p.empty() && !fs::exists(p, ec) && p != p.parent_path()) p = p.parent_path();
  if (!fs::is_directory(p, ec) || ::access(p.c_str(), W_OK | X_OK) != 0) {
    v.add("output", ValidateStatus::problem,
          "output.dir '" + r.output.dir + "' cannot be created or written: '" + p.string() + "' is not a writable directory",
          "choose a writable output.dir (or --output with train)", EXIT_CODE_RUNTIME);
    return;
  }
  v.add("output", ValidateStatus::ok, r.output.dir + (fs::exists(out, ec) ? " (exists, no run in it yet)" : " (will be created)"));
}

}  // namespace

size_t ValidateReport::count(ValidateStatus s) const {
  return size_t(std::count_if(lines.begin(), lines.end(), [&](const ValidateLine& l) { return l.status == s; }));
}

int ValidateReport::exit_code() const {
  int code = 0;
  for (const auto& l : lines)
    if (l.status == ValidateStatus::problem) code = std::max(code, l.code == EXIT_CODE_USAGE ? 2 : 1);
  return code;
}

ValidateReport validate_recipe(const std::string& recipe_path, const std::vector<std::string>& overrides) {
  ValidateReport rep;
  rep.recipe_path = recipe_path;
  Validator v(rep);
  State st;
  std::vector<Error> key_problems;  // unknown keys and wrong types: the other keys are still read
  if (!v.run("recipe", [&] {
        st.r = recipe_load(recipe_path, overrides, &key_problems);
        return std::string();
      }))
    return rep;  // a missing file or a syntax error: nothing else can be read
  const Recipe& r = st.r;
  for (const Error& e : key_problems) {
    v.add("recipe", ValidateStatus::problem, e.what(), e.hint(), e.code());
    st.recipe_problem += std::string(e.what()) + "\n";
  }
  v.run("recipe", [&] {
    try {
      recipe_validate(r);
    } catch (const Error& e) {
      st.recipe_problem += e.what();
      throw;
    }
    return key_problems.empty() ? recipe_path + ": " + recipe_summary(r) : std::string();
  });
  const bool lora_ok = !mentions(st.recipe_problem, "lora"), data_ok = !mentions(st.recipe_problem, "data");

  if (r.model.path.empty()) v.add("model", ValidateStatus::skipped, "model.path is not set");
  else v.run("model", [&] { return check_model(st); });

  if (!st.model) {
    if (r.data.tokenizer.empty()) v.add("tokenizer", ValidateStatus::skipped, "needs a model whose config can be read");
    else v.run("tokenizer", [&] {  // data.tokenizer loads; its fit to the vocabulary needs the model
      auto tok = tokenizer_load(r.data.tokenizer);
      return tok->kind() + " from " + r.data.tokenizer + ", " + std::to_string(tok->vocab_size()) +
             " tokens (its fit to the model is checked once the model reads)";
    });
  } else {
    v.run("tokenizer", [&] {
      st.tok = session_tokenizer_load(r, st.model->config());
      return st.tok->kind() + " from " + session_tokenizer_dir(r) + ", " + std::to_string(st.tok->vocab_size()) +
             " tokens, eos " + std::to_string(st.tok->eos_id()) +
             (st.tok->bos_id() >= 0 ? ", bos " + std::to_string(st.tok->bos_id()) + " before every example" : "");
    });
  }

  bool lora_placed = false;
  if (!st.model) v.add("lora", ValidateStatus::skipped, "needs the model");
  else if (!lora_ok) v.add("lora", ValidateStatus::skipped, "fix the lora section of the recipe first");
  else lora_placed = v.run("lora", [&] { return check_lora(st); });
  if (!r.lora.init_from.empty()) {
    // Read and set into the weightless model exactly as train does, so every mismatch train would stop at.
    if (!lora_placed) v.run("init_from", [&] {  // the adapter reads; its fit needs the model with its adapters
      AdapterFile ad = adapter_file_read(r.lora.init_from);
      return r.lora.init_from + ": " + std::to_string(ad.modules.size()) + " adapted module(s), r " +
             std::to_string(ad.r) + " (its fit to the model is checked once the model and lora pass)";
    });
    else v.run("init_from", [&] {
      // The part's name says what "lora.init_from: " at the start of each line says.
      auto bare = [](const std::string& line) { return line.substr(line.rfind("lora.init_from: ", 0) == 0 ? 16 : 0); };
      try {
        std::string out;
        for (const std::string& line : adapter_init_from(*st.model, r.lora.init_from))
          out += (out.empty() ? "" : "; ") + bare(line);
        return out;
      } catch (const Error& e) {
        throw Error(e.code(), bare(e.what()), e.hint());
      }
    });
  }
  const std::string& prec = r.train.precision != "auto" ? r.train.precision : r.model.dtype;
  if (r.lora.mode == "full" && r.model.device != "cpu" && r.model.device != "ref" && prec != "fp32")
    v.add("lora", ValidateStatus::warning, "lora.mode full trains fp32 weights only; on a GPU this run would use " +
                                               (prec == "auto" ? std::string("bf16") : prec) + " and stop at the start",
          "set train.precision: fp32, or model.device: cpu");

  std::error_code ec;
  for (const auto& [split, source] : {std::pair<std::string, std::string>{"train", r.data.train}, {"eval", r.data.eval}}) {
    const std::string part = "data." + split;
    if (source.empty()) {
      if (split == "eval") v.add(part, ValidateStatus::ok, "not set: no evaluation during training");
      continue;  // a missing data.train is a recipe problem already
    }
    if (!data_ok) v.add(part, ValidateStatus::skipped, "fix the data section of the recipe first");
    else if (!st.tok && fs::is_regular_file(source, ec) && path_is_hdf5(source))
      v.add(part, ValidateStatus::skipped, "a prepared dataset: needs the model and its tokenizer");
    else if (!st.tok)
      v.run(part, [&, source = source] {
        return check_split_parse(r, source, st.model ? "the tokenizer did not load" : "the model did not load");
      });
    else v.run(part, [&, split = split, source = source] { return check_split(st, split, source); });
  }

  if (st.model) v.run("eval", [&] { return check_eval(st, v); });
  std::string meteor_source;
  const std::string meteor_jar = meteor_jar_find(r.eval.meteor_jar, &meteor_source);
  if (!meteor_jar.empty())
    v.run("meteor", [&] {
      const std::string java = meteor_jar_check(meteor_jar, meteor_source);
      return meteor_jar + " (" + meteor_source + "), data/paraphrase-en.gz beside it, " + java +
             " (not started here: `lora eval` runs it)";
    });
  check_output(st, v);
  if (r.model.device == "cuda") {
    std::string why;
    if (!cuda_device_available(&why))
      v.add("device", ValidateStatus::warning, "model.device is cuda but this machine has no usable CUDA device: " + why,
            "fine when the run goes to a GPU node; run `lora validate` there to check the device");
  }
  return rep;
}

std::string validate_report_text(const ValidateReport& rep) {
  std::string out;
  for (const auto& l : rep.lines) {
    const char* tag = l.status == ValidateStatus::ok        ? "ok"
                      : l.status == ValidateStatus::warning ? "warning"
                      : l.status == ValidateStatus::skipped ? "skipped"
                                                            : "PROBLEM";
    char head[48];
    std::snprintf(head, sizeof head, "%-11s %-8s ", l.part.c_str(), tag);
    std::string text = l.status == ValidateStatus::problem ? "(see below)" : l.text;
    out += head + text + "\n";
    if (l.status == ValidateStatus::warning && !l.hint.empty()) out += "                     hint: " + l.hint + "\n";
  }
  const size_t warnings = rep.count(ValidateStatus::warning);
  if (rep.exit_code() == 0)
    out += "ok: " + rep.recipe_path + " passed every check" +
           (warnings ? " (" + std::to_string(warnings) + " warning" + (warnings > 1 ? "s" : "") + ")" : "") + "\n";
  return out;
}

void validate_report_throw(const ValidateReport& rep) {
  std::vector<const ValidateLine*> problems;
  for (const auto& l : rep.lines)
    if (l.status == ValidateStatus::problem) problems.push_back(&l);
  if (problems.empty()) return;
  auto indent = [](std::string s, const std::string& pad) {
    for (size_t p = s.find('\n'); p != std::string::npos; p = s.find('\n', p + 1)) s.insert(p + 1, pad);
    return s;
  };
  const std::string again = "fix it and run `lora validate " + rep.recipe_path + "` again";
  if (problems.size() == 1) throw Error(rep.exit_code(), problems[0]->part + ": " + problems[0]->text,
                                        problems[0]->hint.empty() ? again : problems[0]->hint);
  std::string msg = std::to_string(problems.size()) + " problems in " + rep.recipe_path + ":";
  for (const ValidateLine* l : problems) {
    msg += "\n  " + l->part + ": " + indent(l->text, "    ");
    if (!l->hint.empty()) msg += "\n    hint: " + l->hint;
  }
  throw Error(rep.exit_code(), msg, "fix them and run `lora validate " + rep.recipe_path + "` again");
}

}  // namespace lora
