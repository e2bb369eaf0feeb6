// libFuzzer harness: a checkpoint's config.json (strict JSON, then the family mappers). A config that maps
// is written back (model_config_to_json) and must map again to the same shape.
#include "core/base/fsutil.h"
#include "core/formats/model_config.h"
#include "tests/fuzz/fuzz_common.h"

using namespace lora;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  lora_fuzz::expect_ok_or_error([&] {
    ModelConfig c = model_config_from_json(json_parse_strict(text, "config.json"), "config.json");
    ModelConfig back = model_config_from_json(model_config_to_json(c), "config.json (written back)");
    if (back.family != c.family || back.n_layer != c.n_layer || back.n_head != c.n_head ||
        back.n_kv_head != c.n_kv_head || back.d_model != c.d_model || back.d_ff != c.d_ff ||
        back.head_dim != c.head_dim || back.vocab_size != c.vocab_size || back.norm != c.norm ||
        back.pos != c.pos || back.act != c.act || back.post_norm != c.post_norm || back.causal != c.causal ||
        back.tied_head != c.tied_head || back.sliding_window != c.sliding_window ||
        back.sliding_layers != c.sliding_layers)
      __builtin_trap();
  });
  return 0;
}
