// The output directory of `lora train` kept as a small database: one writer at a time (an exclusive
// flock on <output>/.lock, which names its holder), temporaries of a killed run cleared at start, and
// an overwrite that moves the previous run aside before the first step. Checkpoints and their commit
// records are train_state.h's.
#pragma once
#include <string>
#include <vector>

namespace lora {

// Holds <dir>/.lock with flock(LOCK_EX) for its lifetime, the holder's "pid <P> host <H>" written in it.
// If another process holds it, lora::Error (runtime) naming that pid and host. The lock goes with the
// process (a SIGKILL included); the file itself stays.
class RunLock {
 public:
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// Removes what a killed run leaves behind in an output directory it holds the lock of: "*.tmp" files,
// checkpoints/.tmp-* (a save not committed) and .prune-* (a removal cut short), and checkpoints/step-N
// folders without a commit record. Returns a note per thing removed.
std::vector<std::string> run_dir_clean(const std::string& dir);

// Whether the directory holds a run worth keeping: a committed checkpoint or a finished adapter or model.
// A run killed before its first checkpoint holds none, and may be started again.
bool run_dir_has_run(const std::string& dir);

// output.overwrite: the previous run's checkpoints, metrics and adapter moved aside (one rename each, so
// nothing of the old run is ever mixed with the new one's) and removed. Returns a note if there were any.
std::vector<std::string> run_dir_clear(const std::string& dir);

}  // namespace lora
