// METEOR against pycocoevalcap's Meteor (tests/fixtures/metrics, made by scripts/make_metric_fixtures.py):
// the same jar run on our PTB tokenisation must give the numbers pycocoevalcap got after Stanford's
// PTBTokenizer. The jar prints every score as a full Java double (Double.toString, which reads back to
// the same double), so equal input gives equal numbers: the tolerance is 1e-12, not the 1e-4 of the
// other metrics. Also: references grouped per segment (a segment's score is its best reference's), the
// answers kept in segment order, and one Java process serving several corpora.
//
// Needs Java and METEOR 1.5's jar: $LORA_METEOR_JAR, else the jar of an installed pycocoevalcap. Without
// them the suite prints "skipped: <why>" and exits 77, which ctest reports as skipped.
#include <doctest/doctest.h>

#include "tests/test_suite.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/metrics.h"
#include "meteor_test_util.h"
#include "scorer_files.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using nlohmann::json;

namespace {

std::string g_jar;
const std::string DIR = std::string(LORA_FIXTURES) + "/metrics";

// One Java process for every test case (the JVM and the paraphrase table load in ~20 s).
MeteorScorer& scorer() {
  static MeteorScorer s(g_jar);
  return s;
}

}  // namespace

TEST_CASE("METEOR equals pycocoevalcap's on the fixture corpus, segment by segment") {
  const std::vector<std::string> p = lora_test::scorer_read_predictions(DIR + "/predictions.txt");
  const References r = lora_test::scorer_read_references(DIR + "/references.txt");
  const json v = json::parse(lora_test::scorer_file_text(DIR + "/reference_values.json"));
  REQUIRE(p.size() == 50);
  REQUIRE(r.size() == 50);
  size_t calls = 0;
  MeteorScores m = scorer().score(p, r, [&](size_t, size_t) { ++calls; });
  CHECK(calls == 51);
  const double expected = v["meteor_coco"].get<double>();
  INFO("METEOR ours " << m.corpus << ", pycocoevalcap " << expected << ", difference " << m.corpus - expected);
  CHECK(std::fabs(m.corpus - expected) <= 1e-12);
  const auto segments = v["meteor_coco_segments"].get<std::vector<double>>();
  REQUIRE(m.segments.size() == segments.size());
  double worst = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    worst = std::max(worst, std::fabs(m.segments[i] - segments[i]));
    CHECK_MESSAGE(std::fabs(m.segments[i] - segments[i]) <= 1e-12,
                  "segment " << i << ": ours " << m.segments[i] << ", pycocoevalcap " << segments[i]);
  }
  MESSAGE("METEOR " << m.corpus << " (pycocoevalcap " << expected << "); largest segment difference " << worst);
  CHECK(m.segments[3] == 0.0);  // the empty prediction
  CHECK(m.segments[11] == 1.0);  // an exact copy of one of its references

  // A second corpus through the same process: the first 10 groups alone.
  std::vector<std::string> p10(p.begin(), p.begin() + 10);
  References r10(r.begin(), r.begin() + 10);
  MeteorScores m10 = scorer().score(p10, r10);
  CHECK(std::fabs(m10.corpus - v["first10"]["meteor_coco"].get<double>()) <= 1e-12);
  for (size_t i = 0; i < 10; ++i) CHECK(m10.segments[i] == m.segments[i]);
}

TEST_CASE("references are grouped per segment, and scores come back in segment order") {
  const std::vector<std::string> p = lora_test::scorer_read_predictions(DIR + "/predictions.txt");
  const References r = lora_test::scorer_read_references(DIR + "/references.txt");
  // Every reference of segments with several, each as a segment of its own, then the groups in reverse.
  std::vector<std::string> preds;
  References refs;
  std::vector<size_t> picked;
  for (size_t i = 0; i < p.size() && picked.size() < 6; ++i) {
    if (r[i].size() < 3 || p[i].empty()) continue;
    picked.push_back(i);
    for (const auto& ref : r[i]) {
      preds.push_back(p[i]);
      refs.push_back({ref});
    }
  }
  REQUIRE(picked.size() == 6);
  for (auto it = picked.rbegin(); it != picked.rend(); ++it) {
    preds.push_back(p[*it]);
    refs.push_back(r[*it]);
  }
  MeteorScores m = scorer().score(preds, refs);
  REQUIRE(m.segments.size() == preds.size());
  // METEOR 1.5 scores a segment against each of its references and keeps the best.
  size_t single = 0;
  std::vector<double> best;
  for (size_t i : picked) {
    double b = 0;
    for (size_t k = 0; k < r[i].size(); ++k) b = std::max(b, m.segments[single++]);
    best.push_back(b);
  }
  for (size_t k = 0; k < picked.size(); ++k) {
    const double group = m.segments[single + picked.size() - 1 - k];
    CHECK_MESSAGE(group == best[k], "segment " << picked[k] << ": with all references " << group
                                                << ", best single reference " << best[k]);
  }
  // The references differ enough that grouping matters: not every single reference scores the best.
  size_t below = 0;
  single = 0;
  for (size_t k = 0; k < picked.size(); ++k)
    for (size_t j = 0; j < r[picked[k]].size(); ++j) below += m.segments[single++] < best[k];
  CHECK(below > picked.size());
}

bool meteor_present(std::string* why) {
  g_jar = meteor_test_jar(why);
  if (g_jar.empty()) return false;
  std::printf("METEOR jar: %s\n", g_jar.c_str());
  return true;
}
LORA_TEST_REQUIRES(meteor_present);

}  // namespace
