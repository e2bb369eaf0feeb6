// The recipe field table and what walks it without parsing: equality, value checks (recipe_validate)
// and printing (recipe_to_yaml). Parsing and overrides are in core/session/recipe.cpp.
//
// recipe_validate reports every problem at once, one a line, each as "<where>: <key>: <problem>"
// where <where> is the file:line or --set that gave the value (Recipe::origin), or the recipe file for
// a default.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/session/recipe.h"

namespace lora {

namespace fs = std::filesystem;

std::vector<RecipeField> recipe_fields(Recipe& r) {
  using K = FieldKind;
  const std::vector<std::string> precisions = {"auto", "bf16", "fp16", "fp32"};
  return {
      {"model", "path", K::path_in, &r.model.path, {}},
      {"model", "device", K::choice, &r.model.device, {"auto", "cpu", "ref", "cuda"}},
      {"model", "dtype", K::choice, &r.model.dtype, precisions},
      {"model", "num_labels", K::integer, &r.model.num_labels, {}},
      {"model", "hidden_dropout", K::number, &r.model.hidden_dropout, {}},
      {"model", "attention_dropout", K::number, &r.model.attention_dropout, {}},

      {"lora", "mode", K::choice, &r.lora.mode, {"lora", "full"}},
      {"lora", "r", K::integer, &r.lora.r, {}},
      {"lora", "alpha", K::number, &r.lora.alpha, {}},
      {"lora", "dropout", K::number, &r.lora.dropout, {}},
      {"lora", "rslora", K::boolean, &r.lora.rslora, {}},
      {"lora", "targets", K::text_list, &r.lora.targets, {}},
      {"lora", "layers", K::int_list, &r.lora.layers, {}},
      {"lora", "init_seed", K::integer, &r.lora.init_seed, {}},
      {"lora", "init_from", K::path_in, &r.lora.init_from, {}},

      {"data", "train", K::path_in, &r.data.train, {}},
      {"data", "eval", K::path_in, &r.data.eval, {}},
      {"data", "format", K::choice, &r.data.format, {"auto", "e2e", "jsonl", "glue"}},
      {"data", "text_fields", K::text_list, &r.data.text_fields, {}},
      {"data", "label_field", K::text, &r.data.label_field, {}},
      {"data", "label_names", K::text_list, &r.data.label_names, {}},
      {"data", "tokenizer", K::path_in, &r.data.tokenizer, {}},
      {"data", "max_length", K::integer, &r.data.max_length, {}},
      {"data", "cache_dir", K::path_out, &r.data.cache_dir, {}},

      {"train", "lr", K::number, &r.train.lr, {}},
      {"train", "beta1", K::number, &r.train.beta1, {}},
      {"train", "beta2", K::number, &r.train.beta2, {}},
      {"train", "eps", K::number, &r.train.eps, {}},
      {"train", "weight_decay", K::number, &r.train.weight_decay, {}},
      {"train", "schedule", K::choice, &r.train.schedule, {"constant", "linear", "cosine"}},
      {"train", "warmup_steps", K::integer, &r.train.warmup_steps, {}},
      {"train", "warmup_ratio", K::number, &r.train.warmup_ratio, {}},
      {"train", "batch_size", K::integer, &r.train.batch_size, {}},
      {"train", "grad_accum", K::integer, &r.train.grad_accum, {}},
      {"train", "epochs", K::integer, &r.train.epochs, {}},
      {"train", "max_steps", K::integer, &r.train.max_steps, {}},
      {"train", "clip_grad_norm", K::number, &r.train.clip_grad_norm, {}},
      {"train", "nonfinite", K::choice, &r.train.nonfinite, {"abort", "skip"}},
      {"train", "nonfinite_skips", K::integer, &r.train.nonfinite_skips, {}},
      {"train", "label_smoothing", K::number, &r.train.label_smoothing, {}},
      {"train", "seed", K::integer, &r.train.seed, {}},
      {"train", "precision", K::choice, &r.train.precision, precisions},
      {"train", "recompute", K::boolean, &r.train.recompute, {}},
      {"train", "eval_every", K::integer, &r.train.eval_every, {}},
      {"train", "eval_batches", K::integer, &r.train.eval_batches, {}},

      {"eval", "batch_size", K::integer, &r.eval.batch_size, {}},
      {"eval", "max_new_tokens", K::integer, &r.eval.max_new_tokens, {}},
      {"eval", "beam_size", K::integer, &r.eval.beam_size, {}},
      {"eval", "length_penalty", K::number, &r.eval.length_penalty, {}},
      {"eval", "no_repeat_ngram_size", K::integer, &r.eval.no_repeat_ngram_size, {}},
      {"eval", "num_samples", K::integer, &r.eval.num_samples, {}},
      {"eval", "glue_task", K::choice, &r.eval.glue_task,
       {"auto", "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}},
      {"eval", "meteor_jar", K::path_in, &r.eval.meteor_jar, {}},

      {"output", "dir", K::path_out, &r.output.dir, {}},
      {"output", "save_every", K::integer, &r.output.save_every, {}},
      {"output", "keep_last", K::integer, &r.output.keep_last, {}},
      {"output", "overwrite", K::boolean, &r.output.overwrite, {}},

      {"log", "every", K::integer, &r.log.every, {}},
      {"log", "progress", K::choice, &r.log.progress, {"auto", "bar", "plain", "none"}},
  };
}

const std::vector<std::string>& recipe_section_names() {
  static const std::vector<std::string> names = {"model", "lora", "data", "train", "eval", "output", "log"};
  return names;
}

const std::vector<std::string>& recipe_lora_target_names() {
  static const std::vector<std::string> names = {
      "q",      "k",      "v",      "o",      "up",        "down",    "gate",       // roles
      "c_attn", "c_proj", "c_fc",                                                   // GPT-2
      "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",  // LLaMA
      "query",  "key",    "value"};                                                 // RoBERTa
  return names;
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("lr" ~ "rl").
static size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); i++) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); j++) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    for (size_t j = 1; j <= b.size(); j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

std::string recipe_closest_name(const std::string& word, const std::vector<std::string>& candidates) {
  if (word.empty()) return "";
  std::string lower = word;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  size_t limit = lower.size() <= 3 ? 1 : lower.size() <= 6 ? 2 : 3;
  std::string best;
  size_t best_d = limit + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(lower, c);
    if (d < best_d) best = c, best_d = d;
  }
  if (!best.empty()) return best;
  // A prefix either way: "warmup" -> "warmup_steps", "max_length_tokens" -> "max_length".
  if (lower.size() >= 3) {
    for (const auto& c : candidates)
      if (c.compare(0, lower.size(), lower) == 0 || (c.size() >= 3 && lower.compare(0, c.size(), c) == 0))
        return c;
  }
  return "";
}

std::string recipe_format_number(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";
  char buf[64];
  for (int precision = 1; precision <= 17; precision++) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (std::strtod(buf, nullptr) == value) break;
  }
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// A field's value as one line of text: numbers as recipe_format_number writes them (exact), lists in
// brackets, paths absolute and normalised so that two spellings of one file compare equal.
static std::string field_text(const RecipeField& f) {
  auto list = [](const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); i++) out += (i ? ", " : "") + items[i];
    return out + "]";
  };
  switch (f.kind) {
    case FieldKind::path_in:
    case FieldKind::path_out: {
      const std::string& p = f.as<std::string>();
      return p.empty() ? p : fs::absolute(p).lexically_normal().string();
    }
    case FieldKind::text:
    case FieldKind::choice: return f.as<std::string>();
    case FieldKind::integer: return std::to_string(f.as<int>());
    case FieldKind::number: return recipe_format_number(f.as<double>());
    case FieldKind::boolean: return f.as<bool>() ? "true" : "false";
    case FieldKind::text_list: return list(f.as<std::vector<std::string>>());
    case FieldKind::int_list: {
      std::vector<std::string> items;
      for (int v : f.as<std::vector<int>>()) items.push_back(std::to_string(v));
      return list(items);
    }
  }
  return "";
}

std::vector<RecipeDifference> recipe_differences(const Recipe& a, const Recipe& b) {
  Recipe x = a, y = b;
  std::vector<RecipeField> fx = recipe_fields(x), fy = recipe_fields(y);
  std::vector<RecipeDifference> out;
  for (size_t i = 0; i < fx.size(); i++) {
    std::string ta = field_text(fx[i]), tb = field_text(fy[i]);
    if (ta != tb) out.push_back({fx[i].name(), fx[i].kind, std::move(ta), std::move(tb)});
  }
  return out;
}

bool operator==(const Recipe& a, const Recipe& b) { return recipe_differences(a, b).empty(); }

std::string recipe_data_format(const std::string& format, const std::string& data_path) {
  if (format != "auto") return format;
  std::string ext = fs::path(data_path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".txt") return "e2e";
  if (ext == ".jsonl" || ext == ".json") return "jsonl";
  if (ext == ".tsv") return "glue";
  if (ext == ".h5" || ext == ".hdf5") return "h5";  // already tokenized (lora's dataset file)
  return "";
}

// Common other spellings of choice values, so "gpu" suggests "cuda" rather than the nearby "cpu".
static std::string choice_alias(const std::string& value) {
  static const std::map<std::string, std::string> aliases = {
      {"gpu", "cuda"},           {"float32", "fp32"},  {"float", "fp32"},   {"bfloat16", "bf16"},
      {"float16", "fp16"},       {"half", "fp16"},     {"cos", "cosine"},   {"const", "constant"},
      {"full_finetune", "full"}, {"finetune", "full"}, {"adapter", "lora"}, {"progress", "bar"},
      {"off", "none"},           {"false", "none"},    {"text", "jsonl"},   {"json", "jsonl"}};
  auto it = aliases.find(value);
  return it == aliases.end() ? "" : it->second;
}

namespace {

struct Checker {
  const Recipe& recipe;
  std::vector<std::string> problems;

  std::string where(const std::string& key) const {
    auto it = recipe.origin.find(key.substr(0, key.find('[')));  // lora.targets[2] -> lora.targets
    if (it != recipe.origin.end()) return it->second;
    return recipe.source.empty() ? "recipe" : recipe.source;
  }
  void fail(const std::string& key, const std::string& problem) {
    problems.push_back(where(key) + ": " + key + ": " + problem);
  }
  void at_least(const std::string& key, int value, int min) {
    if (value < min) fail(key, "must be >= " + std::to_string(min) + ", found " + std::to_string(value));
  }
  // lo <= value (or lo < value), value < hi (or value <= hi); hi = INFINITY for no upper bound.
  void range(const std::string& key, double value, double lo, bool lo_open, double hi, bool hi_open) {
    bool ok =
        std::isfinite(value) && (lo_open ? value > lo : value >= lo) && (hi_open ? value < hi : value <= hi);
    if (ok) return;
    std::string want = std::isinf(hi)
                           ? std::string(lo_open ? "> " : ">= ") + recipe_format_number(lo)
                           : std::string("in ") + (lo_open ? "(" : "[") + recipe_format_number(lo) + ", " +
                                 recipe_format_number(hi) + (hi_open ? ")" : "]");
    fail(key, "must be " + want + ", found " + recipe_format_number(value));
  }
};

}  // namespace

// The offset of the first byte that breaks UTF-8 in s (overlong forms and surrogates included), or -1.
static int64_t utf8_invalid_at(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    const size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return int64_t(i);
    uint32_t cp = n == 1 ? b : n == 2 ? (b & 0x1f) : n == 3 ? (b & 0x0f) : (b & 0x07);
    for (size_t k = 1; k < n; ++k) {
      const unsigned char c = static_cast<unsigned char>(s[i + k]);
      if ((c >> 6) != 2) return int64_t(i);
      cp = (cp << 6) | (c & 0x3f);
    }
    const uint32_t min = n == 2 ? 0x80 : n == 3 ? 0x800 : n == 4 ? 0x10000 : 0;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return int64_t(i);
    i += n;
  }
  return -1;
}

void recipe_validate(const Recipe& recipe) {
  Checker c{recipe, {}};
  const Recipe& r = recipe;
  Recipe copy = recipe;
  for (const RecipeField& f : recipe_fields(copy)) {
    // Paths go into recipe.yaml and adapter_config.json, which are UTF-8: another encoding would train
    // every step and then fail to write the adapter, or store a path the resume cannot find.
    if (f.kind == FieldKind::path_in || f.kind == FieldKind::path_out) {
      const std::string& p = f.as<std::string>();
      if (const int64_t at = utf8_invalid_at(p); at >= 0) {
        char byte[8];
        std::snprintf(byte, sizeof byte, "0x%02x", unsigned(static_cast<unsigned char>(p[size_t(at)])));
        c.fail(f.name(), "the path is not valid UTF-8 (byte " + std::string(byte) + " at offset " + std::to_string(at) +
                             "); lora stores paths in UTF-8 files (recipe.yaml, adapter_config.json): rename the "
                             "file or directory, or link it under a UTF-8 name");
      }
    }
    if (f.kind != FieldKind::choice) continue;
    const std::string& v = f.as<std::string>();
    if (std::find(f.choices.begin(), f.choices.end(), v) != f.choices.end()) continue;
    std::string guess = choice_alias(v);
    if (guess.empty() || std::find(f.choices.begin(), f.choices.end(), guess) == f.choices.end())
      guess = recipe_closest_name(v, f.choices);
    c.fail(f.name(), "expected one of " + join(f.choices, ", ") + ", found '" + v + "'" +
                         (guess.empty() ? "" : "; did you mean '" + guess + "'?"));
  }

  if (r.model.path.empty())
    c.fail("model.path", "is required but not set (the HF checkpoint directory to fine-tune)");
  if (r.data.train.empty())
    c.fail("data.train", "is required but not set (the training examples, .txt E2E lines or .jsonl)");

  c.at_least("lora.r", r.lora.r, 1);
  c.range("lora.alpha", r.lora.alpha, 0, true, INFINITY, false);
  c.range("lora.dropout", r.lora.dropout, 0, false, 1, true);
  c.range("model.hidden_dropout", r.model.hidden_dropout, 0, false, 1, true);
  c.range("model.attention_dropout", r.model.attention_dropout, 0, false, 1, true);
  if (r.lora.mode == "lora" && r.lora.targets.empty())
    c.fail("lora.targets", "is empty: name at least one layer to adapt, e.g. [q, v]");
  std::set<std::string> seen_targets;
  const auto& names = recipe_lora_target_names();
  for (size_t i = 0; i < r.lora.targets.size(); i++) {
    const std::string& t = r.lora.targets[i];
    std::string key = "lora.targets[" + std::to_string(i) + "]";
    if (std::find(names.begin(), names.end(), t) == names.end()) {
      std::string guess = recipe_closest_name(t, names);
      c.fail(key, "unknown target '" + t + "'" + (guess.empty() ? "" : "; did you mean '" + guess + "'?") +
                      " (roles: q k v o up down gate; HF names: " +
                      join({names.begin() + 7, names.end()}, " ") + ")");
    } else if (!seen_targets.insert(t).second) {
      c.fail(key, "'" + t + "' is listed twice");
    }
  }
  std::set<int> seen_layers;
  for (size_t i = 0; i < r.lora.layers.size(); i++) {
    std::string key = "lora.layers[" + std::to_string(i) + "]";
    if (r.lora.layers[i] < 0)
      c.fail(key, "must be >= 0 (blocks count from 0), found " + std::to_string(r.lora.layers[i]));
    else if (!seen_layers.insert(r.lora.layers[i]).second)
      c.fail(key, "block " + std::to_string(r.lora.layers[i]) + " is listed twice");
  }
  c.at_least("lora.init_seed", r.lora.init_seed, 0);
  if (!r.lora.init_from.empty() && r.lora.mode == "full")
    c.fail("lora.init_from", "starts LoRA adapters from a trained adapter, but lora.mode is full (no adapters)");
  auto dir_key = [](const std::string& p) {  // "runs/x/" and "runs/./x" name the same directory as "runs/x"
    fs::path n = fs::path(p).lexically_normal();
    return n.has_filename() ? n : n.parent_path();
  };
  if (!r.lora.init_from.empty() && dir_key(r.lora.init_from) == dir_key(r.output.dir))
    c.fail("lora.init_from", "is this run's own output.dir '" + r.output.dir +
                                 "'; to continue a run use `lora train RECIPE --resume DIR`");

  for (const auto& [key, path] :
       {std::pair<std::string, std::string>{"data.train", r.data.train}, {"data.eval", r.data.eval}}) {
    if (!path.empty() && r.data.format == "auto" && recipe_data_format("auto", path).empty())
      c.fail(key, "cannot tell the format of '" + path +
                      "' from its extension (.txt = e2e, .jsonl = jsonl or glue, .tsv = glue); set data.format");
  }
  c.at_least("data.max_length", r.data.max_length, 2);
  c.at_least("model.num_labels", r.model.num_labels, 0);
  if (r.data.text_fields.size() > 2)
    c.fail("data.text_fields", "lists " + std::to_string(r.data.text_fields.size()) +
                                   " fields; a classification record has one text or a pair");
  if (r.data.cache_dir.empty()) c.fail("data.cache_dir", "must not be empty (default .lora-cache)");

  c.range("train.lr", r.train.lr, 0, true, INFINITY, false);
  c.range("train.beta1", r.train.beta1, 0, false, 1, true);
  c.range("train.beta2", r.train.beta2, 0, false, 1, true);
  c.range("train.eps", r.train.eps, 0, true, INFINITY, false);
  c.range("train.weight_decay", r.train.weight_decay, 0, false, INFINITY, false);
  c.at_least("train.warmup_steps", r.train.warmup_steps, 0);
  c.at_least("train.nonfinite_skips", r.train.nonfinite_skips, 1);
  c.range("train.warmup_ratio", r.train.warmup_ratio, 0, false, 1, true);
  if (r.train.warmup_steps > 0 && r.train.warmup_ratio > 0)
    c.fail("train.warmup_ratio", "set together with train.warmup_steps: set only one of them");
  c.at_least("train.batch_size", r.train.batch_size, 1);
  c.at_least("train.grad_accum", r.train.grad_accum, 1);
  c.at_least("train.max_steps", r.train.max_steps, 0);
  if (r.train.max_steps == 0)
    c.at_least("train.epochs", r.train.epochs, 1);
  else
    c.at_least("train.epochs", r.train.epochs, 0);
  c.range("train.clip_grad_norm", r.train.clip_grad_norm, 0, false, INFINITY, false);
  c.range("train.label_smoothing", r.train.label_smoothing, 0, false, 1, true);
  if (r.train.eval_every < -1)
    c.fail("train.eval_every", "must be a number of steps >= 1, 0 (only at the end) or -1 (every tenth of the run, the "
                               "default), found " + std::to_string(r.train.eval_every));
  c.at_least("train.eval_batches", r.train.eval_batches, 0);
  if (r.train.eval_every > 0 && r.data.eval.empty())
    c.fail("train.eval_every", "is " + std::to_string(r.train.eval_every) +
                                   " but data.eval is not set: there is nothing to evaluate");

  c.at_least("eval.batch_size", r.eval.batch_size, 1);
  c.at_least("eval.max_new_tokens", r.eval.max_new_tokens, 1);
  c.at_least("eval.beam_size", r.eval.beam_size, 1);
  c.range("eval.length_penalty", r.eval.length_penalty, -INFINITY, false, INFINITY, false);
  c.at_least("eval.no_repeat_ngram_size", r.eval.no_repeat_ngram_size, 0);
  c.at_least("eval.num_samples", r.eval.num_samples, 0);

  if (r.output.dir.empty()) c.fail("output.dir", "must not be empty (default runs/lora)");
  c.at_least("output.save_every", r.output.save_every, 0);
  c.at_least("output.keep_last", r.output.keep_last, 0);
  c.at_least("log.every", r.log.every, 1);

  if (c.problems.empty()) return;
  std::string name = recipe.source.empty() ? "the recipe" : "recipe " + recipe.source;
  if (c.problems.size() == 1)
    fail_usage(c.problems[0], "fix the value in " + name + " or with --set KEY=VALUE");
  std::string msg = std::to_string(c.problems.size()) + " problems in " + name + ":";
  for (const auto& p : c.problems) msg += "\n  " + p;
  fail_usage(msg, "fix every line above; `lora train RECIPE --print-config` shows the resolved values");
}

// A string is written plain only when no YAML reader could take it for anything but that string.
static bool plain_is_safe(const std::string& s) {
  if (s.empty()) return false;
  for (char ch : s)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || std::string("_./-+").find(ch) != std::string::npos))
      return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  if (end && *end == '\0') return false;  // reads as a number
  std::string lower = s;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  static const std::set<std::string> reserved = {"true", "false", "yes",  "no",   "on",   "off",
                                                 "y",    "n",     "null", ".inf", ".nan", "-.inf"};
  return reserved.count(lower) == 0;
}

// An input path as it must be written in a file at dest_dir for recipe_parse to resolve it back.
static std::string path_for_dest(const std::string& path, const fs::path& dest_dir) {
  if (path.empty() || dest_dir.empty() || fs::path(path).is_absolute()) return path;
  fs::path abs = fs::absolute(path).lexically_normal();
  fs::path rel = abs.lexically_relative(fs::absolute(dest_dir).lexically_normal());
  return rel.empty() ? abs.string() : rel.string();
}

// An output path as it must be written in a file at dest_dir: absolute, since output paths are relative to
// the working directory, and a run's stored recipe must resume it from any directory.
static std::string output_path_for_dest(const std::string& path, const fs::path& dest_dir) {
  if (path.empty() || dest_dir.empty()) return path;
  return fs::absolute(path).lexically_normal().string();
}

std::string recipe_to_yaml(const Recipe& recipe, const std::string& dest_path) {
  Recipe copy = recipe;
  fs::path dest_dir = fs::path(dest_path).parent_path();
  if (!dest_path.empty() && dest_dir.empty()) dest_dir = ".";
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  auto write_string = [&](const std::string& s) {
    if (plain_is_safe(s))
      out << s;
    else
      out << YAML::DoubleQuoted << s;
  };
  for (const RecipeField& f : recipe_fields(copy)) {
    if (section != f.section) {
      if (!section.empty()) out << YAML::EndMap;
      section = f.section;
      out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << f.key << YAML::Value;
    switch (f.kind) {
      case FieldKind::path_in: write_string(path_for_dest(f.as<std::string>(), dest_dir)); break;
      case FieldKind::path_out: write_string(output_path_for_dest(f.as<std::string>(), dest_dir)); break;
      case FieldKind::text:
      case FieldKind::choice: write_string(f.as<std::string>()); break;
      case FieldKind::integer: out << f.as<int>(); break;
      case FieldKind::number: out << recipe_format_number(f.as<double>()); break;
      case FieldKind::boolean: out << (f.as<bool>() ? "true" : "false"); break;
      case FieldKind::text_list:
        out << YAML::Flow << YAML::BeginSeq;
        for (const auto& s : f.as<std::vector<std::string>>()) write_string(s);
        out << YAML::EndSeq;
        break;
      case FieldKind::int_list:
        out << YAML::Flow << YAML::BeginSeq;
        for (int v : f.as<std::vector<int>>()) out << v;
        out << YAML::EndSeq;
        break;
    }
  }
  out << YAML::EndMap << YAML::EndMap;
  std::string header = "# lora recipe, fully resolved: every key, defaults included";
  if (!recipe.source.empty()) header += " (from " + recipe.source + ")";
  std::string body, line;  // a blank line before each section, for the eye
  std::istringstream lines(out.c_str());
  while (std::getline(lines, line)) {
    if (!body.empty() && !line.empty() && line[0] != ' ') body += "\n";
    body += line + "\n";
  }
  return header + "\n" + body;
}

}  // namespace lora
