// libFuzzer harness: the GGUF reader (`lora info` on a .gguf file and the export checks): header,
// metadata of every value type, nested arrays, tensor infos.
#include "core/formats/gguf_read.h"
#include "tests/fuzz/fuzz_common.h"

using namespace lora;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lora_fuzz::write_file("model.gguf", std::string(reinterpret_cast<const char*>(data), size));
  lora_fuzz::expect_ok_or_error([&] {
    GgufFile f = gguf_file_read(path);
    for (const GgufTensorInfo& t : f.tensors) gguf_type_name(t.type);
    f.metadata.dump();
  });
  return 0;
}
