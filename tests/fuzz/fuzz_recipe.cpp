// libFuzzer harness: the YAML recipe parser. Any input is parsed with and without collecting key problems
// and validated; a recipe that parses is written back as YAML (recipe_to_yaml), and that text must parse
// to an equal recipe, as `lora train` relies on when it stores RUN/recipe.yaml for --resume.
#include <cstdio>

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
    if (back != r) {  // the stored recipe would resume a different run
      for (const RecipeDifference& d : recipe_differences(r, back))
        std::fprintf(stderr, "written back, %s changed: %s -> %s\n", d.key.c_str(), d.a.c_str(), d.b.c_str());
      std::fprintf(stderr, "the recipe as written back:\n%s\n", yaml.c_str());
      __builtin_trap();
    }
    recipe_validate(r);
  });
  return 0;
}
