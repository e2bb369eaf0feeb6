// libFuzzer harness: the YAML recipe parser. Any input is parsed with and without collecting key problems
// and validated; a recipe that parses is written back as YAML (recipe_to_yaml), and that text must parse
// to an equal recipe, as `lora train` relies on when it stores RUN/recipe.yaml for --resume.
#include "core/session/recipe.h"
#include "tests/fuzz/fuzz_common.h"

using namespace lora;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string source = (lora_fuzz::scratch_dir() / "recipe.yaml").string();
  lora_fuzz::expect_ok_or_error([&] {
    std::vector<Error> problems;
    recipe_parse(text, source, {}, &problems);
  });
  lora_fuzz::expect_ok_or_error([&] {
    Recipe r = recipe_parse(text, source);
    const std::string yaml = recipe_to_yaml(r, source);
    Recipe back = recipe_parse(yaml, source);
    if (back != r) __builtin_trap();  // the stored recipe would resume a different run
    recipe_validate(r);
  });
  return 0;
}
