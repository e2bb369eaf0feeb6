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
//   METEOR is not computed: it needs METEOR 1.5's WordNet synonyms, stemmer and paraphrase tables. Write
//   the files with e2e_files_write and run the official scorer on them.
// Multiple references: references[i] holds every reference of prediction i (at least one).
//
// GLUE metrics follow scikit-learn and SciPy: accuracy, binary F1 with positive class 1, Matthews
// correlation (0 when undefined, as sklearn), Pearson r, Spearman rho (Pearson r of average ranks, ties
// sharing the mean rank, as scipy.stats.spearmanr). Pearson and Spearman are NaN for constant input.
//
// Inputs of different lengths or empty inputs are lora::Error (EXIT_CODE_RUNTIME) naming the metric.
#pragma once
#include <cstdint>
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
  int64_t segments = 0;
  int64_t references = 0;
};
TextMetrics metrics_text(const std::vector<std::string>& predictions, const References& references);

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
