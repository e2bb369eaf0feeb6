// See run_dir.h.
#include "core/train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/train/train_state.h"

namespace lora {

namespace fs = std::filesystem;

RunLock::RunLock(const std::string& dir) {
  const std::string path = (fs::path(dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    fail_runtime("cannot open the lock file '" + path + "': " + std::strerror(errno),
                 "check the permissions of the output directory");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[256] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK)
      fail_runtime("cannot lock '" + path + "': " + std::strerror(err),
                   "the file system may not support flock; use a local output directory");
    std::string holder = n > 0 ? std::string(buf, size_t(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    fail_runtime("output directory '" + dir + "' is in use by another lora process (" +
                     (holder.empty() ? std::string("its pid and host were not written yet") : holder) + ")",
                 "two processes cannot write one run: wait for that one to finish or stop it, or choose another "
                 "directory with --output");
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  const std::string me = "pid " + std::to_string(::getpid()) + " on host " + host + "\n";
  // The holder's name is for the message above only; the lock itself is the flock.
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != ssize_t(me.size()))
    fail_runtime("cannot write the lock file '" + path + "': " + std::strerror(errno), "check free disk space");
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {
void remove_noting(const fs::path& p, const std::string& what, std::vector<std::string>& notes) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) fail_runtime("cannot remove " + what + " '" + p.string() + "': " + ec.message(),
                       "check the permissions of the output directory");
  notes.push_back("removed " + what + " " + p.string());
}
}  // namespace

std::vector<std::string> run_dir_clean(const std::string& dir) {
  std::vector<std::string> notes;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0)
      remove_noting(e.path(), "a temporary file left by a stopped run", notes);
    else if (name.rfind(".prune-", 0) == 0)
      remove_noting(e.path(), "a removal left unfinished by a stopped run", notes);
  }
  const fs::path ckpts = fs::path(dir) / "checkpoints";
  for (const auto& e : fs::directory_iterator(ckpts, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0)
      remove_noting(e.path(), "an uncommitted checkpoint", notes);
    else if (name.rfind(".prune-", 0) == 0)
      remove_noting(e.path(), "a checkpoint whose removal was cut short", notes);
    else if (name.rfind("step-", 0) == 0 && e.is_directory() && !fs::exists(e.path() / "COMMITTED"))
      remove_noting(e.path(), "a checkpoint without its commit record", notes);
  }
  if (!notes.empty()) fsync_path(dir);
  return notes;
}

bool run_dir_has_run(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  return !train_state_latest((d / "checkpoints").string()).empty() || fs::exists(d / "adapter_model.safetensors", ec) ||
         fs::exists(d / "model", ec);
}

std::vector<std::string> run_dir_clear(const std::string& dir) {
  const fs::path d(dir);
  std::vector<std::string> moved;
  for (const char* name : {"checkpoints", "metrics.jsonl", "train.log", "samples.jsonl", "loss.svg",
                           "adapter_model.safetensors", "adapter_config.json", "model"}) {
    std::error_code ec;
    if (!fs::exists(d / name, ec)) continue;
    const fs::path aside = d / (std::string(".prune-") + name);
    fs::remove_all(aside, ec);
    fs::rename(d / name, aside, ec);
    if (ec) fail_runtime("output.overwrite: cannot move '" + (d / name).string() + "' aside: " + ec.message(),
                         "check the permissions of the output directory");
    moved.push_back(name);
  }
  if (moved.empty()) return {};
  fsync_path(dir);
  std::string list;
  for (const auto& m : moved) {
    std::error_code ec;
    fs::remove_all(d / (".prune-" + m), ec);
    list += (list.empty() ? "" : ", ") + m;
  }
  return {"output.overwrite: removed the previous run's " + list + " from " + dir};
}

}  // namespace lora
