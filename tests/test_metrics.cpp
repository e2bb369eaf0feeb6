// Metrics against reference implementations (tests/fixtures/metrics, made by
// scripts/make_metric_fixtures.py with the official E2E scorer, sacrebleu, scikit-learn and SciPy) and
// small hand-checkable cases. Tolerances as the issue fixes them: BLEU and ROUGE-L 1e-4, NIST and CIDEr
// 1e-3 (ours agree far closer; the slack covers library versions).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/metrics.h"
#include "scorer_files.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string DIR = std::string(LORA_FIXTURES) + "/metrics";

using lora_test::scorer_read_predictions;
using lora_test::scorer_read_references;
std::string file_read(const std::string& path) { return lora_test::scorer_file_text(path); }

std::string join(const std::vector<std::string>& w) {
  std::string s;
  for (size_t i = 0; i < w.size(); ++i) s += (i ? " " : "") + w[i];
  return s;
}

struct Corpus {
  std::vector<std::string> predictions;
  References references;
  json values;
};

const Corpus& corpus() {
  static Corpus c = [] {
    Corpus x;
    x.predictions = scorer_read_predictions(DIR + "/predictions.txt");
    x.references = scorer_read_references(DIR + "/references.txt");
    x.values = json::parse(file_read(DIR + "/reference_values.json"));
    return x;
  }();
  return c;
}

}  // namespace

TEST_CASE("fixture files read as the official scorer reads them") {
  const Corpus& c = corpus();
  REQUIRE(c.predictions.size() == c.values["segments"].get<size_t>());
  REQUIRE(c.references.size() == c.predictions.size());
  size_t n = 0;
  for (const auto& g : c.references) n += g.size();
  CHECK(n == c.values["references"].get<size_t>());
}

TEST_CASE("BLEU and NIST equal the official scorer's mteval-v13a-sig.pl") {
  const Corpus& c = corpus();
  const double bleu = metric_bleu(c.predictions, c.references);
  const double nist = metric_nist(c.predictions, c.references);
  INFO("BLEU ours " << bleu << ", mteval " << c.values["bleu_mteval_perl"] << ", sacrebleu "
                    << c.values["bleu_sacrebleu"]);
  CHECK(std::fabs(bleu - c.values["bleu_mteval_perl"].get<double>()) < 1e-4);
  INFO("NIST ours " << nist << ", mteval " << c.values["nist_mteval_perl"]);
  CHECK(std::fabs(nist - c.values["nist_mteval_perl"].get<double>()) < 1e-3);

  // A smaller test set: other information weights, fewer references per segment.
  std::vector<std::string> p(c.predictions.begin(), c.predictions.begin() + 10);
  References r(c.references.begin(), c.references.begin() + 10);
  const json& v = c.values["first10"];
  CHECK(std::fabs(metric_bleu(p, r) - v["bleu_mteval_perl"].get<double>()) < 1e-4);
  CHECK(std::fabs(metric_bleu(p, r) - v["bleu_sacrebleu"].get<double>()) < 1e-4);
  CHECK(std::fabs(metric_nist(p, r) - v["nist_mteval_perl"].get<double>()) < 1e-3);
}

TEST_CASE("ROUGE-L and CIDEr equal coco-caption's after its PTB tokenizer") {
  const Corpus& c = corpus();
  const double rouge = metric_rouge_l(c.predictions, c.references);
  const double cider = metric_cider(c.predictions, c.references);
  INFO("ROUGE-L ours " << rouge << ", coco " << c.values["rouge_l_coco"]);
  CHECK(std::fabs(rouge - c.values["rouge_l_coco"].get<double>()) < 1e-4);
  INFO("CIDEr ours " << cider << ", coco " << c.values["cider_coco"]);
  CHECK(std::fabs(cider - c.values["cider_coco"].get<double>()) < 1e-3);

  std::vector<std::string> p(c.predictions.begin(), c.predictions.begin() + 10);
  References r(c.references.begin(), c.references.begin() + 10);
  const json& v = c.values["first10"];
  CHECK(std::fabs(metric_rouge_l(p, r) - v["rouge_l_coco"].get<double>()) < 1e-4);
  CHECK(std::fabs(metric_cider(p, r) - v["cider_coco"].get<double>()) < 1e-3);

  TextMetrics all = metrics_text(c.predictions, c.references);
  CHECK(all.bleu == doctest::Approx(metric_bleu(c.predictions, c.references)));
  CHECK(all.segments == 50);
}

TEST_CASE("tokenizers match Stanford's PTBTokenizer and mteval's tokenization line by line") {
  json tok = json::parse(file_read(DIR + "/tokenized.json"));
  const auto& texts = tok["texts"];
  const auto& ptb = tok["ptb"];
  REQUIRE(texts.size() == ptb.size());
  int mismatches = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string ours = join(ptb_tokenize(texts[i].get<std::string>()));
    if (ours != ptb[i].get<std::string>() && ++mismatches <= 5)
      FAIL_CHECK("PTB line " << i << ": '" << texts[i].get<std::string>() << "'\n  ours: " << ours
                             << "\n  java: " << ptb[i].get<std::string>());
  }
  CHECK(mismatches == 0);
  const auto& mt = tok["mteval_predictions"];
  for (size_t i = 0; i < mt.size(); ++i)
    CHECK_MESSAGE(join(mteval_tokenize(texts[i].get<std::string>())) == mt[i].get<std::string>(), "line " << i);
}

TEST_CASE("hand-checkable text cases") {
  // Identical prediction and reference: BLEU 1, ROUGE-L 1.
  std::vector<std::string> p = {"the cat sat on the mat today", "a small dog barked at the postman"};
  References r = {{"the cat sat on the mat today"}, {"a small dog barked at the postman"}};
  CHECK(metric_bleu(p, r) == doctest::Approx(1.0));
  CHECK(metric_rouge_l(p, r) == doctest::Approx(1.0));
  // Case and spacing do not matter to either tokenisation.
  CHECK(metric_bleu({"The Cat sat on the mat, today."}, {{"the cat sat on the mat , today ."}}) == doctest::Approx(1.0));
  // Empty predictions score 0 everywhere.
  std::vector<std::string> empty = {"", ""};
  CHECK(metric_bleu(empty, r) == 0.0);
  CHECK(metric_nist(empty, r) == 0.0);
  CHECK(metric_rouge_l(empty, r) == 0.0);
  CHECK(metric_cider(empty, r) == 0.0);
  // Brevity penalty: 3 of the closest reference's 6 words, all n-grams matching: exp(1 - 6/3).
  CHECK(metric_bleu({"a b c"}, {{"a b c d e f", "a b c d e f g h i j"}}) == doctest::Approx(std::exp(-1.0)));
  // The closest reference decides, the shorter on a tie: lengths 2 and 4 around 3 -> 2, no penalty.
  CHECK(metric_bleu({"a b c"}, {{"a b", "a b c d"}}) == doctest::Approx(1.0));
  // mteval's smoothing: 4 unigram matches, no bigram match -> p2 = 1/(2*3), p3 = 1/(4*2), p4 = 1/(8*1).
  CHECK(metric_bleu({"d c b a"}, {{"a b c d"}}) ==
        doctest::Approx(std::pow(1.0 * (1.0 / 6) * (1.0 / 8) * (1.0 / 8), 0.25)));
  // ROUGE-L by hand: LCS("a b c d e", "a c e x") = 3, P = 3/4, R = 3/5, F_1.2.
  const double P = 0.75, R = 0.6, b2 = 1.44;
  CHECK(metric_rouge_l({"a c e x"}, {{"a b c d e"}}) == doctest::Approx((1 + b2) * P * R / (R + b2 * P)));
  // PTB tokenisation details the coco metrics depend on.
  CHECK(join(ptb_tokenize("The Eagle's family-friendly (really), £20-25. Don't!")) ==
        "the eagle 's family-friendly -lrb- really -rrb- # 20-25 do n't");
  CHECK(join(mteval_tokenize("Price £20-25, rated 5.5 (of 10).")) == "price £20 - 25 , rated 5.5 ( of 10 ) .");
}

TEST_CASE("mismatched inputs are errors, not crashes") {
  CHECK_THROWS_AS(metric_bleu({"a"}, {}), Error);
  CHECK_THROWS_AS(metric_bleu({}, {}), Error);
  CHECK_THROWS_AS(metric_cider({"a"}, {{}}), Error);
  CHECK_THROWS_AS(metric_f1({1, 0}, {1}), Error);
  CHECK_THROWS_AS(metric_f1({2}, {1}), Error);
  CHECK_THROWS_AS(metric_pearson({}, {}), Error);
}

TEST_CASE("e2e files are written in the official scorer's format") {
  const fs::path dir = fs::temp_directory_path() / ("lora-metrics-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  e2e_files_write((dir / "p.txt").string(), (dir / "r.txt").string(), {"one\ntwo", "three"}, {{"a", "b"}, {"c"}});
  CHECK(file_read((dir / "p.txt").string()) == "one two\nthree\n");
  CHECK(file_read((dir / "r.txt").string()) == "a\nb\n\nc\n");
  CHECK(scorer_read_references((dir / "r.txt").string()) == References{{"a", "b"}, {"c"}});
  fs::remove_all(dir);
}

TEST_CASE("GLUE metrics equal scikit-learn and SciPy") {
  json g = json::parse(file_read(DIR + "/glue.json"));
  auto ints = [](const json& j) { return j.get<std::vector<int64_t>>(); };
  auto reals = [](const json& j) { return j.get<std::vector<double>>(); };
  const json& b = g["binary"];
  CHECK(metric_accuracy(ints(b["predictions"]), ints(b["labels"])) == doctest::Approx(b["accuracy"].get<double>()).epsilon(1e-12));
  CHECK(metric_f1(ints(b["predictions"]), ints(b["labels"])) == doctest::Approx(b["f1"].get<double>()).epsilon(1e-12));
  CHECK(metric_matthews(ints(b["predictions"]), ints(b["labels"])) == doctest::Approx(b["matthews"].get<double>()).epsilon(1e-12));
  const json& m = g["multiclass"];
  CHECK(metric_accuracy(ints(m["predictions"]), ints(m["labels"])) == doctest::Approx(m["accuracy"].get<double>()).epsilon(1e-12));
  CHECK(metric_matthews(ints(m["predictions"]), ints(m["labels"])) == doctest::Approx(m["matthews"].get<double>()).epsilon(1e-12));
  const json& r = g["regression"];
  CHECK(metric_pearson(reals(r["x"]), reals(r["y"])) == doctest::Approx(r["pearson"].get<double>()).epsilon(1e-10));
  CHECK(metric_spearman(reals(r["x"]), reals(r["y"])) == doctest::Approx(r["spearman"].get<double>()).epsilon(1e-10));
  CHECK(metric_ranks(reals(r["x"])) == reals(r["ranks_x"]));
}

TEST_CASE("GLUE edge cases follow sklearn and scipy") {
  CHECK(metric_ranks({3, 1, 3, 2}) == std::vector<double>{3.5, 1, 3.5, 2});
  CHECK(metric_f1({0, 0}, {0, 0}) == 0.0);                // no positives: 0, sklearn's zero_division
  CHECK(metric_matthews({1, 1, 1}, {1, 0, 1}) == 0.0);    // constant prediction: 0
  CHECK(metric_matthews({1, 0, 1, 0}, {1, 0, 1, 0}) == doctest::Approx(1.0));
  CHECK(metric_matthews({0, 1, 0, 1}, {1, 0, 1, 0}) == doctest::Approx(-1.0));
  CHECK(std::isnan(metric_pearson({1, 1, 1}, {1, 2, 3})));
  CHECK(metric_spearman({1, 2, 3, 4}, {10, 20, 30, 1000}) == doctest::Approx(1.0));
}

}  // namespace
