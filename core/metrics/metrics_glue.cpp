// GLUE's metrics (see metrics.h): accuracy, binary F1, Matthews correlation, Pearson and Spearman, with
// scikit-learn's and SciPy's conventions (sklearn.metrics.f1_score / matthews_corrcoef,
// scipy.stats.pearsonr / spearmanr / rankdata). Sums run in double, two-pass for the correlations.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "core/base/error.h"
#include "core/metrics/metrics.h"

namespace lora {

namespace {
template <class A, class B>
void check_pair(const char* metric, const std::vector<A>& a, const std::vector<B>& b) {
  if (a.size() != b.size())
    fail_runtime(std::string(metric) + ": " + std::to_string(a.size()) + " predictions but " +
                     std::to_string(b.size()) + " labels",
                 "give one prediction per example");
  if (a.empty()) fail_runtime(std::string(metric) + ": no examples to score");
}

void check_binary(const char* metric, const std::vector<int64_t>& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] != 0 && v[i] != 1)
      fail_runtime(std::string(metric) + ": label " + std::to_string(v[i]) + " at index " + std::to_string(i) +
                       " is not binary",
                   "binary F1 takes labels 0 and 1 (1 is the positive class)");
}
}  // namespace

double metric_accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_pair("accuracy", predictions, labels);
  int64_t hits = 0;
  for (size_t i = 0; i < labels.size(); ++i) hits += predictions[i] == labels[i];
  return double(hits) / double(labels.size());
}

// F1 = 2 tp / (2 tp + fp + fn); 0 when there is no positive at all (sklearn's zero_division default).
double metric_f1(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_pair("F1", predictions, labels);
  check_binary("F1", predictions);
  check_binary("F1", labels);
  int64_t tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    tp += predictions[i] == 1 && labels[i] == 1;
    fp += predictions[i] == 1 && labels[i] == 0;
    fn += predictions[i] == 0 && labels[i] == 1;
  }
  return tp == 0 ? 0.0 : 2.0 * double(tp) / double(2 * tp + fp + fn);
}

// Multiclass MCC from the confusion matrix (Gorodkin 2004, sklearn's form):
// (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)), c correct, s samples, p_k / t_k
// predicted / true counts of class k; 0 when the denominator is 0. Binary labels reduce to
// (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)).
double metric_matthews(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
  check_pair("Matthews correlation", predictions, labels);
  std::map<int64_t, double> p, t;
  double c = 0;
  const double s = double(labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    p[predictions[i]] += 1;
    t[labels[i]] += 1;
    c += predictions[i] == labels[i];
  }
  double pt = 0, pp = 0, tt = 0;
  for (const auto& kv : p) {
    pp += kv.second * kv.second;
    auto it = t.find(kv.first);
    if (it != t.end()) pt += kv.second * it->second;
  }
  for (const auto& kv : t) tt += kv.second * kv.second;
  const double den = std::sqrt((s * s - pp) * (s * s - tt));
  return den == 0 ? 0.0 : (c * s - pt) / den;
}

double metric_pearson(const std::vector<double>& x, const std::vector<double>& y) {
  check_pair("Pearson correlation", x, y);
  const double n = double(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0 || syy == 0) return NAN;
  return std::max(-1.0, std::min(1.0, sxy / std::sqrt(sxx * syy)));
}

std::vector<double> metric_ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> ranks(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    const double mean_rank = (double(i) + double(j)) / 2.0 + 1.0;  // positions i..j hold ranks i+1..j+1
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = mean_rank;
    i = j + 1;
  }
  return ranks;
}

double metric_spearman(const std::vector<double>& x, const std::vector<double>& y) {
  check_pair("Spearman correlation", x, y);
  return metric_pearson(metric_ranks(x), metric_ranks(y));
}

}  // namespace lora
