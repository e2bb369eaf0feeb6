// `lora info` on run directories and tokenized datasets (see inspect.h).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/commands/inspect.h"
#include "core/session/recipe.h"
#include "core/train/train_state.h"

namespace lora {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

constexpr size_t kLastLosses = 5;  // training records shown from the end of metrics.jsonl

bool exists_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// The recipe keys that say what a run was: model, adapter shape, data, optimisation, output.
ojson recipe_main_keys(const Recipe& r) {
  ojson j;
  j["model.path"] = r.model.path;
  j["lora.mode"] = r.lora.mode;
  if (r.lora.mode != "full") {
    j["lora.r"] = r.lora.r;
    j["lora.alpha"] = r.lora.alpha;
    j["lora.rslora"] = r.lora.rslora;
    j["lora.targets"] = r.lora.targets;
    j["lora.layers"] = r.lora.layers;
    j["lora.dropout"] = r.lora.dropout;
    if (!r.lora.init_from.empty()) j["lora.init_from"] = r.lora.init_from;
  }
  j["data.train"] = r.data.train;
  j["data.eval"] = r.data.eval;
  j["data.max_length"] = r.data.max_length;
  j["train.lr"] = r.train.lr;
  j["train.schedule"] = r.train.schedule;
  j["train.batch_size"] = r.train.batch_size;
  j["train.grad_accum"] = r.train.grad_accum;
  j["train.epochs"] = r.train.epochs;
  j["train.max_steps"] = r.train.max_steps;
  j["train.seed"] = r.train.seed;
  j["output.dir"] = r.output.dir;
  return j;
}

// Committed checkpoints under <dir>/checkpoints, oldest first: {"dir", "step", "epoch", "tokens_seen"}.
ojson checkpoints_json(const fs::path& dir, int64_t* incomplete) {
  ojson out = ojson::array();
  std::vector<fs::path> found;
  std::error_code ec;
  if (fs::is_directory(dir / "checkpoints", ec))
    for (const auto& e : fs::directory_iterator(dir / "checkpoints", ec)) {
      const std::string name = e.path().filename().string();
      if (!e.is_directory()) continue;
      if (name.rfind("step-", 0) == 0 && exists_file(e.path() / "COMMITTED"))
        found.push_back(e.path());
      else
        ++*incomplete;  // a .tmp-step-N left by a crash, or a step without its commit record
    }
  std::sort(found.begin(), found.end());
  for (const fs::path& p : found) {
    ojson c;
    c["dir"] = p.string();
    try {
      nlohmann::json s = json_read_file((p / "state.json").string());
      c["step"] = s.value("step", int64_t(-1));
      c["epoch"] = s.value("epoch", int64_t(-1));
      c["tokens_seen"] = s.value("tokens_seen", int64_t(-1));
    } catch (const Error& e) {
      c["error"] = e.what();
    }
    out.push_back(c);
  }
  return out;
}

// The end of metrics.jsonl: {"records", "unreadable_lines", "last_step", "last_losses": [{"step", "loss"}],
// "last_eval": {"step", "eval_loss", "eval_token_accuracy"}}.
ojson metrics_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail_runtime("cannot read '" + path.string() + "'", "check the file's permissions");
  std::vector<ojson> losses;
  ojson last_eval, out;
  int64_t records = 0, bad = 0, last_step = -1;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    ojson j = ojson::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      ++bad;  // a line torn by a crash mid-write
      continue;
    }
    ++records;
    if (j.contains("step") && j["step"].is_number_integer()) last_step = std::max(last_step, j["step"].get<int64_t>());
    if (j.contains("loss") && j.contains("step")) {
      losses.push_back({{"step", j["step"]}, {"loss", j["loss"]}});
      if (losses.size() > kLastLosses) losses.erase(losses.begin());
    }
    if (j.contains("eval_loss"))
      last_eval = {{"step", j.value("step", ojson())}, {"eval_loss", j["eval_loss"]},
                   {"eval_token_accuracy", j.value("eval_token_accuracy", ojson())}};
  }
  out["records"] = records;
  out["unreadable_lines"] = bad;
  out["last_step"] = last_step;
  out["last_losses"] = losses;
  out["last_eval"] = last_eval;
  return out;
}

}  // namespace

// {"kind": "run", "path", "recipe": {main keys} or "recipe_error", "checkpoints": [...], "latest",
//  "incomplete_checkpoints", "metrics": {...} (when metrics.jsonl exists), "adapter": {inspect_adapter}
//  or "adapter_error", "model_dir" (full fine-tunes), "finished": an adapter or model was written}
ojson inspect_run(const std::string& dir) {
  const fs::path p(dir);
  ojson j;
  j["kind"] = "run";
  j["path"] = dir;
  try {
    j["recipe"] = recipe_main_keys(recipe_load((p / "recipe.yaml").string()));
  } catch (const Error& e) {
    j["recipe_error"] = e.what();
  }
  int64_t incomplete = 0;
  j["checkpoints"] = checkpoints_json(p, &incomplete);
  j["latest"] = train_state_latest(dir);
  j["incomplete_checkpoints"] = incomplete;
  if (exists_file(p / "metrics.jsonl")) j["metrics"] = metrics_json(p / "metrics.jsonl");
  bool finished = false;
  if (exists_file(p / "adapter_config.json")) {
    finished = true;
    try {
      j["adapter"] = inspect_adapter(dir);
    } catch (const Error& e) {
      j["adapter_error"] = e.what();
    }
  }
  if (exists_file(p / "model" / "config.json")) {
    finished = true;
    j["model_dir"] = (p / "model").string();
  }
  j["finished"] = finished;
  return j;
}

// {"kind": "dataset", "path", "format_version", "format", "template", "source_path", "source_hash",
//  "tokenizer_fingerprint", "vocab_size", "eos_id", "max_length", "examples", "tokens", "prompt_tokens",
//  "completion_tokens", "truncated", "dropped", "labelled", "length": {min, mean, p50, p90, p99, max, histogram}}
ojson inspect_dataset(const std::string& path) {
  DatasetInfo info = dataset_h5_read_info(path);  // checks magic and format_version
  if (info.vocab_size <= 0 || info.vocab_size > (int64_t(1) << 31))
    fail_runtime("dataset file '" + path + "': attribute vocab_size is " + std::to_string(info.vocab_size),
                 "delete the file and run `lora prepare` again");
  Dataset d = Dataset::open(path, int(info.vocab_size));  // every table and id checked
  LengthStats s = dataset_length_stats(d, info.max_length);
  ojson j;
  j["kind"] = "dataset";
  j["path"] = path;
  j["format_version"] = DATASET_FORMAT_VERSION;
  j["format"] = info.format;
  j["template"] = info.template_name;
  j["source_path"] = info.source_path;
  j["source_hash"] = info.source_hash;
  j["tokenizer_fingerprint"] = info.tokenizer_fingerprint;
  j["vocab_size"] = info.vocab_size;
  j["eos_id"] = info.eos_id;
  j["max_length"] = info.max_length;
  j["examples"] = info.n_examples;
  j["tokens"] = info.n_tokens;
  j["prompt_tokens"] = s.prompt_tokens;
  j["completion_tokens"] = s.tokens - s.prompt_tokens;
  j["truncated"] = info.n_truncated;
  j["dropped"] = info.n_dropped;
  j["labelled"] = s.labelled;
  j["length"] = length_stats_json(s);
  return j;
}

}  // namespace lora
