// libFuzzer harness: safetensors reading (header, offsets, dtypes) and the conversions to f32 and i32 that
// loading a checkpoint or an adapter runs on every tensor.
#include "core/formats/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

using namespace lora;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lora_fuzz::write_file("model.safetensors", std::string(reinterpret_cast<const char*>(data), size));
  lora_fuzz::expect_ok_or_error([&] {
    SafetensorsFile f = SafetensorsFile::open(path);
    for (const SafetensorsEntry& e : f.entries()) {
      if (f.find(e.name) != &e) __builtin_trap();
      lora_fuzz::expect_ok_or_error([&] { f.to_f32(e); });
      lora_fuzz::expect_ok_or_error([&] { f.to_i32(e); });
    }
  });
  return 0;
}
