// Reading recipes: the YAML file, then --set overrides, into a Recipe (see core/session/recipe.h for the
// rules).
//
// Every problem found is collected as an Issue ("<file>:<line>: <key>: expected ..., found ...", plus a
// hint) and all of them are thrown together at the end as one lora::Error (EXIT_CODE_USAGE). Only an
// unreadable file or a YAML syntax error stops at once, since nothing after it can be trusted.
// This file walks the structure: sections, keys (unknown ones get a "did you mean"), duplicates and
// --set KEY=VALUE; each value is read by assign (core/session/recipe_values.cpp: scalar rules, paths).
#include "core/session/recipe.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/base/error.h"
#include "core/session/recipe_internal.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

using recipe_internal::Issue;
using recipe_internal::assign;
using recipe_internal::describe;

const char* GENERIC_HINT = "`lora train RECIPE --print-config` prints every key with its value";

Error issues_error(const std::string& name, const std::vector<Issue>& issues) {
  if (issues.size() == 1)
    return Error(EXIT_CODE_USAGE, issues[0].text, issues[0].hint.empty() ? GENERIC_HINT : issues[0].hint);
  std::string msg = std::to_string(issues.size()) + " problems in " + name + ":";
  for (const Issue& issue : issues)
    msg += "\n  " + issue.text + (issue.hint.empty() ? "" : " (" + issue.hint + ")");
  return Error(EXIT_CODE_USAGE, msg, std::string("fix every line above; ") + GENERIC_HINT);
}

// Other tools' names for our keys (PEFT, transformers, torchtune), for "did you mean".
const std::map<std::string, std::string>& key_aliases() {
  static const std::map<std::string, std::string> aliases = {
      {"learning_rate", "lr"}, {"lora_alpha", "alpha"}, {"lora_dropout", "dropout"}, {"lora_r", "r"},
      {"rank", "r"}, {"target_modules", "targets"}, {"use_rslora", "rslora"},
      {"layers_to_transform", "layers"}, {"num_epochs", "epochs"}, {"num_train_epochs", "epochs"},
      {"gradient_accumulation_steps", "grad_accum"}, {"per_device_train_batch_size", "batch_size"},
      {"max_grad_norm", "clip_grad_norm"}, {"grad_clip", "clip_grad_norm"}, {"lr_scheduler_type", "schedule"},
      {"scheduler", "schedule"}, {"lr_schedule", "schedule"}, {"warmup", "warmup_steps"},
      {"max_seq_length", "max_length"}, {"max_seq_len", "max_length"}, {"block_size", "max_length"},
      {"output_dir", "dir"}, {"save_steps", "save_every"}, {"save_total_limit", "keep_last"},
      {"logging_steps", "every"}, {"num_beams", "beam_size"}, {"model_name_or_path", "path"},
      {"torch_dtype", "dtype"}, {"mixed_precision", "precision"}, {"gradient_checkpointing", "recompute"},
      {"activation_checkpointing", "recompute"}, {"eval_steps", "eval_every"}, {"train_file", "train"},
      {"validation_file", "eval"}, {"eval_file", "eval"}, {"adam_beta1", "beta1"}, {"adam_beta2", "beta2"},
      {"adam_epsilon", "eps"}, {"lora_path", "init_from"}};
  return aliases;
}

struct KeyIndex {
  std::vector<RecipeField> fields;
  std::map<std::string, size_t> by_name;  // "section.key" -> index
  std::vector<std::string> names;

  explicit KeyIndex(Recipe& r) : fields(recipe_fields(r)) {
    for (size_t i = 0; i < fields.size(); i++)
      by_name[fields[i].name()] = i, names.push_back(fields[i].name());
  }
  std::vector<std::string> keys_of(const std::string& section) const {
    std::vector<std::string> keys;
    for (const auto& f : fields)
      if (section == f.section) keys.push_back(f.key);
    return keys;
  }
  std::string section_of(const std::string& key, const std::string& prefer) const {
    if (by_name.count(prefer + "." + key)) return prefer;
    for (const auto& f : fields)
      if (key == f.key) return f.section;
    return "";
  }
  // The "did you mean" for an unknown `key` inside `section`: "'lr'", "'train.lr'" or "".
  std::string suggest(const std::string& section, const std::string& key) const {
    auto alias = key_aliases().find(key);
    if (alias != key_aliases().end()) {
      std::string s = section_of(alias->second, section);
      if (!s.empty()) return s == section ? "'" + alias->second + "'" : "'" + s + "." + alias->second + "'";
    }
    std::string other = section_of(key, "");
    if (!other.empty()) return "'" + other + "." + key + "' (it belongs in section '" + other + "')";
    std::string near = recipe_closest_name(key, keys_of(section));
    if (!near.empty()) return "'" + near + "'";
    std::string any = recipe_closest_name(section + "." + key, names);
    return any.empty() ? "" : "'" + any + "'";
  }
};

struct Parser {
  std::string source;  // for messages
  fs::path base;       // the recipe file's directory
  Recipe& recipe;
  KeyIndex index;
  std::vector<Issue> issues;

  Parser(const std::string& src, Recipe& r)
      : source(src), base(fs::path(src).parent_path()), recipe(r), index(r) {}

  std::string at(const YAML::Node& n) const { return source + ":" + std::to_string(n.Mark().line + 1); }

  // The key of a mapping entry as text; reports and returns "" for a non-scalar key.
  std::string key_text(const YAML::Node& key) {
    if (key.IsScalar()) return key.Scalar();
    issues.push_back({at(key) + ": a key must be a plain name, found " + describe(key), ""});
    return "";
  }

  void parse_root(const YAML::Node& root) {
    if (!root.IsMap()) {
      issues.push_back({at(root) + ": a recipe is a mapping of sections (model:, lora:, data:, ...), found " +
                            describe(root),
                        "see configs/ for examples"});
      return;
    }
    std::map<std::string, int> seen;
    for (const auto& entry : root) {
      std::string name = key_text(entry.first);
      if (name.empty()) continue;
      int line = entry.first.Mark().line + 1;
      if (!seen.emplace(name, line).second) {
        issues.push_back({at(entry.first) + ": section '" + name + "' appears twice (first at line " +
                              std::to_string(seen[name]) + ")",
                          "merge the two into one"});
        continue;
      }
      const auto& sections = recipe_section_names();
      if (std::find(sections.begin(), sections.end(), name) == sections.end()) {
        unknown_section(entry.first, name);
        continue;
      }
      if (entry.second.IsNull()) continue;  // `eval:` with nothing under it changes nothing
      if (!entry.second.IsMap()) {
        issues.push_back(
            {at(entry.first) + ": " + name + ": expected a mapping of keys, found " + describe(entry.second),
             "indent the section's keys under '" + name + ":'"});
        continue;
      }
      parse_section(name, entry.second);
    }
  }

  void unknown_section(const YAML::Node& key, const std::string& name) {
    std::string text = at(key) + ": unknown section '" + name + "'";
    std::string hint = "sections are model, lora, data, train, eval, output, log";
    size_t dot = name.find('.');
    std::string near = recipe_closest_name(name, recipe_section_names());
    if (dot != std::string::npos && index.by_name.count(name)) {
      text += "; did you mean '" + name + "' nested under its section?";
      hint =
          "write '" + name.substr(0, dot) + ":' and, indented below it, '" + name.substr(dot + 1) + ": ...'";
    } else if (!near.empty()) {
      text += "; did you mean '" + near + "'?";
    } else {
      std::string suggestion = index.suggest("", name);
      if (!suggestion.empty()) {
        text += "; did you mean " + suggestion + "?";
        hint = "keys go inside their section, e.g. 'train:' then, indented, 'lr: 2e-4'";
      }
    }
    issues.push_back({text, hint});
  }

  void parse_section(const std::string& section, const YAML::Node& map) {
    std::map<std::string, int> seen;
    for (const auto& entry : map) {
      std::string key = key_text(entry.first);
      if (key.empty()) continue;
      int line = entry.first.Mark().line + 1;
      std::string name = section + "." + key;
      if (!seen.emplace(key, line).second) {
        issues.push_back({at(entry.first) + ": " + name + ": appears twice (first at line " +
                              std::to_string(seen[key]) + ")",
                          "keep one of them"});
        continue;
      }
      auto it = index.by_name.find(name);
      if (it == index.by_name.end()) {
        std::string suggestion = index.suggest(section, key);
        std::string hint;  // the list of keys only where there is no suggestion
        if (suggestion.empty()) {
          hint = "keys of " + section + ":";
          for (const auto& k : index.keys_of(section)) hint += " " + k;
        }
        issues.push_back({at(entry.first) + ": unknown key '" + key + "' in section '" + section + "'" +
                              (suggestion.empty() ? "" : "; did you mean " + suggestion + "?"),
                          hint});
        continue;
      }
      if (assign(index.fields[it->second], entry.second, at(entry.first), &base, issues))
        recipe.origin[name] = at(entry.first);
    }
  }

  void apply_override(const std::string& text) {
    std::string where = "--set '" + text + "'";
    size_t eq = text.find('=');
    std::string key = eq == std::string::npos ? "" : trim(text.substr(0, eq));
    if (key.empty()) {
      issues.push_back({where + ": expected KEY=VALUE", "e.g. --set train.lr=1e-4"});
      return;
    }
    std::string value = text.substr(eq + 1);
    auto it = index.by_name.find(key);
    if (it == index.by_name.end()) {
      const auto& sections = recipe_section_names();
      size_t dot = key.find('.');
      std::string section = dot == std::string::npos ? "" : key.substr(0, dot);
      std::string field = dot == std::string::npos ? key : key.substr(dot + 1);
      std::string suggestion;
      if (std::find(sections.begin(), sections.end(), key) != sections.end()) {
        issues.push_back(
            {where + ": '" + key + "' is a section; name a key in it, e.g. " + index.keys_of(key)[0], ""});
        return;
      }
      if (std::find(sections.begin(), sections.end(), section) != sections.end()) {
        suggestion = index.suggest(section, field);
        if (suggestion.size() > 2 && suggestion.find('.') == std::string::npos)
          suggestion = "'" + section + "." + suggestion.substr(1);
      } else {
        std::string home = index.section_of(field, "");
        suggestion = !home.empty() ? "'" + home + "." + field + "'" : index.suggest("", field);
        if (suggestion.empty()) {
          std::string near = recipe_closest_name(key, index.names);
          if (!near.empty()) suggestion = "'" + near + "'";
        }
      }
      issues.push_back(
          {where + ": unknown key '" + key + "'" +
               (suggestion.empty() ? "" : "; did you mean " + suggestion + "?"),
           "keys are section.key, e.g. train.lr; `lora train RECIPE --print-config` lists them"});
      return;
    }
    const RecipeField& f = index.fields[it->second];
    YAML::Node node;
    std::string v = trim(value);
    bool is_string = f.kind == FieldKind::text || f.kind == FieldKind::path_in ||
                     f.kind == FieldKind::path_out || f.kind == FieldKind::choice;
    try {
      if (is_string && !(v.size() >= 2 && (v[0] == '"' || v[0] == '\'')))
        node = YAML::Node(v);  // verbatim
      else if ((f.kind == FieldKind::text_list || f.kind == FieldKind::int_list) &&
               (v.empty() || v[0] != '['))
        node = YAML::Load("[" + v + "]");
      else
        node = YAML::Load(v);
    } catch (const YAML::Exception& e) {
      issues.push_back({where + ": cannot read the value '" + value + "' as YAML: " + e.msg,
                        "quote it, or for a list write [a, b]"});
      return;
    }
    if (assign(f, node, where, nullptr, issues)) recipe.origin[key] = where;
  }
};

// How many YAML documents the text holds, and the first as a node. yaml-cpp 0.7's LoadAll never returns
// on some inputs (a ',' where a document should start: every call yields an empty document without
// consuming it, and memory grows without bound), so documents are counted here through the parser's
// events, and a document that starts where the previous one started is a syntax error at that place.
size_t yaml_documents(const std::string& text, YAML::Node* first) {
  struct Starts : YAML::EventHandler {
    std::vector<YAML::Mark> marks;
    void OnDocumentStart(const YAML::Mark& m) override { marks.push_back(m); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  } starts;
  std::istringstream in(text);
  YAML::Parser parser(in);
  while (parser.HandleNextDocument(starts)) {
    const auto& m = starts.marks;
    if (m.size() >= 2 && m[m.size() - 1].pos == m[m.size() - 2].pos) {
      const size_t at = size_t(m.back().pos);
      const std::string what = at < text.size() ? std::string("'") + text[at] + "'" : "the end of the file";
      throw YAML::ParserException(m.back(), "unexpected " + what + " where a value or key should start");
    }
  }
  *first = YAML::Load(text);
  return starts.marks.size();
}

}  // namespace

Recipe recipe_parse(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  return recipe_parse(yaml_text, source_name, overrides, nullptr);
}

Recipe recipe_parse(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides, std::vector<Error>* key_problems) {
  Recipe recipe;
  recipe.source = source_name;
  Parser parser(source_name, recipe);
  YAML::Node doc;
  size_t docs = 0;
  try {
    docs = yaml_documents(yaml_text, &doc);
  } catch (const YAML::Exception& e) {
    fail_usage(source_name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                   ": YAML syntax error: " + e.msg,
               "check the indentation and brackets on or just before that line; quote values that contain ': "
               "' or ' #'");
  }
  if (docs == 0 || (docs == 1 && doc.IsNull()))
    fail_usage("recipe " + source_name + " is empty",
               "a recipe needs at least model.path and data.train; see configs/ for examples");
  if (docs > 1)
    fail_usage(source_name + ": holds " + std::to_string(docs) +
                   " YAML documents (separated by '---'); a recipe is one",
               "remove the '---' lines or split the file");
  parser.parse_root(doc);
  for (const auto& o : overrides) parser.apply_override(o);
  if (!parser.issues.empty()) {
    Error e = issues_error("recipe " + source_name, parser.issues);
    if (!key_problems) throw e;
    key_problems->push_back(e);
  }
  return recipe;
}

std::string recipe_key_for(const std::string& word, bool closest) {
  std::string w = word;
  std::replace(w.begin(), w.end(), '-', '_');
  Recipe r;
  KeyIndex index(r);
  if (index.by_name.count(w)) return w;
  auto in_train_first = [&](const std::string& key) {
    std::string s = index.section_of(key, "train");
    return s.empty() ? std::string() : s + "." + key;
  };
  if (std::string k = in_train_first(w); !k.empty()) return k;
  auto alias = key_aliases().find(w);
  if (alias != key_aliases().end()) return in_train_first(alias->second);
  if (!closest) return "";
  std::string near = recipe_closest_name(w, index.names);
  if (near.empty()) {
    std::vector<std::string> keys;
    for (const auto& f : index.fields) keys.push_back(f.key);
    std::string key = recipe_closest_name(w, keys);
    if (!key.empty()) near = in_train_first(key);
  }
  return near;
}

Recipe recipe_load(const std::string& path, const std::vector<std::string>& overrides) {
  return recipe_load(path, overrides, nullptr);
}

Recipe recipe_load(const std::string& path, const std::vector<std::string>& overrides,
                   std::vector<Error>* key_problems) {
  if (path.empty()) fail_usage("no recipe file given", "usage: lora train RECIPE.yaml");
  std::error_code ec;
  fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status))
    fail_usage("recipe " + path + " does not exist", "check the path; configs/ holds example recipes");
  if (fs::is_directory(status))
    fail_usage("recipe " + path + " is a directory, not a YAML file", "name the .yaml file inside it");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad()) fail_usage("cannot read recipe " + path, "check the file's permissions");
  return recipe_parse(text.str(), path, overrides, key_problems);
}

}  // namespace lora
