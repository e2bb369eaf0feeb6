// Reading recipes: the YAML file, then --set overrides, into a Recipe (see core/recipe.h for the rules).
//
// Every problem found is collected as an Issue ("<file>:<line>: <key>: expected ..., found ...", plus a
// hint) and all of them are thrown together at the end as one lora::Error (EXIT_CODE_USAGE). Only an
// unreadable file or a YAML syntax error stops at once, since nothing after it can be trusted.
// Scalars are read from their text, not through yaml-cpp's conversions, so that the rules are ours:
// integers are digits only, numbers are decimal or scientific ("1e-4", ".5", "3"), booleans are exactly
// true or false, and a quoted "2e-4" is a string, not a number.
#include "core/recipe.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

struct Issue {
  std::string text;  // "<where>: <key>: <problem>"
  std::string hint;  // may be empty
};

const char* GENERIC_HINT = "`lora train RECIPE --print-config` prints every key with its value";

[[noreturn]] void throw_issues(const std::string& name, const std::vector<Issue>& issues) {
  if (issues.size() == 1) fail_usage(issues[0].text, issues[0].hint.empty() ? GENERIC_HINT : issues[0].hint);
  std::string msg = std::to_string(issues.size()) + " problems in " + name + ":";
  for (const Issue& issue : issues)
    msg += "\n  " + issue.text + (issue.hint.empty() ? "" : " (" + issue.hint + ")");
  fail_usage(msg, std::string("fix every line above; ") + GENERIC_HINT);
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

bool is_plain(const YAML::Node& n) { return n.IsScalar() && n.Tag() == "?"; }

size_t skip_digits(const std::string& s, size_t i) {
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) i++;
  return i;
}

size_t skip_sign(const std::string& s, size_t i) {
  return i < s.size() && (s[i] == '+' || s[i] == '-') ? i + 1 : i;
}

// [-+]?[0-9]+
bool is_integer_text(const std::string& s) {
  size_t start = skip_sign(s, 0), end = skip_digits(s, start);
  return end > start && end == s.size();
}

// [-+]?([0-9]+ ("." [0-9]*)? | "." [0-9]+) ([eE][-+]?[0-9]+)?: "3", "1.", ".5", "2e-4", "1E-5"
bool looks_numeric(const std::string& s) {
  size_t i = skip_sign(s, 0), j = skip_digits(s, i);
  size_t digits = j - i;
  if (j < s.size() && s[j] == '.') {
    size_t k = skip_digits(s, j + 1);
    digits += k - j - 1;
    j = k;
  }
  if (digits == 0) return false;
  if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
    size_t k = skip_sign(s, j + 1), end = skip_digits(s, k);
    if (end == k) return false;
    j = end;
  }
  return j == s.size();
}

bool has_control_char(const std::string& s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

// A value's text fit for a one-line message: control characters escaped, at most 60 characters.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= 60) return out + "...";
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

// "found ..." for a node: its text, quoted unless a number, or its shape.
std::string describe(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "nothing (an empty value)";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping (key: value pairs)";
  if (!is_plain(n)) return "the quoted string \"" + printable(n.Scalar()) + "\"";
  if (looks_numeric(n.Scalar())) return printable(n.Scalar());
  return "'" + printable(n.Scalar()) + "'";
}

bool parse_int(const std::string& s, int& out) {
  if (!is_integer_text(s)) return false;
  errno = 0;
  long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE || v < INT_MIN || v > INT_MAX) return false;
  out = int(v);
  return true;
}

bool parse_number(const std::string& s, double& out) {
  if (!looks_numeric(s)) return false;
  double v = std::strtod(s.c_str(), nullptr);
  if (!std::isfinite(v)) return false;
  out = v;
  return true;
}

std::string expected(const RecipeField& f) {
  switch (f.kind) {
    case FieldKind::text:
    case FieldKind::path_in:
    case FieldKind::path_out: return "a string";
    case FieldKind::choice: {
      std::string s = "one of";
      for (size_t i = 0; i < f.choices.size(); i++) s += (i ? ", " : " ") + f.choices[i];
      return s;
    }
    case FieldKind::integer: return "an integer";
    case FieldKind::number: return "a number";
    case FieldKind::boolean: return "true or false";
    case FieldKind::text_list: return "a list of strings";
    case FieldKind::int_list: return "a list of integers";
  }
  return "";
}

// Reads one scalar into an int/double/bool; "" on success, else the problem and (via hint) a hint.
std::string read_scalar(FieldKind kind, const YAML::Node& n, void* value, std::string& hint) {
  bool plain = is_plain(n);
  const std::string text = n.IsScalar() ? n.Scalar() : "";
  if (kind == FieldKind::integer) {
    if (plain && parse_int(text, *static_cast<int*>(value))) return "";
    if (plain && is_integer_text(text))
      return "out of range (" + std::to_string(INT_MIN) + " to " + std::to_string(INT_MAX) + "), found " +
             printable(text);
    double d;
    if (plain && parse_number(text, d))
      hint = std::fabs(d) < 2e9 && d == std::floor(d)
                 ? "write it as digits only, e.g. " + std::to_string(int64_t(d))
                 : "this key takes a whole number";
    int quoted = 0;
    if (!plain && n.IsScalar() && parse_int(text, quoted)) hint = "remove the quotes";
    return "expected an integer, found " + describe(n);
  }
  if (kind == FieldKind::number) {
    if (plain && parse_number(text, *static_cast<double*>(value))) return "";
    double d;
    if (!plain && n.IsScalar() && parse_number(text, d))
      hint = "remove the quotes";
    else if (n.IsScalar())
      hint = "write a decimal or scientific number, e.g. 0.0002 or 2e-4";
    return "expected a number, found " + describe(n);
  }
  // boolean
  if (plain && (text == "true" || text == "false")) {
    *static_cast<bool*>(value) = text == "true";
    return "";
  }
  if (n.IsScalar()) hint = "booleans are written true or false";
  return "expected true or false, found " + describe(n);
}

// Expands "~/" and resolves `written` against `base` (empty = the current directory), lexically.
std::string resolve_path(const std::string& written, const fs::path& base) {
  if (written.empty()) return written;
  fs::path p = written;
  const char* home = std::getenv("HOME");
  if (home && (written == "~" || written.compare(0, 2, "~/") == 0))
    p = fs::path(home) / written.substr(std::min<size_t>(2, written.size()));
  if (p.is_relative()) p = base / p;
  p = p.lexically_normal();
  if (p.is_absolute()) {  // below the current directory: relative to it
    std::error_code ec;
    fs::path cwd = fs::current_path(ec);
    if (!ec) {
      fs::path rel = p.lexically_relative(cwd);
      if (!rel.empty() && *rel.begin() != "..") p = rel;
    }
  }
  std::string s = p.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s.empty() ? "." : s;
}

// Reads `n` into field `f`. `where` prefixes messages; `base` resolves input paths (null: the current
// directory, as for --set). Appends to `issues` and returns false on a problem.
bool assign(const RecipeField& f, const YAML::Node& n, const std::string& where, const fs::path* base,
            std::vector<Issue>& issues) {
  auto fail = [&](const std::string& key, const std::string& problem, const std::string& hint) {
    issues.push_back({where + ": " + key + ": " + problem, hint});
    return false;
  };
  switch (f.kind) {
    case FieldKind::text:
    case FieldKind::path_in:
    case FieldKind::path_out:
    case FieldKind::choice: {
      if (n.IsSequence() || n.IsMap())
        return fail(f.name(), "expected " + expected(f) + ", found " + describe(n),
                    "this key takes a single value");
      std::string s = n.IsNull() ? "" : n.Scalar();
      if (has_control_char(s))
        return fail(f.name(), "contains a control character: \"" + printable(s) + "\"",
                    "remove it; check the file's encoding");
      if (f.kind == FieldKind::path_in) s = resolve_path(s, base ? *base : fs::path());
      if (f.kind == FieldKind::path_out) s = resolve_path(s, fs::path());
      f.as<std::string>() = s;
      return true;
    }
    case FieldKind::integer:
    case FieldKind::number:
    case FieldKind::boolean: {
      std::string hint;
      if (n.IsSequence() || n.IsMap()) hint = "this key takes a single value";
      std::string problem = n.IsScalar() ? read_scalar(f.kind, n, f.value, hint)
                                         : "expected " + expected(f) + ", found " + describe(n);
      return problem.empty() ? true : fail(f.name(), problem, hint);
    }
    case FieldKind::text_list:
    case FieldKind::int_list: {
      if (n.IsNull()) {  // `layers:` with nothing: an empty list
        if (f.kind == FieldKind::text_list)
          f.as<std::vector<std::string>>().clear();
        else
          f.as<std::vector<int>>().clear();
        return true;
      }
      if (!n.IsSequence())
        return fail(f.name(), "expected " + expected(f) + ", found " + describe(n),
                    f.kind == FieldKind::text_list ? "write a list, e.g. [q, v]"
                                                   : "write a list, e.g. [0, 1, 2], or [] for all");
      std::vector<std::string> texts;
      std::vector<int> ints;
      bool ok = true;
      for (size_t i = 0; i < n.size(); i++) {
        std::string key = f.name() + "[" + std::to_string(i) + "]";
        const YAML::Node item = n[i];
        if (!item.IsScalar()) {
          ok = fail(key,
                    "expected " + std::string(f.kind == FieldKind::text_list ? "a string" : "an integer") +
                        ", found " + describe(item),
                    "");
          continue;
        }
        if (f.kind == FieldKind::text_list) {
          if (has_control_char(item.Scalar()))
            ok = fail(key, "contains a control character: \"" + printable(item.Scalar()) + "\"", "");
          texts.push_back(item.Scalar());
          continue;
        }
        std::string hint;
        int v = 0;
        std::string problem = read_scalar(FieldKind::integer, item, &v, hint);
        if (problem.empty())
          ints.push_back(v);
        else
          ok = fail(key, problem, hint);
      }
      if (!ok) return false;
      if (f.kind == FieldKind::text_list)
        f.as<std::vector<std::string>>() = texts;
      else
        f.as<std::vector<int>>() = ints;
      return true;
    }
  }
  return false;
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
      {"adam_epsilon", "eps"}};
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

}  // namespace

Recipe recipe_parse(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  Recipe recipe;
  recipe.source = source_name;
  Parser parser(source_name, recipe);
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml_text);
  } catch (const YAML::Exception& e) {
    fail_usage(source_name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                   ": YAML syntax error: " + e.msg,
               "check the indentation and brackets on or just before that line; quote values that contain ': "
               "' or ' #'");
  }
  if (docs.empty() || (docs.size() == 1 && docs[0].IsNull()))
    fail_usage("recipe " + source_name + " is empty",
               "a recipe needs at least model.path and data.train; see configs/ for examples");
  if (docs.size() > 1)
    fail_usage(source_name + ": holds " + std::to_string(docs.size()) +
                   " YAML documents (separated by '---'); a recipe is one",
               "remove the '---' lines or split the file");
  parser.parse_root(docs[0]);
  for (const auto& o : overrides) parser.apply_override(o);
  if (!parser.issues.empty()) throw_issues("recipe " + source_name, parser.issues);
  return recipe;
}

Recipe recipe_load(const std::string& path, const std::vector<std::string>& overrides) {
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
  return recipe_parse(text.str(), path, overrides);
}

}  // namespace lora
