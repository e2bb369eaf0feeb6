// METEOR through METEOR 1.5's own jar (see metrics.h): finding and checking the jar, one `java` child
// process talked to over three pipes, and coco-caption's meteor.py protocol on top of it.
//
// The child is started with posix_spawn (no shell) as meteor.py starts it, `java -jar -Xmx2G JAR - - -stdio
// -l en -norm`, plus `-a DIR/data/paraphrase-en.gz`: the same file the jar would load by default, named
// explicitly because the jar finds it through its own URL, which breaks on a directory whose name needs
// URL-escaping (a space becomes "%2520" and the table is "not found"). Our ends of the pipes are
// non-blocking and every wait is a poll() on java's stdout and stderr together (and its stdin while we
// write), so neither side can block the other on a full pipe, a dead child shows as end-of-file, and
// silence is bounded by kAnswerTimeoutS. SIGPIPE is blocked around writes, so a java that died makes
// write() fail with EPIPE instead of killing lora.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/base/error.h"
#include "core/base/strings.h"
#include "core/metrics/metrics.h"

extern char** environ;

namespace lora {

namespace fs = std::filesystem;

namespace {

constexpr int kAnswerTimeoutS = 300;  // longest silence before an answer (the JVM's start takes ~20 s)
constexpr size_t kStderrKept = 16384; // the end of java's stderr kept for messages
const char* const kHeap = "-Xmx2G";   // meteor.py's heap: the paraphrase table needs about 1 GB

// Python's str.replace: every non-overlapping occurrence, left to right.
std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

bool executable_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// `name` in $PATH as execvp would find it (an empty entry is the current directory); "" when absent.
std::string program_find(const std::string& name) {
  const char* env = std::getenv("PATH");
  const std::string path = env ? env : "/bin:/usr/bin";
  size_t start = 0;
  while (true) {
    const size_t end = path.find(':', start);
    std::string dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    if (executable_file(candidate)) return candidate;
    if (end == std::string::npos) return "";
    start = end + 1;
  }
}

// The java to run: $JAVA_HOME/bin/java when JAVA_HOME is set (as Java's own launch scripts and build
// tools prefer it), else `java` on PATH. A JAVA_HOME without bin/java is an error, not a silent fallback.
std::string java_find() {
  const char* home = std::getenv("JAVA_HOME");
  if (home && *home) {
    const std::string java = (fs::path(home) / "bin" / "java").string();
    if (executable_file(java)) return java;
    fail_runtime("METEOR needs Java: JAVA_HOME is '" + std::string(home) + "', but " + java +
                     " is not an executable file",
                 "set JAVA_HOME to a Java runtime's folder (the one holding bin/java), or unset it to use the java "
                 "on PATH");
  }
  const std::string java = program_find("java");
  if (java.empty()) {
    const char* path = std::getenv("PATH");
    fail_runtime("METEOR needs Java, but there is no `java` on PATH (" +
                     std::string(path ? path : "PATH is not set") + ") and JAVA_HOME is not set",
                 "install a Java runtime (Debian: apt-get install default-jre-headless), put its bin directory on "
                 "PATH or set JAVA_HOME; or unset eval.meteor_jar and LORA_METEOR_JAR to evaluate without METEOR");
  }
  return java;
}

// data/paraphrase-en.gz beside the jar as named, else beside the file a symbolic link points to.
std::string paraphrase_find(const fs::path& jar) {
  std::error_code ec;
  for (const fs::path& j : {jar, fs::canonical(jar, ec)}) {
    if (j.empty()) continue;
    const fs::path p = j.parent_path() / "data" / "paraphrase-en.gz";
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

std::string setting(const std::string& source) { return source.empty() ? "" : " (" + source + ")"; }

// The last `max_lines` non-empty lines of `text`, indented, for a message.
std::string tail_lines(const std::string& text, size_t max_lines) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  std::string out;
  for (size_t i = lines.size() > max_lines ? lines.size() - max_lines : 0; i < lines.size(); ++i)
    out += "\n  " + lines[i];
  return out;
}

// A line as found, shortened for a message.
std::string quote(const std::string& s) {
  return "'" + (s.size() > 120 ? s.substr(0, 120) + "...' (" + std::to_string(s.size()) + " bytes)" : s + "'");
}

// Whitespace-separated numbers; false when a field is not a finite number.
bool parse_numbers(const std::string& line, std::vector<double>& out) {
  out.clear();
  const char* p = line.c_str();
  while (true) {
    while (*p == ' ' || *p == '\t' || *p == '\r') ++p;
    if (!*p) return true;
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(p, &end);
    if (end == p || errno == ERANGE || !std::isfinite(v) || (*end && *end != ' ' && *end != '\t' && *end != '\r'))
      return false;
    out.push_back(v);
    p = end;
  }
}

// write() with SIGPIPE blocked for this thread: a closed pipe gives EPIPE, and a SIGPIPE it raised is
// consumed unless one was already pending.
ssize_t write_nosigpipe(int fd, const char* data, size_t n) {
  sigset_t pipe_set, old, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  const ssize_t w = ::write(fd, data, n);
  const int err = errno;
  if (w < 0 && err == EPIPE && !was_pending) {
    const struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = err;
  return w;
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

std::string meteor_jar_find(const std::string& configured, std::string* source) {
  std::string jar = configured, from = "eval.meteor_jar";
  if (jar.empty()) {
    const char* env = std::getenv("LORA_METEOR_JAR");
    jar = env ? env : "";
    from = "LORA_METEOR_JAR";
  }
  if (source) *source = jar.empty() ? "" : from;
  return jar;
}

std::string meteor_jar_hint() {
  return "METEOR runs METEOR 1.5's jar with Java. `pip install pycocoevalcap` (a ~100 MB wheel) installs it; set "
         "eval.meteor_jar or the environment variable LORA_METEOR_JAR to the path that `python3 -c \"import "
         "pycocoevalcap; print(pycocoevalcap.__path__[0] + '/meteor/meteor-1.5.jar')\"` prints (after `pip install "
         "--no-deps --target DIR pycocoevalcap`: DIR/pycocoevalcap/meteor/meteor-1.5.jar); data/paraphrase-en.gz "
         "must stay beside the jar";
}

std::string meteor_jar_check(const std::string& jar, const std::string& source) {
  const std::string what = "METEOR jar '" + jar + "'" + setting(source);
  std::error_code ec;
  if (!fs::exists(jar, ec)) fail_runtime(what + " does not exist", meteor_jar_hint());
  if (fs::is_directory(jar, ec))
    fail_runtime(what + " is a directory, not the jar",
                 "name the file: meteor-1.5.jar (in pycocoevalcap's meteor folder)");
  std::ifstream f(jar, std::ios::binary);
  char magic[4] = {0, 0, 0, 0};
  if (!f || !f.read(magic, 4)) {
    if (!f.is_open())
      fail_runtime("cannot read " + what + ": " + std::strerror(errno), "check the file's permissions");
    fail_runtime(what + " is not a jar: it is shorter than a zip header", meteor_jar_hint());
  }
  if (std::memcmp(magic, "PK\x03\x04", 4) != 0)
    fail_runtime(what + " is not a jar: a jar is a zip file, starting with the bytes 'PK\\x03\\x04'",
                 meteor_jar_hint());
  if (paraphrase_find(jar).empty())
    fail_runtime("METEOR's paraphrase table is missing: expected " +
                     (fs::path(jar).parent_path() / "data" / "paraphrase-en.gz").string() + " beside " + what,
                 "keep the jar in its folder as pycocoevalcap installs it: meteor-1.5.jar beside "
                 "data/paraphrase-en.gz");
  return java_find();
}

// ---- the child process ----

struct MeteorScorer::Process {
  std::string jar, source, command;  // command: for messages
  pid_t pid = -1;
  bool reaped = false;
  bool killed = false;               // we sent SIGKILL
  int status = 0;                    // waitpid's, once reaped
  int to_child = -1, from_child = -1, err_child = -1;
  std::string out;                   // java's stdout not yet consumed
  std::string err;                   // the end of java's stderr
  size_t stats_fields = 0;           // fields of the first statistics line (every line has as many)

  ~Process() { finish(false); }

  // Closes java's input (it exits at end of input) and waits; kills it after `grace_ms` or at once.
  void finish(bool graceful, int grace_ms = 5000) {
    close_fd(to_child);
    if (pid > 0 && !reaped) {
      const auto t0 = std::chrono::steady_clock::now();
      while (graceful && std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(grace_ms)) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          reaped = true;
          break;
        }
        ::usleep(10000);
      }
      if (!reaped) {
        ::kill(pid, SIGKILL);
        killed = true;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        reaped = true;
      }
    }
    close_fd(from_child);
    close_fd(err_child);
  }

  void keep_stderr(const char* data, size_t n) {
    err.append(data, n);
    if (err.size() > 2 * kStderrKept) err.erase(0, err.size() - kStderrKept);
  }

  // One read from fd into out or err; false at end of file (the fd is then closed).
  bool drain(int& fd, bool is_stdout) {
    char buf[65536];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) {
        if (is_stdout) out.append(buf, size_t(n));
        else keep_stderr(buf, size_t(n));
        return true;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      close_fd(fd);  // end of file, or an error that ends the stream all the same
      return false;
    }
  }

  // Java has stopped answering: collect the rest of its stderr and its exit status, then throw.
  [[noreturn]] void fail_exited(const std::string& waiting_for) {
    close_fd(to_child);
    const auto t0 = std::chrono::steady_clock::now();
    while (err_child >= 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)) {
      struct pollfd p = {err_child, POLLIN, 0};
      if (::poll(&p, 1, 200) > 0) drain(err_child, false);
    }
    finish(true, 2000);
    std::string how = WIFEXITED(status)     ? "exited with status " + std::to_string(WEXITSTATUS(status))
                      : WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
                                                  strsignal(WTERMSIG(status)) + ")"
                                            : "stopped";
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) how = "exited (status 0)";
    if (killed) how = "closed its output (and was stopped)";
    const std::string tail = tail_lines(err, 8);
    std::string msg = "METEOR: java " + how + " before answering " + waiting_for + "; command: " + command +
                      (tail.empty() ? "; it wrote nothing on stderr" : "; its stderr ends:" + tail);
    std::string hint;
    auto said = [&](std::initializer_list<const char*> words) {
      for (const char* w : words)
        if (err.find(w) != std::string::npos) return true;
      return false;
    };
    if (said({"OutOfMemoryError", "Could not reserve enough space", "Cannot allocate memory", "insufficient memory"}))
      hint = "Java ran out of memory: METEOR runs with a 2 GB heap (-Xmx2G, as the official scorer runs it); free "
             "memory, or evaluate where 2 GB more are available";
    else if (said({"Invalid or corrupt jarfile", "Unable to access jarfile", "no main manifest attribute"}))
      hint = "'" + jar + "'" + setting(source) + " is not a runnable jar; " + meteor_jar_hint();
    else if (!killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      hint = "something killed java (the kernel's out-of-memory killer kills with SIGKILL): METEOR needs about 2 GB "
             "(-Xmx2G); free memory and run again";
    else
      hint = "run the command by hand to see all it says, e.g. echo 'SCORE ||| a cat ||| the cat' | " + command;
    throw Error(EXIT_CODE_RUNTIME, msg, hint);
  }

  [[noreturn]] void fail_timeout(const std::string& waiting_for) {
    finish(false);
    throw Error(EXIT_CODE_RUNTIME,
                "METEOR: java gave no answer to " + waiting_for + " within " + std::to_string(kAnswerTimeoutS) +
                    " s and was stopped; command: " + command + tail_lines(err, 8),
                "is the machine swapping (METEOR needs about 2 GB)? run the command by hand to see what it does");
  }

  [[noreturn]] void fail_answer(const std::string& expected, const std::string& found) {
    finish(false);
    throw Error(EXIT_CODE_RUNTIME,
                "METEOR: expected " + expected + " from java, found " + quote(found) + "; command: " + command,
                "is '" + jar + "'" + setting(source) + " METEOR 1.5's meteor-1.5.jar? " + meteor_jar_hint());
  }

  // Polls stdout and stderr, and stdin while `writing`; returns after at least one event. Throws on silence.
  void wait_io(bool writing, const std::string& waiting_for) {
    struct pollfd fds[3];
    nfds_t n = 0;
    fds[n++] = {from_child, POLLIN, 0};
    if (err_child >= 0) fds[n++] = {err_child, POLLIN, 0};
    if (writing) fds[n++] = {to_child, POLLOUT, 0};
    while (true) {
      const int r = ::poll(fds, n, kAnswerTimeoutS * 1000);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail_runtime(std::string("METEOR: poll() failed: ") + std::strerror(errno));
      if (r == 0) fail_timeout(waiting_for);
      break;
    }
    bool stdout_open = true;
    for (nfds_t k = 0; k < n; ++k) {
      if (!fds[k].revents) continue;
      if (fds[k].fd == from_child) stdout_open = drain(from_child, true);
      else if (fds[k].fd == err_child) drain(err_child, false);
    }
    if (!stdout_open) fail_exited(waiting_for);
  }

  void send(const std::string& line, const std::string& what) {
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
      const ssize_t w = write_nosigpipe(to_child, p, left);
      if (w > 0) {
        p += w;
        left -= size_t(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EPIPE) fail_exited(what);
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        fail_runtime("METEOR: cannot write to java: " + std::string(std::strerror(errno)));
      wait_io(true, what);
    }
  }

  std::string read_line(const std::string& what) {
    while (true) {
      const size_t nl = out.find('\n');
      if (nl != std::string::npos) {
        std::string line = out.substr(0, nl);
        out.erase(0, nl + 1);
        const size_t a = line.find_first_not_of(" \t\r"), b = line.find_last_not_of(" \t\r");
        return a == std::string::npos ? "" : line.substr(a, b - a + 1);  // meteor.py strip()s
      }
      if (from_child < 0) fail_exited(what);
      wait_io(false, what);
    }
  }
};

MeteorScorer::MeteorScorer(const std::string& jar, const std::string& source) : p_(std::make_unique<Process>()) {
  const std::string java = meteor_jar_check(jar, source);
  Process& p = *p_;
  p.jar = jar;
  p.source = source;
  const std::string abs_jar = fs::absolute(jar).lexically_normal().string();
  const std::string paraphrase = fs::absolute(paraphrase_find(jar)).lexically_normal().string();
  std::vector<std::string> args = {"java", "-jar", kHeap, abs_jar, "-", "-", "-stdio", "-l", "en", "-norm",
                                   "-a", paraphrase};
  p.command = java + " " + join({args.begin() + 1, args.end()}, " ");

  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) fail_runtime(std::string("METEOR: cannot create a pipe: ") + std::strerror(errno));
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]), ::close(in[1]);
    fail_runtime(std::string("METEOR: cannot create a pipe: ") + std::strerror(errno));
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(in[0]), ::close(in[1]), ::close(out[0]), ::close(out[1]);
    fail_runtime(std::string("METEOR: cannot create a pipe: ") + std::strerror(errno));
  }
  // dup2 onto 0, 1, 2 clears close-on-exec there; every other descriptor of ours closes at exec.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  // Java starts with default signal handling and nothing blocked, whatever lora's state.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = ::posix_spawn(&p.pid, java.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]), ::close(out[1]), ::close(err[1]);
  p.to_child = in[1], p.from_child = out[0], p.err_child = err[0];
  if (rc != 0) {
    p.pid = -1;
    fail_runtime("METEOR: cannot start " + java + ": " + std::strerror(rc),
                 "check that it is a working Java runtime (`java -version`)");
  }
  for (int fd : {p.to_child, p.from_child, p.err_child}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

MeteorScorer::~MeteorScorer() {
  if (p_) p_->finish(true);
}

MeteorScores MeteorScorer::score(const std::vector<std::string>& predictions, const References& references,
                                 const std::function<void(size_t, size_t)>& progress) {
  if (predictions.size() != references.size())
    fail_runtime("METEOR: " + std::to_string(predictions.size()) + " predictions but " +
                     std::to_string(references.size()) + " reference groups",
                 "give one prediction per group of references");
  if (predictions.empty()) fail_runtime("METEOR: no predictions to score");
  for (size_t i = 0; i < references.size(); ++i)
    if (references[i].empty()) fail_runtime("METEOR: prediction " + std::to_string(i + 1) + " has no reference");
  Process& p = *p_;
  if (p.to_child < 0) fail_runtime("METEOR: java is no longer running (an earlier error stopped it)");
  auto tokenized = [](const std::string& text) {
    std::string s;
    for (const std::string& w : ptb_tokenize(text)) s += (s.empty() ? "" : " ") + w;
    return s;
  };
  const size_t N = predictions.size();
  if (progress) progress(0, N);
  std::string eval = "EVAL";
  for (size_t i = 0; i < N; ++i) {
    std::vector<std::string> refs;
    for (const std::string& r : references[i]) refs.push_back(tokenized(r));
    const std::string hyp = replace_all(replace_all(tokenized(predictions[i]), "|||", ""), "  ", " ");
    const std::string what = "segment " + std::to_string(i + 1) + " of " + std::to_string(N) + " (SCORE)";
    p.send("SCORE ||| " + join(refs, " ||| ") + " ||| " + hyp + "\n", what);
    const std::string stats = p.read_line(what);
    std::vector<double> v;
    if (!parse_numbers(stats, v) || v.empty())
      p.fail_answer("a line of numbers (the statistics of " + what + ")", stats);
    if (p.stats_fields == 0) p.stats_fields = v.size();
    if (v.size() != p.stats_fields)
      p.fail_answer(std::to_string(p.stats_fields) + " numbers (the statistics of " + what +
                        ", as many as for the first segment)",
                    stats);
    eval += " ||| " + stats;
    if (progress) progress(i + 1, N);
  }
  p.send(eval + "\n", "the EVAL line");
  MeteorScores s;
  for (size_t i = 0; i <= N; ++i) {
    const std::string what = i < N ? "the score of segment " + std::to_string(i + 1) + " of " + std::to_string(N)
                                   : "the corpus score (after " + std::to_string(N) + " segment scores)";
    const std::string line = p.read_line(what);
    std::vector<double> v;
    if (!parse_numbers(line, v) || v.size() != 1) p.fail_answer("one number, " + what, line);
    if (i < N) s.segments.push_back(v[0]);
    else s.corpus = v[0];
  }
  return s;
}

MeteorScores metric_meteor(const std::vector<std::string>& predictions, const References& references,
                           const std::string& jar, const std::function<void(size_t, size_t)>& progress) {
  MeteorScorer scorer(jar);
  return scorer.score(predictions, references, progress);
}

}  // namespace lora
