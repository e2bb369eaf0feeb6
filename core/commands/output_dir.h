// Output directories of `lora merge` and `lora export`: checked before anything is written, built in a
// sibling temporary directory, and moved into place only when complete.
#pragma once
#include <string>
#include <vector>

namespace lora {

// Refuses an existing path without overwrite (exit 2), a path that is the base or adapter directory,
// and, with overwrite, an existing non-empty directory that holds no config.json / adapter_config.json
// (never delete what does not look like our output).
void output_path_check(const std::string& out, bool overwrite, const std::vector<std::string>& inputs);
// Moves a completed temporary directory to out, replacing out (already checked) if it exists.
void output_dir_install(const std::string& tmp_dir, const std::string& out);
// The sibling temporary directory an output directory is built in.
std::string output_tmp_dir(const std::string& out);

}  // namespace lora
