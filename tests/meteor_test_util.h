// Helpers for the METEOR tests: finding METEOR 1.5's jar and Java on this machine, setting environment
// variables for one scope, and writing stand-ins for `java` and the jar.
#pragma once
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

// The jar the METEOR tests run: $LORA_METEOR_JAR, else meteor/meteor-1.5.jar of an installed pycocoevalcap
// (python3 is asked where it is). "" with the reason in *why when there is none, or no `java` on PATH.
inline std::string meteor_test_jar(std::string* why) {
  std::string jar;
  if (const char* env = std::getenv("LORA_METEOR_JAR"); env && *env) {
    jar = env;
  } else if (FILE* p = ::popen("python3 -c \"import pycocoevalcap; print(pycocoevalcap.__path__[0])\" 2>/dev/null", "r")) {
    char buf[4096];
    std::string dir;
    while (std::fgets(buf, sizeof buf, p)) dir += buf;
    ::pclose(p);
    while (!dir.empty() && (dir.back() == '\n' || dir.back() == '\r')) dir.pop_back();
    if (!dir.empty()) jar = dir + "/meteor/meteor-1.5.jar";
  }
  if (jar.empty()) {
    *why = "no METEOR jar: LORA_METEOR_JAR is not set and python3 cannot import pycocoevalcap (pip install pycocoevalcap)";
    return "";
  }
  if (!std::filesystem::is_regular_file(jar)) {
    *why = "no METEOR jar at " + jar;
    return "";
  }
  if (std::system("command -v java >/dev/null 2>&1") != 0) {
    *why = "no `java` on PATH";
    return "";
  }
  return jar;
}

// Sets (or with value nullptr unsets) an environment variable until the end of the scope.
class EnvScope {
 public:
  EnvScope(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~EnvScope() {
    if (had_) ::setenv(name_.c_str(), old_.c_str(), 1);
    else ::unsetenv(name_.c_str());
  }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

// An executable script at dir/name.
inline void write_script(const std::filesystem::path& dir, const std::string& name, const std::string& body) {
  std::filesystem::create_directories(dir);
  const std::filesystem::path p = dir / name;
  std::ofstream(p) << "#!/bin/bash\n" << body;
  ::chmod(p.c_str(), 0755);
}

// A file that passes the jar check without being METEOR: a zip's first bytes, and an empty
// data/paraphrase-en.gz beside it. Returns the jar's path.
inline std::string write_fake_jar(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir / "data");
  std::ofstream(dir / "meteor-1.5.jar", std::ios::binary) << "PK\x03\x04 not really a jar";
  std::ofstream(dir / "data" / "paraphrase-en.gz");
  return (dir / "meteor-1.5.jar").string();
}
