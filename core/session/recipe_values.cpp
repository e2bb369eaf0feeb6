// Reading one recipe value into its field (core/session/recipe.cpp walks the file and --set overrides and calls
// assign for each key): type checks against the field's kind, and path resolution (see core/session/recipe.h).
// Problems are appended as Issues, never thrown, so that every one of them is reported together.
// Scalars are read from their text, not through yaml-cpp's conversions, so that the rules are ours:
// integers are digits only, numbers are decimal or scientific ("1e-4", ".5", "3"), booleans are exactly
// true or false, and a quoted "2e-4" is a string, not a number.
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/session/recipe.h"
#include "core/session/recipe_internal.h"

namespace lora {
namespace recipe_internal {

namespace fs = std::filesystem;

namespace {

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

}  // namespace

// "found ..." for a node: its text, quoted unless a number, or its shape.
std::string describe(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "nothing (an empty value)";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping (key: value pairs)";
  if (!is_plain(n)) return "the quoted string \"" + printable(n.Scalar()) + "\"";
  if (looks_numeric(n.Scalar())) return printable(n.Scalar());
  return "'" + printable(n.Scalar()) + "'";
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

}  // namespace recipe_internal
}  // namespace lora
