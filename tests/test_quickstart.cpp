// The embedded default learns: `lora train configs/quickstart.yaml` (CPU, a few minutes) must bring the
// held-out loss to at most half of its value before training (issue 2), and its adapter must load back.
#include <doctest/doctest.h>

#include <cstdio>

#include "core/adapter.h"
#include "core/checkpoint.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

namespace fs = std::filesystem;

TEST_CASE("the quickstart halves its held-out loss") {
  auto d = scratch_dir("quickstart");
  CliResult r = lora_run("train " LORA_SOURCE_DIR "/configs/quickstart.yaml --device cpu --output " + (d / "run").string() +
                         " --set log.progress=plain --set data.cache_dir=" + (d / "cache").string());
  INFO(r.out);
  REQUIRE(r.code == 0);
  const auto at = r.out.find("held-out loss: ");
  REQUIRE(at != std::string::npos);
  double before = 0, after = 0;
  REQUIRE(std::sscanf(r.out.c_str() + at, "held-out loss: %lf before training, %lf after", &before, &after) == 2);
  MESSAGE("quickstart held-out loss " << before << " -> " << after);
  CHECK(before > 2.0);
  CHECK(after <= 0.5 * before);
  CHECK(contains(r.out, "generated : "));
  auto be = lora::backend_cpu_create();
  auto ck = lora::Checkpoint::open(LORA_SOURCE_DIR "/data/quickstart/base-model");
  lora::Model m(*be, ck.config());
  m.load_base(ck);
  lora::adapter_load(m, (d / "run").string());
  CHECK(!m.trainable().empty());
  fs::remove_all(d);
}

}  // namespace
