// Resumable training state: trainable tensors, AdamW moments, step, data
// position, seeds, loss-scale state and the resolved recipe, in safetensors + JSON, under
// <output>/checkpoints/step-<N>/. Written crash-safely: everything goes into a temporary directory
// (.tmp-step-<N>), each file fsynced, then a COMMITTED record with every file's size and SHA-256, and
// the directory is renamed into place (the commit). Resume takes the newest committed directory whose
// files match their record; half-written ones are ignored, damaged ones named and passed over.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/session/recipe.h"
#include "core/train/optimizer.h"

namespace lora {

struct TrainProgress {
  int64_t step = 0;          // optimizer updates done
  int64_t epoch = 0;         // data position of the next batch
  int64_t cursor = 0;
  int64_t micro_steps = 0;   // micro-batches consumed (dropout masks are keyed by it)
  int64_t tokens_seen = 0;   // tokens processed, padding excluded
  uint64_t seed = 0;
  double loss_scale = 1.0;
  int64_t good_steps = 0;
  double first_eval_loss = -1;  // held-out loss before training (-1: not measured)
  std::string train_data_hash;  // the training source's hash ("fnv1a64:..."), checked on resume; "": unknown
};

// Saves a checkpoint and prunes all but the newest keep_last (0: keep all), never the new one and only
// after it is committed; a step-N that exists already is swapped out atomically. Returns its directory.
// The resolved recipe is stored beside it, its relative paths rewritten for that directory.
std::string train_state_save(const std::string& output_dir, Model& model, AdamW& opt, const TrainProgress& p,
                             const Recipe& recipe, int keep_last);
// The newest committed checkpoint under path (an output directory, its checkpoints/ folder, or a
// checkpoint directory itself); "" if there is none.
std::string train_state_latest(const std::string& path);
// Checks a committed checkpoint's files against its commit record (sizes and SHA-256): "" if they
// match (or the record predates checksums), else what is wrong, naming the file.
std::string train_state_verify(const std::string& ckpt_dir);
// The newest committed checkpoint under path whose files are intact; each newer damaged one is named
// in *notes. "" if there is none; lora::Error (runtime) naming each damaged one if all are damaged.
std::string train_state_latest_intact(const std::string& path, std::vector<std::string>* notes);
// Compares a resumed run's recipe with the one its checkpoint ran with (CHECKPOINT/recipe.yaml), so that
// a resume that forgot the first run's --set options does not silently train on other data or settings.
// Every key that changes what is trained (model, lora, data, optimizer, schedule, batch, seed) must be
// the same: lora::Error (exit 2) lists every one that is not, with both values and the way to resume
// exactly. A path that differs is accepted when it holds the same content (files byte for byte,
// directories by their files' names and sizes and their small files' bytes) or when the checkpoint's
// path no longer exists (the files moved; a notice says so). Keys that may change on resume (device,
// precision, recompute, evaluation, output, log; the run's length, with a notice) are allowed.
// Returns the notices. `resume_arg` is the --resume argument, for messages.
std::vector<std::string> resume_recipe_check(const Recipe& now, const std::string& ckpt_dir,
                                             const std::string& resume_arg);
// Restores model masters, optimizer moments and progress from a checkpoint directory.
void train_state_load(const std::string& ckpt_dir, Model& model, AdamW& opt, TrainProgress& p);

}  // namespace lora
