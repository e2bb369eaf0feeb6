// The one entry point of the test executables (tests/test_suite.h says how suites and preconditions
// work). Besides doctest's own options it takes --suite=test_NAME, repeatable: run only those suites,
// that is the test cases of tests/test_NAME.cpp. Suites whose precondition fails are left out with
// "skipped: <why>"; when every suite asked for is skipped, the exit code is 77. A suite with no test case
// in this executable is an error (exit code 2).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "tests/test_suite.h"

namespace lora_test {
namespace {

// The suite of a source path: its file name without the extension.
std::string suite_of(const std::string& file) {
  const size_t slash = file.find_last_of('/');
  std::string name = slash == std::string::npos ? file : file.substr(slash + 1);
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

std::multimap<std::string, Precondition>& preconditions() {
  static std::multimap<std::string, Precondition> m;
  return m;
}

}  // namespace

int suite_requires(const char* file, Precondition check) {
  preconditions().emplace(suite_of(file), check);
  return 0;
}

}  // namespace lora_test

int main(int argc, char** argv) {
  using namespace lora_test;
  std::vector<std::string> suites;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strncmp(argv[i], "--suite=", 8) == 0) suites.emplace_back(argv[i] + 8);
    else args.push_back(argv[i]);
  }
  doctest::Context context;
  context.applyCommandLine(int(args.size()), args.data());

  // Which suites to run, and which are skipped here.
  std::string include, exclude;
  int skipped = 0;
  auto skip = [&](const std::string& suite) {
    bool ok = true;
    auto [from, to] = preconditions().equal_range(suite);
    for (auto it = from; it != to && ok; ++it) {
      std::string why;
      if (!it->second(&why)) {
        std::printf("skipped: %s (%s)\n", why.c_str(), suite.c_str());
        ok = false;
      }
    }
    return !ok;
  };
  if (suites.empty()) {
    std::string last;
    for (const auto& [suite, check] : preconditions()) {
      if (suite == last) continue;
      last = suite;
      if (skip(suite)) exclude += (exclude.empty() ? "*/" : ",*/") + suite + ".cpp";
    }
  } else {
    // A suite named on the command line must exist: a misspelt name would otherwise run nothing and pass.
    std::map<std::string, int> cases;
    for (const auto& tc : doctest::detail::getRegisteredTests()) ++cases[suite_of(tc.m_file.c_str())];
    for (const auto& suite : suites)
      if (cases[suite] == 0) {
        std::fprintf(stderr, "error: no test suite %s in %s (its test cases come from tests/%s.cpp)\n", suite.c_str(),
                     argv[0], suite.c_str());
        return 2;
      }
    for (const auto& suite : suites) {
      if (skip(suite)) ++skipped;
      else include += (include.empty() ? "*/" : ",*/") + suite + ".cpp";
    }
    if (skipped == int(suites.size())) return 77;
    context.setOption("source-file", include.c_str());
  }
  if (!exclude.empty()) context.setOption("source-file-exclude", exclude.c_str());
  std::fflush(stdout);
  return context.run();
}
