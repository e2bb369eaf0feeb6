// See evaluate.h. The pipeline behind `lora eval`: session, adapter, loss, generation, metrics, files.
#include "core/eval/evaluate.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/strings.h"
#include "core/model/adapter.h"
#include "core/model/generate.h"
#include "core/session/classify.h"
#include "core/session/session.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Loss, token accuracy and loss-token count over the whole split, as the trainer's evaluation.
void eval_loss(Model& m, std::shared_ptr<const Dataset> data, int batch_size, EvalReport& rep) {
  BatchStreamOptions o;
  o.batch_size = batch_size;
  o.shuffle = false;
  BatchStream stream(data, o);
  Batch b;
  double loss = 0;
  int64_t tokens = 0, correct = 0;
  while (stream.next(b)) {
    LossStats s = m.step(b.tokens, b.targets, b.lengths, 0.0f, 0.0f, 0, false);
    loss += s.loss_sum;
    tokens += s.tokens;
    correct += s.correct;
  }
  rep.tokens = tokens;
  rep.loss = tokens ? loss / double(tokens) : NAN;
  rep.perplexity = tokens ? std::exp(rep.loss) : NAN;
  rep.token_accuracy = tokens ? double(correct) / double(tokens) : NAN;
}

// "generating [=====>      ] 12/40 meaning representations, 3.1 s" on one rewritten stderr line.
void progress_draw(const char* label, const char* unit, size_t done, size_t total, double seconds) {
  const int width = 30;
  const int fill = total ? int(double(width) * double(done) / double(total)) : width;
  std::string bar(size_t(fill), '=');
  if (fill < width) bar += '>' + std::string(size_t(width - fill - 1), ' ');
  std::fprintf(stderr, "\r%s [%s] %zu/%zu %s, %.1f s", label, bar.c_str(), done, total, unit, seconds);
  if (done == total) std::fputc('\n', stderr);
  std::fflush(stderr);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// METEOR of the predictions through the jar (one Java process), with a progress line on a terminal.
double eval_meteor(const std::vector<std::string>& predictions, const References& references, const std::string& jar,
                   const std::string& source, bool progress) {
  const auto t0 = std::chrono::steady_clock::now();
  double last = -1;
  auto draw = [&](size_t done, size_t total) {
    if (!progress) return;
    const double t = seconds_since(t0);
    if (done == 0) {
      std::fprintf(stderr, "METEOR: starting Java with %s (loading its paraphrase table takes a while)\n", jar.c_str());
    } else if (done == total || t - last >= 0.1) {
      progress_draw("METEOR", "segments", done, total, t);
      last = t;
    }
  };
  MeteorScorer scorer(jar, source);
  return scorer.score(predictions, references, draw).corpus;
}

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

}  // namespace

std::vector<ReferenceGroup> eval_group_references(const Dataset& data) {
  std::vector<ReferenceGroup> groups;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < data.size(); ++i) {
    const std::string& src = data.prompt_text(i);
    auto it = index.find(src);
    if (it == index.end()) {
      it = index.emplace(src, groups.size()).first;
      ReferenceGroup g;
      g.source = src;
      TokenSpan t = data.tokens(i);
      g.prompt.assign(t.begin(), t.begin() + data.prompt_length(i));
      groups.push_back(std::move(g));
    }
    groups[it->second].references.push_back(trim(data.completion_text(i)));
  }
  return groups;
}

EvalReport eval_run(const Recipe& r, const EvalRunOptions& o) {
  EvalReport rep;
  rep.split = o.split;
  rep.adapter = o.adapter;
  if (o.split != "eval" && o.split != "train")
    fail_usage("unknown split '" + o.split + "'", "use --split eval (data.eval) or --split train (data.train)");
  rep.data_path = o.split == "eval" ? r.data.eval : r.data.train;
  if (rep.data_path.empty())
    fail_usage("the recipe has no data for split '" + o.split + "': data." + o.split + " is not set",
               "name the file in the recipe or with --set data." + o.split + "=PATH");
  const bool base_only = o.adapter.empty();
  if (base_only) {
    rep.out_dir = o.out_dir.empty() ? (fs::path(r.output.dir) / ("base-eval-" + o.split)).string() : o.out_dir;
  } else {
    if (!fs::is_directory(o.adapter))
      fail_runtime("adapter directory '" + o.adapter + "' does not exist", "pass the output directory of `lora train`");
    if (!fs::exists(fs::path(o.adapter) / "adapter_config.json")) {
      const bool full = fs::exists(fs::path(o.adapter) / "model" / "config.json");
      fail_usage("'" + o.adapter + "' holds no adapter_config.json",
                 full ? "this is a full fine-tune: evaluate its model with --set model.path=" +
                            (fs::path(o.adapter) / "model").string() + " (and --set lora.mode=full)"
                      : "pass the output directory of `lora train` (adapter_config.json + adapter_model.safetensors)");
    }
    rep.out_dir = o.out_dir.empty() ? (fs::path(o.adapter) / ("eval-" + o.split)).string() : o.out_dir;
  }

  Session s = session_open(r, o.split == "train", o.quiet);
  std::shared_ptr<const Dataset> data = o.split == "eval" ? s.eval : s.train;
  if (!data || data->size() == 0)
    fail_usage("split '" + o.split + "' (" + rep.data_path + ") has no examples",
               "check the file: every example may have been dropped by data.max_length");
  rep.notes = s.notes;
  rep.backend = s.be->name();
  Model& model = *s.model;
  if (base_only) {
    // A classifier's head comes with its adapter; a base checkpoint without one would score zeros.
    if (model.config().head == HeadKind::classifier && !model.classifier().loaded)
      fail_usage("model " + r.model.path + " has no trained classification head (classifier.* weights), and no "
                 "--adapter was given",
                 "pass --adapter RUN (a classifier's head is saved with its adapter), or evaluate a merged model "
                 "(lora merge) that holds its head");
  } else {
    adapter_load(model, o.adapter);
    const std::string recorded = adapter_base_name(o.adapter);
    if (!recorded.empty() && !same_path(recorded, r.model.path))
      rep.notes.push_back("note: the adapter records base model '" + recorded + "'; evaluating on '" + r.model.path + "'");
  }
  dir_ensure_writable(rep.out_dir, "evaluation output directory");

  rep.examples = int64_t(data->size());
  if (model.config().head == HeadKind::classifier) {
    ClassifyEval ev = classify_evaluate(model, data, r.eval.batch_size, 0, r.eval.glue_task);
    rep.classification = true;
    rep.glue_task = r.eval.glue_task;
    rep.tokens = ev.examples;
    rep.loss = ev.loss;
    rep.glue = ev.metrics;
    std::string lines;
    char buf[64];
    for (double p : ev.predictions) {
      std::snprintf(buf, sizeof buf, model.config().num_labels == 1 ? "%.6g\n" : "%.0f\n", p);
      lines += buf;
    }
    file_write_atomic((fs::path(rep.out_dir) / "predictions.txt").string(), lines);
    file_write_atomic((fs::path(rep.out_dir) / "eval.json").string(), eval_report_json(rep, r) + "\n");
    return rep;
  }
  const bool generation = data->info().format == "e2e";
  std::string meteor_source;
  const std::string meteor_jar = meteor_jar_find(r.eval.meteor_jar, &meteor_source);
  // Before the long part: a jar that is missing or has no Java to run it stops here, not after generation.
  if (generation && o.generate && !meteor_jar.empty()) meteor_jar_check(meteor_jar, meteor_source);
  eval_loss(model, data, r.eval.batch_size, rep);

  if (generation && o.generate) {
    std::vector<ReferenceGroup> groups = eval_group_references(*data);
    if (o.limit > 0 && int64_t(groups.size()) > o.limit) {
      rep.notes.push_back("generating for the first " + std::to_string(o.limit) + " of " +
                          std::to_string(groups.size()) + " meaning representations (--limit)");
      groups.resize(size_t(o.limit));
    }
    std::vector<std::vector<int32_t>> prompts;
    for (const auto& g : groups) prompts.push_back(g.prompt);
    GenerateOptions go;
    go.max_new_tokens = r.eval.max_new_tokens;
    go.beam_size = r.eval.beam_size;
    go.length_penalty = float(r.eval.length_penalty);
    go.no_repeat_ngram_size = r.eval.no_repeat_ngram_size;
    go.batch_size = r.eval.batch_size;
    go.eos_id = s.tok->eos_id();
    const auto t0 = std::chrono::steady_clock::now();
    auto progress = [&](size_t done) {
      if (o.progress) progress_draw("generating", "meaning representations", done, prompts.size(), seconds_since(t0));
    };
    if (o.progress) progress(0);
    std::vector<std::vector<int32_t>> out = generate(model, prompts, go, progress);
    std::vector<std::string> predictions;
    References references;
    std::string sources;
    for (size_t i = 0; i < groups.size(); ++i) {
      predictions.push_back(trim(s.tok->decode(out.at(i))));
      references.push_back(groups[i].references);
      sources += groups[i].source + "\n";
    }
    rep.text = metrics_text(predictions, references);
    rep.sources = int64_t(groups.size());
    rep.generated = true;
    e2e_files_write((fs::path(rep.out_dir) / "predictions.txt").string(),
                    (fs::path(rep.out_dir) / "references.txt").string(), predictions, references);
    file_write_atomic((fs::path(rep.out_dir) / "sources.txt").string(), sources);
    if (!meteor_jar.empty()) {
      try {
        rep.text.meteor = eval_meteor(predictions, references, meteor_jar, meteor_source, o.progress);
      } catch (const Error& e) {
        throw Error(e.code(), e.what(),
                    e.hint() + "\n  (predictions.txt and references.txt are in " + rep.out_dir +
                        ": e2e-metrics' measure_scores.py reads them)");
      }
      rep.meteor_jar = meteor_jar;
    }
  } else if (!generation) {
    rep.notes.push_back("no generation metrics: " + rep.data_path + " is " + data->info().format +
                        " data; BLEU and the other text metrics need E2E-format data (MR||text)");
  }
  file_write_atomic((fs::path(rep.out_dir) / "eval.json").string(), eval_report_json(rep, r) + "\n");
  return rep;
}

bool same_path(const std::string& recorded, const std::string& used) {
  std::error_code ec;
  if (fs::equivalent(recorded, used, ec)) return true;
  return fs::absolute(recorded, ec).lexically_normal() == fs::absolute(used, ec).lexically_normal();
}

std::string eval_report_json(const EvalReport& rep, const Recipe& r) {
  json j;
  j["split"] = rep.split;
  j["data"] = rep.data_path;
  j["adapter"] = rep.adapter.empty() ? json(nullptr) : json(rep.adapter);  // null: the base model alone
  j["base_model"] = r.model.path;
  j["recipe"] = r.source;
  j["backend"] = rep.backend;
  j["examples"] = rep.examples;
  if (rep.classification) {
    j["loss"] = number_or_null(rep.loss);
    j["glue_task"] = rep.glue_task;
    json m = json::object();
    for (const auto& [name, value] : rep.glue) m[name] = number_or_null(value);
    j["metrics"] = m;
    j["metrics_note"] = "loss is the mean per-example cross-entropy (squared error for regression); metrics as "
                        "scikit-learn (accuracy, f1, matthews_corrcoef) and SciPy (pearsonr, spearmanr) compute them";
    j["files"] = {{"predictions", "predictions.txt"}};
    j["notes"] = rep.notes;
    return j.dump(2);
  }
  j["loss_tokens"] = rep.tokens;
  j["loss"] = number_or_null(rep.loss);
  j["perplexity"] = number_or_null(rep.perplexity);
  j["token_accuracy"] = number_or_null(rep.token_accuracy);
  if (rep.generated) {
    j["generation"] = {{"meaning_representations", rep.sources},
                       {"references", rep.text.references},
                       {"beam_size", r.eval.beam_size},
                       {"length_penalty", r.eval.length_penalty},
                       {"no_repeat_ngram_size", r.eval.no_repeat_ngram_size},
                       {"max_new_tokens", r.eval.max_new_tokens},
                       {"batch_size", r.eval.batch_size}};
    if (!rep.meteor_jar.empty()) j["generation"]["meteor_jar"] = rep.meteor_jar;
    j["metrics"] = {{"bleu", rep.text.bleu},
                    {"nist", rep.text.nist},
                    {"rouge_l", rep.text.rouge_l},
                    {"cider", rep.text.cider},
                    {"meteor", number_or_null(rep.text.meteor)}};
    j["metrics_note"] =
        "BLEU and NIST as mteval-v13a-sig.pl, ROUGE-L, CIDEr and METEOR as coco-caption, all as the official E2E "
        "scorer (tuetschek/e2e-metrics) runs them; BLEU, ROUGE-L and METEOR are fractions (x100 for papers). " +
        (rep.meteor_jar.empty()
             ? "METEOR is not computed: " + meteor_jar_hint() + "."
             : "METEOR by METEOR 1.5's jar (" + rep.meteor_jar +
                   ") as coco-caption runs it: java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm, on the "
                   "PTB-tokenized texts.");
    j["files"] = {{"predictions", "predictions.txt"}, {"references", "references.txt"}, {"sources", "sources.txt"}};
  }
  j["notes"] = rep.notes;
  return j.dump(2);
}

std::string eval_report_table(const EvalReport& rep) {
  const std::string what = rep.adapter.empty() ? "the base model alone (no --adapter)" : rep.adapter;
  std::string t = "evaluation of " + what + " on split '" + rep.split + "' (" + rep.data_path + ")\n";
  auto row = [&](const std::string& name, const std::string& value) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "  %-16s %s\n", name.c_str(), value.c_str());
    t += buf;
  };
  if (rep.classification) {
    row("examples", std::to_string(rep.examples));
    row("loss", fmt("%.4f", rep.loss));
    for (const auto& [name, value] : rep.glue) row(name, fmt("%.4f", value));
    t += "results in " + rep.out_dir + "/eval.json\n";
    return t;
  }
  row("examples", std::to_string(rep.examples) + " (" + std::to_string(rep.tokens) + " tokens with a loss)");
  row("loss", fmt("%.4f", rep.loss));
  row("perplexity", fmt("%.3f", rep.perplexity));
  row("token accuracy", fmt("%.4f", rep.token_accuracy));
  if (rep.generated) {
    row("generated", std::to_string(rep.sources) + " predictions, " + std::to_string(rep.text.references) +
                         " references");
    row("BLEU", fmt("%.4f", rep.text.bleu));
    row("NIST", fmt("%.4f", rep.text.nist));
    row("ROUGE-L", fmt("%.4f", rep.text.rouge_l));
    row("CIDEr", fmt("%.4f", rep.text.cider));
    row("METEOR", std::isfinite(rep.text.meteor)
                      ? fmt("%.4f", rep.text.meteor)
                      : "not computed: set eval.meteor_jar or LORA_METEOR_JAR (eval.json's metrics_note says how)");
  }
  t += "results in " + rep.out_dir + "/eval.json\n";
  return t;
}

}  // namespace lora
