// See model_init.h.
#include "core/model_init.h"

#include <filesystem>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/model.h"
#include "core/session.h"

namespace lora {

void model_init_write(const std::string& config_path, const std::string& out_dir, const std::string& tokenizer_dir,
                      uint64_t seed) {
  ModelConfig cfg = model_config_from_json(json_read_file(config_path), config_path);
  auto be = backend_cpu_create();
  Model m(*be, cfg);
  m.init_random(seed);
  dir_ensure_writable(out_dir, "output directory");
  checkpoint_write(out_dir, cfg, m.export_base(), DType::f32, 0);
  if (!tokenizer_dir.empty()) tokenizer_files_copy(tokenizer_dir, out_dir);
}

}  // namespace lora
