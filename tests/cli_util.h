// Helpers for tests that run the built `lora` binary: run a command, capture its output and exit code,
// and make scratch directories.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

struct CliResult {
  int code = -1;
  std::string out;  // stdout and stderr together
};

// Runs `lora <args>` through the shell from the source directory, stdin closed.
inline CliResult lora_run(const std::string& args, const std::string& env = "") {
  const std::string log = std::filesystem::temp_directory_path() / ("lora-cli-" + std::to_string(::getpid()) + ".log");
  std::string cmd = "cd " LORA_SOURCE_DIR " && " + env + " " LORA_BIN " " + args + " </dev/null >" + log + " 2>&1";
  int status = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.out = ss.str();
  std::filesystem::remove(log);
  return r;
}

inline std::filesystem::path scratch_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("lora-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

inline bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }
