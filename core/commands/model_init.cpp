// See model_init.h.
#include "core/commands/model_init.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/formats/checkpoint.h"
#include "core/model/model.h"
#include "core/text/tokenizer.h"

namespace lora {

void model_init_write(const std::string& config_path, const std::string& out_dir, const std::string& tokenizer_dir,
                      uint64_t seed) {
  const nlohmann::json source = json_read_file(config_path);
  ModelConfig cfg = model_config_from_json(source, config_path);
  auto be = backend_cpu_create();
  Model m(*be, cfg);
  m.init_random(seed);
  // A classifier's config (RoBERTa's) whose architectures name no sequence classifier (RobertaForMaskedLM, as roberta-base
  // is published) gets an encoder without classifier.* weights, as that checkpoint has: training then
  // starts a head of model.num_labels outputs, as transformers does.
  bool headless = false;
  if (cfg.head == HeadKind::classifier && source.contains("architectures") && source["architectures"].is_array()) {
    headless = true;
    for (const auto& a : source["architectures"])
      if (a.is_string() && a.get<std::string>().find("ForSequenceClassification") != std::string::npos) headless = false;
  }
  std::vector<std::pair<std::string, Tensor>> tensors = m.export_base();
  if (headless)
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                 [](const auto& t) { return t.first.rfind("classifier.", 0) == 0; }),
                  tensors.end());
  dir_ensure_writable(out_dir, "output directory");
  checkpoint_write(out_dir, cfg, tensors, DType::f32, 0);
  if (headless) {  // the config says what the weights are
    const std::string path = out_dir + "/config.json";
    nlohmann::json written = json_read_file(path);
    written["architectures"] = source["architectures"];
    file_write_atomic(path, written.dump(2) + "\n");
  }
  if (!tokenizer_dir.empty()) tokenizer_files_copy(tokenizer_dir, out_dir);
}

}  // namespace lora
