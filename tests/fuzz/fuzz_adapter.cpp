// libFuzzer harness: reading a PEFT adapter directory (adapter_config.json, then adapter_model.safetensors,
// split at a "=====" line), as merge, export, eval and init_from do before anything else.
#include <filesystem>

#include "core/model/adapter.h"
#include "tests/fuzz/fuzz_common.h"

using namespace lora;
namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> parts = lora_fuzz::split_parts(data, size, 2);
  const fs::path dir = lora_fuzz::scratch_dir() / "adapter";
  fs::create_directories(dir);
  lora_fuzz::write_file("adapter/adapter_config.json", parts[0]);
  lora_fuzz::write_file("adapter/adapter_model.safetensors", parts[1]);
  lora_fuzz::expect_ok_or_error([&] {
    AdapterFile ad = adapter_file_read(dir.string());
    adapter_classifier_head(ad);
  });
  lora_fuzz::expect_ok_or_error([&] { adapter_base_name(dir.string()); });
  return 0;
}
