// See output_dir.h.
#include "core/commands/output_dir.h"

#include <filesystem>

#include "core/base/error.h"

namespace lora {

namespace fs = std::filesystem;

void output_path_check(const std::string& out, bool overwrite, const std::vector<std::string>& inputs) {
  std::error_code ec;
  if (out.empty()) fail_usage("--out is empty", "name the output path");
  for (const auto& in : inputs)
    if (!in.empty() && fs::exists(out, ec) && fs::equivalent(out, in, ec))
      fail_usage("--out '" + out + "' is one of the inputs ('" + in + "')", "write the output somewhere else");
  if (!fs::exists(out, ec)) return;
  if (!overwrite)
    fail_usage("output '" + out + "' already exists", "pass --overwrite to replace it, or choose another --out");
  if (fs::is_directory(out, ec) && !fs::is_empty(out, ec) && !fs::exists(fs::path(out) / "config.json", ec) &&
      !fs::exists(fs::path(out) / "adapter_config.json", ec))
    fail_usage("output '" + out + "' is a non-empty directory that holds no config.json or adapter_config.json; "
               "lora will not delete it, even with --overwrite", "choose another --out");
}

std::string output_tmp_dir(const std::string& out) {
  fs::path p = fs::path(out);
  if (p.filename().empty()) p = p.parent_path();
  return (p.parent_path() / (p.filename().string() + ".lora-tmp")).string();
}

void output_dir_install(const std::string& tmp_dir, const std::string& out) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    fs::remove_all(out, ec);
    if (ec) fail_runtime("cannot remove the existing output '" + out + "': " + ec.message());
  }
  fs::rename(tmp_dir, out, ec);
  if (ec) fail_runtime("cannot move '" + tmp_dir + "' to '" + out + "': " + ec.message());
}

}  // namespace lora
