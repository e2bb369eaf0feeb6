// See train_state.h.
#include "core/train/train_state.h"

#include <fcntl.h>
#include <stdio.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/sha256.h"
#include "core/formats/safetensors.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr const char* kCommitted = "COMMITTED";
constexpr int kStateVersion = 1;

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::vector<std::pair<std::string, Tensor>> read_all(const std::string& path) {
  SafetensorsFile f = SafetensorsFile::open(path);
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& e : f.entries()) out.push_back({e.name, f.to_f32(e)});
  return out;
}

// Committed checkpoint directories under root, oldest first.
std::vector<fs::path> committed(const fs::path& root) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind("step-", 0) == 0 && fs::exists(e.path() / kCommitted)) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The files of a checkpoint that its commit record covers.
const char* const kStateFiles[] = {"trainable.safetensors", "optimizer.safetensors", "state.json", "recipe.yaml"};

// Removes a directory by first renaming it to a hidden name (atomic), so that a kill part-way leaves a
// ".prune-" folder that the next start clears, never a step-N folder with some of its files gone.
void remove_dir_aside(const fs::path& dir) {
  const fs::path aside = dir.parent_path() / (".prune-" + dir.filename().string());
  std::error_code ec;
  fs::remove_all(aside, ec);
  fs::rename(dir, aside, ec);
  fs::remove_all(ec ? dir : aside, ec);
}
}  // namespace

std::string train_state_save(const std::string& output_dir, Model& model, AdamW& opt, const TrainProgress& p,
                             const Recipe& recipe, int keep_last) {
  const fs::path root = fs::path(output_dir) / "checkpoints";
  const fs::path final_dir = root / step_name(p.step);
  const fs::path tmp = root / (".tmp-" + step_name(p.step));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) fail_runtime("cannot create checkpoint directory '" + tmp.string() + "': " + ec.message(),
                       "check free space and permissions of the output directory");
  std::vector<std::pair<std::string, Tensor>> params;
  Backend& be = model.backend();
  for (auto& t : model.trainable()) params.push_back({t.name, be.download(*t.master)});
  safetensors_write((tmp / "trainable.safetensors").string(), params, {{"format", "lora-train-state"}}, DType::f32);
  safetensors_write((tmp / "optimizer.safetensors").string(), opt.state_export(), {{"format", "lora-train-state"}},
                    DType::f32);
  json state = {{"version", kStateVersion},
                {"step", p.step},
                {"optimizer_updates", opt.updates()},
                {"epoch", p.epoch},
                {"cursor", p.cursor},
                {"micro_steps", p.micro_steps},
                {"tokens_seen", p.tokens_seen},
                {"seed", p.seed},
                {"loss_scale", p.loss_scale},
                {"good_steps", p.good_steps},
                {"first_eval_loss", p.first_eval_loss}};
  if (!p.train_data_hash.empty()) state["train_data_hash"] = p.train_data_hash;
  file_write_atomic((tmp / "state.json").string(), state.dump(2) + "\n");
  file_write_atomic((tmp / "recipe.yaml").string(), recipe_to_yaml(recipe, (final_dir / "recipe.yaml").string()));
  // The commit record, with each file's size and SHA-256, goes in before the folder is renamed into
  // place: the rename is the commit, and a resume can tell a damaged file from an intact one.
  json record = {{"step", p.step}, {"files", json::object()}};
  for (const char* name : kStateFiles) {
    const fs::path f = tmp / name;
    record["files"][name] = {{"size", fs::file_size(f)}, {"sha256", sha256_file(f.string())}};
  }
  file_write_atomic((tmp / kCommitted).string(), record.dump(2) + "\n");
  if (fs::exists(final_dir, ec)) {
    // The same step again (a resume that saves the step it started from, or a leftover of another run):
    // swap the two folders in one step, so that no moment exists without a committed step-N.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0)
      fail_runtime("cannot move checkpoint into place at '" + final_dir.string() + "': " + std::strerror(errno));
    fsync_path(root.string());
    remove_dir_aside(tmp);
  } else {
    fs::rename(tmp, final_dir, ec);
    if (ec) fail_runtime("cannot move checkpoint into place at '" + final_dir.string() + "': " + ec.message());
  }
  fsync_path(root.string());
  if (keep_last > 0) {
    // Only once the new one is committed, and never the new one itself: at least one committed
    // checkpoint exists at every moment.
    auto all = committed(root);
    int kept = 0;
    for (size_t i = all.size(); i-- > 0;) {
      if (all[i] == final_dir || kept < keep_last) {
        kept += 1;
        continue;
      }
      remove_dir_aside(all[i]);
    }
    fsync_path(root.string());
  }
  return final_dir.string();
}

std::string train_state_latest(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / kCommitted)) return p.string();
  for (const fs::path& root : {p / "checkpoints", p}) {
    auto all = committed(root);
    if (!all.empty()) return all.back().string();
  }
  return "";
}

std::string train_state_verify(const std::string& ckpt_dir) {
  const fs::path dir(ckpt_dir);
  std::string text;
  try {
    text = file_read((dir / kCommitted).string());
  } catch (const Error& e) {
    return e.what();
  }
  json record = json::parse(text, nullptr, /*allow_exceptions=*/false);
  // A record of lora before checksums holds the step alone: nothing to compare with.
  if (!record.is_object()) return "";
  if (!record.contains("files") || !record["files"].is_object()) return std::string(kCommitted) + " has no file list";
  for (const char* name : kStateFiles) {
    if (!record["files"].contains(name)) return std::string(kCommitted) + " does not list " + name;
    const json& want = record["files"][name];
    const fs::path f = dir / name;
    std::error_code ec;
    const uintmax_t size = fs::file_size(f, ec);
    if (ec) return std::string(name) + " is missing";
    if (!want.value("size", json()).is_number_unsigned() || size != want["size"].get<uintmax_t>())
      return std::string(name) + " has " + std::to_string(size) + " bytes, its commit record says " +
             want.value("size", json()).dump();
    std::string got;
    try {
      got = sha256_file(f.string());
    } catch (const Error& e) {
      return e.what();
    }
    if (got != want.value("sha256", std::string()))
      return std::string(name) + " does not match its SHA-256 in the commit record (the file was changed or damaged)";
  }
  return "";
}

std::string train_state_latest_intact(const std::string& path, std::vector<std::string>* notes) {
  const fs::path p(path);
  std::vector<fs::path> all;
  if (fs::exists(p / kCommitted)) {
    all.push_back(p);
  } else {
    for (const fs::path& root : {p / "checkpoints", p}) {
      all = committed(root);
      if (!all.empty()) break;
    }
  }
  std::vector<std::string> damaged;
  for (size_t i = all.size(); i-- > 0;) {
    const std::string why = train_state_verify(all[i].string());
    if (why.empty()) {
      for (const auto& d : damaged) notes->push_back("checkpoint " + d + "; resuming from the older " + all[i].string());
      return all[i].string();
    }
    damaged.push_back(all[i].string() + " is damaged: " + why);
  }
  if (!damaged.empty()) {
    // One damaged checkpoint on the first line, so that a one-line summary (reproduce_*.sh's note) names it.
    std::string msg = "no intact committed checkpoint under '" + path + "':";
    if (damaged.size() == 1) msg += " " + damaged[0];
    for (size_t i = 0; damaged.size() > 1 && i < damaged.size(); ++i) msg += "\n  " + damaged[i];
    fail_runtime(msg, "restore the files from a backup, or start the run again without --resume (output.overwrite: true)");
  }
  return "";
}

namespace {

// Byte equality of two regular files; beyond 1 GiB, the size and the first and last MiB.
bool same_file(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(a, ec);
  if (ec || size != fs::file_size(b, ec) || ec) return false;
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  constexpr uintmax_t kWhole = uintmax_t(1) << 30, kEnds = uintmax_t(1) << 20;
  std::vector<char> ba(1 << 16), bb(1 << 16);
  auto equal_from = [&](uintmax_t at, uintmax_t n) {
    fa.seekg(std::streamoff(at));
    fb.seekg(std::streamoff(at));
    while (n > 0) {
      const std::streamsize k = std::streamsize(std::min<uintmax_t>(n, ba.size()));
      if (!fa.read(ba.data(), k) || !fb.read(bb.data(), k)) return false;
      if (std::memcmp(ba.data(), bb.data(), size_t(k)) != 0) return false;
      n -= uintmax_t(k);
    }
    return true;
  };
  if (size <= kWhole) return equal_from(0, size);
  return equal_from(0, kEnds) && equal_from(size - kEnds, kEnds);
}

// A model or tokenizer directory: the same regular files by name and size, the small ones (config,
// tokenizer files) byte for byte; weights are compared by size only.
bool same_dir(const fs::path& a, const fs::path& b) {
  auto files = [](const fs::path& d) {
    std::map<std::string, uintmax_t> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(d, ec))
      if (e.is_regular_file(ec)) out[e.path().filename().string()] = e.file_size(ec);
    return out;
  };
  const auto fa = files(a), fb = files(b);
  if (fa != fb) return false;
  for (const auto& [name, size] : fa)
    if (size <= (uintmax_t(16) << 20) && !same_file(a / name, b / name)) return false;
  return true;
}

}  // namespace

std::vector<std::string> resume_recipe_check(const Recipe& now, const std::string& ckpt_dir,
                                             const std::string& resume_arg) {
  const fs::path stored_path = fs::path(ckpt_dir) / "recipe.yaml";
  std::error_code ec;
  if (!fs::is_regular_file(stored_path, ec))
    return {"note: " + stored_path.string() + " is missing: the recipe could not be compared with the checkpoint's"};
  const Recipe then = recipe_load(stored_path.string());
  // Keys that may change when a run resumes (where and how it runs, how it reports), and those that
  // change only its length.
  static const std::set<std::string> free_keys = {
      "model.device", "model.dtype", "train.precision", "train.recompute", "train.eval_every", "train.eval_batches",
      "data.eval", "data.cache_dir", "lora.init_from", "train.nonfinite", "train.nonfinite_skips"};
  static const std::set<std::string> free_sections = {"eval", "output", "log"};
  static const std::set<std::string> length_keys = {"train.max_steps", "train.epochs"};
  std::vector<std::string> notes, problems;
  for (const RecipeDifference& d : recipe_differences(now, then)) {
    const std::string section = d.key.substr(0, d.key.find('.'));
    if (free_keys.count(d.key) || free_sections.count(section)) continue;
    if (length_keys.count(d.key)) {
      notes.push_back("resuming with " + d.key + " " + d.a + " (the checkpoint's run had " + d.b +
                      "): the run's length and its learning-rate schedule follow the new value");
      continue;
    }
    if (d.kind == FieldKind::path_in && !d.a.empty() && !d.b.empty()) {
      const fs::path was(d.b), is(d.a);
      if (!fs::exists(was, ec)) {
        notes.push_back(d.key + " is now " + d.a + "; the checkpoint ran with " + d.b +
                        ", which no longer exists: taken as the same " + (d.key == "data.train" ? "data" : "files") +
                        ", moved");
        continue;
      }
      const bool same = fs::is_directory(was, ec) ? fs::is_directory(is, ec) && same_dir(was, is)
                                                 : fs::is_regular_file(is, ec) && same_file(was, is);
      if (same) continue;
      problems.push_back(d.key + ": now " + d.a + ", the checkpoint ran with " + d.b + " (other content)");
      continue;
    }
    problems.push_back(d.key + ": now " + (d.a.empty() ? "\"\"" : d.a) + ", the checkpoint ran with " +
                       (d.b.empty() ? "\"\"" : d.b));
  }
  if (!problems.empty()) {
    std::string msg = "--resume " + resume_arg + ": this recipe differs from the one the checkpoint ran with (" +
                      stored_path.string() + "):";
    for (const auto& p : problems) msg += "\n  " + p;
    fail_usage(msg, "resume with the first run's recipe and --set options, or exactly as it ran: lora train " +
                        stored_path.string() + " --resume " + resume_arg);
  }
  return notes;
}

void train_state_load(const std::string& ckpt_dir, Model& model, AdamW& opt, TrainProgress& p) {
  const fs::path dir(ckpt_dir);
  if (!fs::exists(dir / kCommitted))
    fail_runtime("'" + ckpt_dir + "' is not a committed checkpoint (no " + kCommitted + " record)",
                 "pass the run's output directory to --resume; the newest committed checkpoint is used");
  json state = json_read_file((dir / "state.json").string());
  if (state.value("version", 0) != kStateVersion)
    fail_runtime("'" + (dir / "state.json").string() + "' has state version " + state.value("version", json()).dump() +
                 ", this lora reads version " + std::to_string(kStateVersion));
  const std::string tpath = (dir / "trainable.safetensors").string();
  auto params = read_all(tpath);
  std::map<std::string, Tensor*> by_name;
  for (auto& kv : params) by_name[kv.first] = &kv.second;
  Backend& be = model.backend();
  for (auto& t : model.trainable()) {
    auto it = by_name.find(t.name);
    if (it == by_name.end())
      fail_runtime("checkpoint '" + tpath + "' has no tensor '" + t.name + "'",
                   "resume with the same lora section (targets, r, layers) as the run that wrote it");
    if (it->second->numel() != t.master->numel())
      fail_runtime("checkpoint '" + tpath + "': '" + t.name + "' has shape " + it->second->shape_str() + ", expected " +
                   t.master->shape_str(), "resume with the same recipe as the run that wrote it");
    be.upload(*t.master, *it->second);
  }
  model.sync_values();
  opt.state_import(read_all((dir / "optimizer.safetensors").string()), (dir / "optimizer.safetensors").string());
  opt.set_updates(state.at("optimizer_updates").get<int64_t>());
  p.step = state.at("step").get<int64_t>();
  p.epoch = state.at("epoch").get<int64_t>();
  p.cursor = state.at("cursor").get<int64_t>();
  p.micro_steps = state.at("micro_steps").get<int64_t>();
  p.tokens_seen = state.at("tokens_seen").get<int64_t>();
  p.seed = state.at("seed").get<uint64_t>();
  p.loss_scale = state.at("loss_scale").get<double>();
  p.good_steps = state.at("good_steps").get<int64_t>();
  p.first_eval_loss = state.value("first_eval_loss", -1.0);
  p.train_data_hash = state.value("train_data_hash", std::string());
}

}  // namespace lora
