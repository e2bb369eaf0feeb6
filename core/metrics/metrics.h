// Evaluation metrics: the E2E NLG challenge's text metrics and GLUE's classification/regression metrics.
//
// Text metrics follow the official E2E scorer (tuetschek/e2e-metrics, measure_scores.py), which runs two
// reference programs; we reimplement their formulas, quirks included, so our numbers equal theirs:
//   BLEU, NIST  mteval-v13a-sig.pl (NIST's mteval v13a as edited for E2E): its default ("non-international")
//               tokenisation, lowercased; corpus-level BLEU-4 with the brevity penalty taken from the
//               reference closest in length to each prediction (ties: the shorter), summed over segments,
//               and mteval's default smoothing (a zero n-gram match count counts as 1/2^k, k = 1, 2, ...
//               for successive zero orders); NIST-5 with information weights from n-gram counts over all
//               references of the test set, length penalty against total reference words / (non-empty
//               references / segments).
//   ROUGE-L     coco-caption's Rouge (Lin 2004, beta = 1.2): per segment, the LCS precision and recall
//               maximised separately over the references, F_beta of the two; averaged over segments.
//   CIDEr       coco-caption's Cider (Vedantam et al. 2015, the CIDEr-D variant: clipped tf-idf, Gaussian
//               length penalty sigma = 6, x10): n = 1..4, document frequency over the reference sets of
//               the test set, idf = log(segments) - log(max(1, df)); the "length" in the penalty is the
//               number of bigrams, as in that code.
//   Both coco metrics read text after Stanford's PTBTokenizer (-lowerCase) with punctuation tokens
//   removed; ptb_tokenize approximates that tokenizer (exact on E2E-style, space-separated text; see its
//   comment for what it handles).
//   METEOR      METEOR 1.5 itself (Denkowski & Lavie 2014): its jar, with its stemmer, WordNet synonyms and
//               paraphrase table, run as coco-caption's meteor.py runs it (`java -jar -Xmx2G meteor-1.5.jar
//               - - -stdio -l en -norm`) on the PTB-tokenized text; core/metrics/meteor.cpp. It needs Java
//               and the jar, which pip's pycocoevalcap carries (meteor_jar_hint); without them it is not
//               computed.
// Multiple references: references[i] holds every reference of prediction i (at least one).
//
// GLUE metrics follow scikit-learn and SciPy: accuracy, binary F1 with positive class 1, Matthews
// correlation (0 when undefined, as sklearn), Pearson r, Spearman rho (Pearson r of average ranks, ties
// sharing the mean rank, as scipy.stats.spearmanr). Pearson and Spearman are NaN for constant input.
//
// Inputs of different lengths or empty inputs are lora::Error (EXIT_CODE_RUNTIME) naming the metric.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lora {

using References = std::vector<std::vector<std::string>>;  // (segments) x (references of the segment)

// mteval-v13a's tokenisation (its `tokenization` sub, lowercasing on), split into words.
std::vector<std::string> mteval_tokenize(const std::string& text);
// coco-caption's tokenisation: PTBTokenizer -lowerCase, then the punctuation tokens removed.
std::vector<std::string> ptb_tokenize(const std::string& text);

double metric_bleu(const std::vector<std::string>& predictions, const References& references);
double metric_nist(const std::vector<std::string>& predictions, const References& references);
double metric_rouge_l(const std::vector<std::string>& predictions, const References& references);
double metric_cider(const std::vector<std::string>& predictions, const References& references);

struct TextMetrics {
  double bleu = 0;     // 0..1 (the official scorer prints it so; papers print x100)
  double nist = 0;
  double rouge_l = 0;  // 0..1
  double cider = 0;
  double meteor = NAN; // 0..1; NaN when not computed (no METEOR jar configured)
  int64_t segments = 0;
  int64_t references = 0;
};
TextMetrics metrics_text(const std::vector<std::string>& predictions, const References& references);

// ---- METEOR (core/metrics/meteor.cpp) ----
//
// The jar is METEOR 1.5's meteor-1.5.jar with data/paraphrase-en.gz beside it, as pip's pycocoevalcap
// (and e2e-metrics, which vendors the same files) installs them. Protocol (meteor.py): one line
// "SCORE ||| ref 1 ||| ... ||| ref n ||| hypothesis" per segment, answered by a line of sufficient
// statistics; then "EVAL ||| stats 1 ||| ... ||| stats N", answered by N segment scores and the corpus
// score (from the pooled statistics, not the mean of the segments), one a line, as full Java doubles.
// The texts are ptb_tokenize'd and joined by spaces; the hypothesis loses any "|||" and has double
// spaces collapsed, as meteor.py does. Errors are lora::Error (EXIT_CODE_RUNTIME) naming what was
// expected and what was found: a missing, unreadable or non-jar file, a missing paraphrase table, no
// java ($JAVA_HOME/bin/java, else `java` on PATH), java exiting (its stderr's end is quoted; out of
// memory with -Xmx2G is named), an answer that does not parse, or no answer for 5 minutes. The child is always reaped; no temp files.

struct MeteorScores {
  double corpus = 0;             // the jar's final score over every segment
  std::vector<double> segments;  // one per prediction, in order
};

// The jar to use: `configured` (eval.meteor_jar) when not empty, else $LORA_METEOR_JAR, else "". `source`
// receives where it came from ("eval.meteor_jar", "LORA_METEOR_JAR" or "").
std::string meteor_jar_find(const std::string& configured, std::string* source = nullptr);
// How to get the jar and point lora at it (pip install pycocoevalcap; the jar's path inside it).
std::string meteor_jar_hint();
// Checks, without starting Java, that `jar` can run as METEOR: a readable regular file that is a zip,
// data/paraphrase-en.gz beside it, and java: $JAVA_HOME/bin/java when JAVA_HOME is set, else `java` on PATH.
// Returns java's path. `source` names the setting in messages.
std::string meteor_jar_check(const std::string& jar, const std::string& source = "");

// One `java -jar` process for any number of score() calls (the JVM and the paraphrase table take
// seconds to load). The destructor closes java's input, waits briefly for it to exit, else kills it.
class MeteorScorer {
 public:
  explicit MeteorScorer(const std::string& jar, const std::string& source = "");  // checks, then starts java
  ~MeteorScorer();
  MeteorScorer(const MeteorScorer&) = delete;
  MeteorScorer& operator=(const MeteorScorer&) = delete;
  // progress(done, total) after each segment's statistics (done = 0 before the first, while Java loads).
  MeteorScores score(const std::vector<std::string>& predictions, const References& references,
                     const std::function<void(size_t done, size_t total)>& progress = {});

 private:
  struct Process;
  std::unique_ptr<Process> p_;
};

// One process, one score() call.
MeteorScores metric_meteor(const std::vector<std::string>& predictions, const References& references,
                           const std::string& jar, const std::function<void(size_t, size_t)>& progress = {});

// The official scorer's input files: predictions one a line; references in groups, one a line, groups
// separated by a blank line, in the predictions' order. Newlines inside a text become spaces.
void e2e_files_write(const std::string& predictions_path, const std::string& references_path,
                     const std::vector<std::string>& predictions, const References& references);

// GLUE. Labels are class ids; F1 and Matthews take binary labels (0/1).
double metric_accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
double metric_f1(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
double metric_matthews(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);
double metric_pearson(const std::vector<double>& x, const std::vector<double>& y);
double metric_spearman(const std::vector<double>& x, const std::vector<double>& y);
// Average ranks, 1-based, ties sharing their mean rank (scipy.stats.rankdata, method "average").
std::vector<double> metric_ranks(const std::vector<double>& x);

}  // namespace lora
