// Command-line mistakes as lora's other errors read: "error: ..." and "  hint: ...", exit code 2. CLI11's
// parse errors (CLI::ExtrasError, CLI::RequiredError, ...) say what it could not place; here the arguments
// are read again to say what the user likely meant: a misspelt subcommand or option ("did you mean"), a
// recipe key given as an option (`--lr 1e-3`: `--set train.lr=1e-3`), an option of another subcommand.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "cli/commands.h"
#include "core/base/error.h"
#include "core/session/recipe.h"

namespace lora {

namespace {

std::vector<const CLI::App*> subcommands_of(const CLI::App& app) {
  return app.get_subcommands(std::function<bool(const CLI::App*)>{});
}

std::string subcommand_list(const CLI::App& app) {
  std::string s;
  for (const CLI::App* sub : subcommands_of(app)) s += (s.empty() ? "" : ", ") + sub->get_name();
  return s;
}

// "--name" for an option's long names (or "-n"), without dashes: "dry-run".
std::vector<std::string> option_names(const CLI::App& sub) {
  std::vector<std::string> names;
  for (const CLI::Option* o : sub.get_options()) {
    for (const auto& n : o->get_lnames()) names.push_back(n);
  }
  return names;
}

bool looks_like_number(const std::string& s) {
  if (s.size() < 2 || s[0] != '-') return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

bool is_option_token(const std::string& s) { return s.size() > 1 && s[0] == '-' && !looks_like_number(s); }

// The "did you mean" of an unknown option (token as typed, value the one given with it or after it, ""
// when none) of subcommand `sub`: the error's message and hint.
Error unknown_option(const CLI::App& app, const CLI::App& sub, const std::string& token, const std::string& value) {
  const std::string name = token.substr(0, token.find('='));
  const size_t start = name.find_first_not_of('-');
  const std::string bare = start == std::string::npos ? "" : name.substr(start);
  const std::string cmd = "`lora " + sub.get_name() + "`";
  const std::string help = "`lora " + sub.get_name() + " --help` lists its options";
  const bool has_set = sub.get_option_no_throw("--set") != nullptr;
  const std::string msg = "unknown option '" + name + "' for " + cmd;
  auto set_hint = [&](const std::string& key) {
    return Error(EXIT_CODE_USAGE, msg + "; did you mean `--set " + key + "=" + (value.empty() ? "VALUE" : value) + "`?",
                 "recipe keys are set with --set section.key=value (repeatable); " + help);
  };
  if (has_set) {
    if (std::string key = recipe_key_for(bare); !key.empty()) return set_hint(key);
  }
  if (std::string near = recipe_closest_name(bare, option_names(sub)); !near.empty())
    return Error(EXIT_CODE_USAGE, msg + "; did you mean '--" + near + "'?", help);
  for (const CLI::App* other : subcommands_of(app)) {
    if (other != &sub && other->get_option_no_throw(name))
      return Error(EXIT_CODE_USAGE, msg + "; '" + name + "' is an option of `lora " + other->get_name() + "`", help);
  }
  if (has_set) {
    if (std::string key = recipe_key_for(bare, /*closest=*/true); !key.empty()) return set_hint(key);
  }
  return Error(EXIT_CODE_USAGE, msg, help);
}

// What the arguments after subcommand `sub` hold that it does not take: an unknown option, or a
// `key=value` whose key is a recipe key. false when nothing is found (the error is another one).
bool find_mistake(const CLI::App& app, const CLI::App& sub, const std::vector<std::string>& args, Error* out) {
  const bool has_set = sub.get_option_no_throw("--set") != nullptr;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    const size_t eq = a.find('=');
    if (is_option_token(a)) {
      const std::string name = a.substr(0, eq);
      if (const CLI::Option* o = sub.get_option_no_throw(name)) {
        if (eq == std::string::npos && o->get_items_expected_min() > 0) ++i;  // its value
        continue;
      }
      std::string value = eq != std::string::npos                                   ? a.substr(eq + 1)
                          : i + 1 < args.size() && !is_option_token(args[i + 1]) ? args[i + 1]
                                                                                    : "";
      *out = unknown_option(app, sub, a, value);
      return true;
    }
    if (has_set && eq != std::string::npos && eq > 0) {  // `lr=1e-3` where `--set train.lr=1e-3` was meant
      const std::string key = recipe_key_for(a.substr(0, eq));
      if (!key.empty()) {
        *out = Error(EXIT_CODE_USAGE,
                     "unexpected argument '" + a + "' for `lora " + sub.get_name() + "`; did you mean `--set " + key +
                         "=" + a.substr(eq + 1) + "`?",
                     "recipe keys are set with --set section.key=value (repeatable)");
        return true;
      }
    }
  }
  return false;
}

Error usage_error_of(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const std::string subs = subcommand_list(app);
  if (args.empty())
    return Error(EXIT_CODE_USAGE, "a subcommand is required: one of " + subs, "`lora --help` says what each does");
  const CLI::App* sub = nullptr;
  if (!is_option_token(args[0])) {
    for (const CLI::App* s : subcommands_of(app))
      if (s->check_name(args[0])) sub = s;
    if (!sub) {
      std::vector<std::string> names;
      for (const CLI::App* s : subcommands_of(app)) names.push_back(s->get_name());
      const std::string near = recipe_closest_name(args[0], names);
      return Error(EXIT_CODE_USAGE,
                   "unknown subcommand '" + args[0] + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?"),
                   "subcommands: " + subs + "; `lora --help` says what each does");
    }
    Error found(0, "");
    if (find_mistake(app, *sub, std::vector<std::string>(args.begin() + 1, args.end()), &found)) return found;
  }
  // Another error (a missing or invalid value, an extra argument): CLI11's words, as one of ours.
  std::string what = e.what();
  if (!what.empty()) what[0] = char(std::tolower(static_cast<unsigned char>(what[0])));
  return Error(EXIT_CODE_USAGE, what,
               sub ? "`lora " + sub->get_name() + " --help` lists its arguments" : "`lora --help` lists the subcommands");
}

}  // namespace

void print_error(const Error& e) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", e.what());
  if (!e.hint().empty()) std::fprintf(stderr, "  hint: %s\n", e.hint().c_str());
}

int usage_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  Error err = usage_error_of(app, e, argc, argv);
  print_error(err);
  return err.code();
}

}  // namespace lora
