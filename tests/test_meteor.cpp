// METEOR's plumbing without METEOR: where the jar comes from, the checks made before Java starts, the exact
// lines sent to the jar (meteor.py's protocol, multiple references per segment), how answers are read, and
// the errors for every way the child can fail, each with no child process left behind. Stand-ins for
// `java` are bash scripts on a temporary PATH, so this runs anywhere; the real jar's numbers are checked
// by test_golden_meteor.cpp.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/metrics.h"
#include "core/recipe.h"
#include "core/validate.h"
#include "meteor_test_util.h"
#include "test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
namespace fs = std::filesystem;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The lora::Error that f throws, as "message\nhint: hint" (a failed check if it throws none).
template <class F>
std::string meteor_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(e.code() == EXIT_CODE_RUNTIME);
    return std::string(e.what()) + "\nhint: " + e.hint();
  }
  FAIL_CHECK("no lora::Error thrown");
  return "";
}

// No child process is left, running or as a zombie.
bool no_children() { return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

// A scratch folder with a fake jar and a bin/ folder to put a `java` script in.
struct Scratch {
  fs::path dir = temp_dir();
  std::string jar = write_fake_jar(dir / "meteor");
  fs::path bin = dir / "bin";
  EnvScope no_java_home{"JAVA_HOME", nullptr};  // the tests put their stand-in java on PATH
  // `java` on a PATH of its own for the scope of the returned guard.
  std::unique_ptr<EnvScope> java(const std::string& body) {
    write_script(bin, "java", body);
    return std::make_unique<EnvScope>("PATH", (bin.string() + ":/usr/bin:/bin").c_str());
  }
};

// A stand-in for METEOR that records its arguments and input and answers as the jar does: a line of
// statistics per SCORE line ("n.0 2.0 3.0" for the n-th), then for EVAL one score per segment (0.1, 0.2, ...)
// and the corpus score 0.25.
std::string recording_java(const fs::path& log) {
  return "printf '%s\\n' \"$@\" > '" + log.string() + ".args'\n"
         "n=0\n"
         "while IFS= read -r line; do\n"
         "  printf '%s\\n' \"$line\" >> '" + log.string() + ".in'\n"
         "  case \"$line\" in\n"
         "    SCORE*) n=$((n+1)); echo \"$n.0 2.0 3.0\";;\n"
         "    EVAL*) k=$(grep -o ' ||| ' <<<\"$line\" | wc -l); for ((i=1;i<=k;i++)); do echo \"0.$i\"; done; echo 0.25;;\n"
         "  esac\n"
         "done\n";
}

const std::vector<std::string> kPredictions = {"The Eagle ||| is a PUB.", "Aromi serves  Italian food!", ""};
const References kReferences = {{"The Eagle is a pub.", "There's a pub called \"The Eagle\"."},
                                {"Aromi is Italian."},
                                {"Zizzi is cheap, family-friendly.", "Zizzi", "Near Café Sicilia."}};

}  // namespace

TEST_CASE("the jar comes from eval.meteor_jar, else LORA_METEOR_JAR, else nowhere") {
  std::string source = "?";
  {
    EnvScope env("LORA_METEOR_JAR", "/env/meteor-1.5.jar");
    CHECK(meteor_jar_find("/recipe/meteor-1.5.jar", &source) == "/recipe/meteor-1.5.jar");
    CHECK(source == "eval.meteor_jar");
    CHECK(meteor_jar_find("", &source) == "/env/meteor-1.5.jar");
    CHECK(source == "LORA_METEOR_JAR");
  }
  {
    EnvScope env("LORA_METEOR_JAR", nullptr);
    CHECK(meteor_jar_find("", &source).empty());
    CHECK(source.empty());
  }
  // The recipe key is an input path: relative to the recipe file, or to the current directory with --set.
  Recipe r = recipe_parse("eval:\n  meteor_jar: coco/meteor/meteor-1.5.jar\n", "/work/recipes/r.yaml");
  CHECK(r.eval.meteor_jar == "/work/recipes/coco/meteor/meteor-1.5.jar");
  CHECK(Recipe().eval.meteor_jar.empty());
  // The note for a run without it says what to install and where the jar is.
  const std::string hint = meteor_jar_hint();
  CHECK(contains(hint, "pip install pycocoevalcap"));
  CHECK(contains(hint, "/meteor/meteor-1.5.jar"));
  CHECK(contains(hint, "LORA_METEOR_JAR"));
  CHECK(contains(hint, "eval.meteor_jar"));
}

TEST_CASE("the jar is checked before Java starts") {
  Scratch s;
  std::string e = meteor_error([&] { meteor_jar_check((s.dir / "nowhere.jar").string(), "eval.meteor_jar"); });
  CHECK(contains(e, "METEOR jar '" + (s.dir / "nowhere.jar").string() + "' (eval.meteor_jar) does not exist"));
  CHECK(contains(e, "pip install pycocoevalcap"));
  e = meteor_error([&] { meteor_jar_check(s.dir.string()); });
  CHECK(contains(e, "is a directory"));
  write_text(s.dir / "text.jar", "#!/bin/sh\necho not a jar\n");
  e = meteor_error([&] { meteor_jar_check((s.dir / "text.jar").string(), "LORA_METEOR_JAR"); });
  CHECK(contains(e, "(LORA_METEOR_JAR) is not a jar: a jar is a zip file"));
  fs::create_directories(s.dir / "alone");
  fs::copy_file(s.jar, s.dir / "alone" / "meteor-1.5.jar");
  e = meteor_error([&] { meteor_jar_check((s.dir / "alone" / "meteor-1.5.jar").string()); });
  CHECK(contains(e, "paraphrase table is missing: expected " + (s.dir / "alone" / "data" / "paraphrase-en.gz").string()));
  {
    EnvScope path("PATH", (s.dir / "empty-bin").c_str());
    e = meteor_error([&] { meteor_jar_check(s.jar); });
    CHECK(contains(e, "no `java` on PATH (" + (s.dir / "empty-bin").string() + ")"));
    CHECK(contains(e, "install a Java runtime"));
    // A missing java stops MeteorScorer before anything is started.
    e = meteor_error([&] { metric_meteor({"a"}, {{"a"}}, s.jar); });
    CHECK(contains(e, "no `java` on PATH"));
  }
  auto guard = s.java("exit 0\n");
  CHECK(meteor_jar_check(s.jar) == (s.bin / "java").string());
  // JAVA_HOME, when set, is preferred to PATH; one without bin/java is an error, not a fallback to PATH.
  write_script(s.dir / "jdk" / "bin", "java", "exit 0\n");
  {
    EnvScope home("JAVA_HOME", (s.dir / "jdk").c_str());
    CHECK(meteor_jar_check(s.jar) == (s.dir / "jdk" / "bin" / "java").string());
  }
  {
    EnvScope home("JAVA_HOME", (s.dir / "empty-bin").c_str());
    e = meteor_error([&] { meteor_jar_check(s.jar); });
    CHECK(contains(e, "JAVA_HOME is '" + (s.dir / "empty-bin").string() + "', but " +
                          (s.dir / "empty-bin" / "bin" / "java").string() + " is not an executable file"));
    CHECK(contains(e, "unset it to use the java on PATH"));
  }
}

TEST_CASE("meteor.py's protocol: one SCORE line per segment with all its references, then EVAL") {
  Scratch s;
  const fs::path log = s.dir / "java";
  auto guard = s.java(recording_java(log));
  std::vector<std::pair<size_t, size_t>> calls;
  MeteorScores m = metric_meteor(kPredictions, kReferences, s.jar, [&](size_t d, size_t t) { calls.push_back({d, t}); });
  CHECK(no_children());
  // The command line: coco-caption's, with the paraphrase table beside the jar named explicitly.
  CHECK(read_all(log.string() + ".args") == "-jar\n-Xmx2G\n" + s.jar + "\n-\n-\n-stdio\n-l\nen\n-norm\n-a\n" +
                                                (s.dir / "meteor" / "data" / "paraphrase-en.gz").string() + "\n");
  // The texts after PTB tokenisation (lowercased, punctuation gone); the hypothesis without "|||" and
  // double spaces; the references of a segment in their order; the statistics sent back verbatim.
  CHECK(read_all(log.string() + ".in") ==
        "SCORE ||| the eagle is a pub ||| there 's a pub called the eagle ||| the eagle is a pub\n"
        "SCORE ||| aromi is italian ||| aromi serves italian food\n"
        "SCORE ||| zizzi is cheap family-friendly ||| zizzi ||| near café sicilia ||| \n"
        "EVAL ||| 1.0 2.0 3.0 ||| 2.0 2.0 3.0 ||| 3.0 2.0 3.0\n");
  CHECK(m.segments == std::vector<double>{0.1, 0.2, 0.3});
  CHECK(m.corpus == 0.25);
  CHECK(calls == std::vector<std::pair<size_t, size_t>>{{0, 3}, {1, 3}, {2, 3}, {3, 3}});

  // One process for several corpora: the second call's lines follow the first's.
  fs::remove(log.string() + ".in");
  {
    MeteorScorer scorer(s.jar);
    CHECK(scorer.score({"a b"}, {{"a b", "c"}}).segments == std::vector<double>{0.1});
    CHECK(scorer.score({"x", "y"}, {{"x"}, {"z"}}).corpus == 0.25);
  }
  CHECK(no_children());
  CHECK(read_all(log.string() + ".in") ==
        "SCORE ||| a b ||| c ||| a b\nEVAL ||| 1.0 2.0 3.0\n"
        "SCORE ||| x ||| x\nSCORE ||| z ||| y\nEVAL ||| 2.0 2.0 3.0 ||| 3.0 2.0 3.0\n");
  // Inputs are checked as for the other metrics.
  CHECK(contains(meteor_error([&] { metric_meteor({"a"}, {}, s.jar); }), "1 predictions but 0 reference groups"));
  CHECK(contains(meteor_error([&] { metric_meteor({"a"}, {{}}, s.jar); }), "prediction 1 has no reference"));
  CHECK(no_children());
}

TEST_CASE("java that fails: each way is a clear error, and no child is left behind") {
  Scratch s;
  struct Case {
    const char* name;
    std::string java;                   // the stand-in's script
    std::vector<std::string> expected;  // in the message or hint
  };
  const std::string oom = "echo 'Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space' >&2\n";
  const std::vector<Case> cases = {
      {"exits 1 at once", "echo 'Error: Invalid or corrupt jarfile x.jar' >&2\nexit 1\n",
       {"java exited with status 1 before answering segment 1 of 3 (SCORE)", "its stderr ends:\n  Error: Invalid or "
        "corrupt jarfile", "is not a runnable jar", "pip install pycocoevalcap"}},
      {"exits 0 without a word", "exit 0\n", {"java exited (status 0) before answering segment 1 of 3", "wrote nothing"}},
      {"runs out of memory", "read -r line\n" + oom + "exit 1\n",
       {"java exited with status 1 before answering segment 1 of 3", "OutOfMemoryError", "Java ran out of memory",
        "-Xmx2G"}},
      {"dies on a signal after two segments", "read -r l; echo 1 2; read -r l; echo 1 2; read -r l; kill -9 $$\n",
       {"java was killed by signal 9", "before answering segment 3 of 3 (SCORE)", "out-of-memory killer"}},
      {"closes its output and hangs", "exec 1>&-\nexec sleep 30\n",
       {"java closed its output (and was stopped) before answering segment 1 of 3 (SCORE)"}},
      {"prints garbage", "read -r line\necho 'Meteor version 1.5'\nexec sleep 30\n",
       {"expected a line of numbers (the statistics of segment 1 of 3 (SCORE)) from java, found 'Meteor version 1.5'",
        "METEOR 1.5's meteor-1.5.jar?"}},
      {"answers with a changing number of statistics", "read -r l; echo 1 2 3; read -r l; echo 1 2; exec sleep 30\n",
       {"expected 3 numbers (the statistics of segment 2 of 3 (SCORE), as many as for the first segment)",
        "found '1 2'"}},
      {"answers EVAL with garbage",
       "for i in 1 2 3; do read -r l; echo 1.0 2.0; done; read -r l; echo 0.5; echo 'NaN'; exec sleep 30\n",
       {"expected one number, the score of segment 2 of 3 from java, found 'NaN'"}},
      {"stops before the corpus score", "for i in 1 2 3; do read -r l; echo 1.0 2.0; done; read -r l; echo 1; echo 1; echo 1\n",
       {"java exited (status 0) before answering the corpus score (after 3 segment scores)"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    auto guard = s.java(c.java);
    const std::string e = meteor_error([&] { metric_meteor(kPredictions, kReferences, s.jar); });
    for (const std::string& x : c.expected) CHECK_MESSAGE(contains(e, x), "expected '" << x << "' in:\n" << e);
    CHECK(contains(e, "command: " + (s.bin / "java").string() + " -jar -Xmx2G " + s.jar));
    CHECK(no_children());
  }
  // java that quits without reading while a long line is written: EPIPE, not SIGPIPE killing lora.
  auto guard = s.java("exit 3\n");
  const std::string e = meteor_error([&] { metric_meteor({"x"}, {{std::string(1 << 20, 'a')}}, s.jar); });
  CHECK(contains(e, "java exited with status 3 before answering segment 1 of 1 (SCORE)"));
  CHECK(no_children());
}

TEST_CASE("a real java refuses a file that only looks like a jar") {
  if (std::system("command -v java >/dev/null 2>&1") != 0) {
    MESSAGE("skipped: no `java` on PATH");
    return;
  }
  Scratch s;
  const std::string e = meteor_error([&] { metric_meteor({"a"}, {{"a"}}, s.jar); });
  CHECK(contains(e, "java exited with status 1 before answering segment 1 of 1"));
  CHECK(contains(e, "Invalid or corrupt jarfile"));
  CHECK(contains(e, "is not a runnable jar"));
  CHECK(no_children());
}

TEST_CASE("lora validate checks the jar when one is set") {
  const std::string recipe = std::string(LORA_SOURCE_DIR) + "/configs/quickstart.yaml";
  Scratch s;
  auto find = [](const ValidateReport& rep) -> const ValidateLine* {
    for (const auto& l : rep.lines)
      if (l.part == "meteor") return &l;
    return nullptr;
  };
  EnvScope env("LORA_METEOR_JAR", nullptr);
  ValidateReport rep = validate_recipe(recipe, {"eval.meteor_jar=" + (s.dir / "missing.jar").string()});
  const ValidateLine* l = find(rep);
  REQUIRE(l != nullptr);
  CHECK(l->status == ValidateStatus::problem);
  CHECK(contains(l->text, "missing.jar' (eval.meteor_jar) does not exist"));
  CHECK(rep.exit_code() == 1);
  {
    EnvScope jar("LORA_METEOR_JAR", s.jar.c_str());
    auto guard = s.java("exit 0\n");
    rep = validate_recipe(recipe, {});
    l = find(rep);
    REQUIRE(l != nullptr);
    CHECK(l->status == ValidateStatus::ok);
    CHECK(contains(l->text, s.jar + " (LORA_METEOR_JAR)"));
  }
  CHECK(find(validate_recipe(recipe, {})) == nullptr);  // nothing set: no METEOR line
}

}  // namespace
