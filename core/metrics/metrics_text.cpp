// The E2E challenge's text metrics (see metrics.h for the sources). Formulas follow mteval-v13a-sig.pl
// (BLEU, NIST) and coco-caption's rouge.py and cider_scorer.py (ROUGE-L, CIDEr) as the official scorer
// tuetschek/e2e-metrics runs them; the code is ours.
#include "core/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <unordered_map>

#include "core/base/error.h"
#include "core/base/strings.h"

namespace lora {

namespace {

using Counts = std::unordered_map<std::string, int64_t>;

void check_inputs(const char* metric, const std::vector<std::string>& predictions, const References& references) {
  if (predictions.size() != references.size())
    fail_runtime(std::string(metric) + ": " + std::to_string(predictions.size()) + " predictions but " +
                     std::to_string(references.size()) + " reference groups",
                 "give one prediction per group of references");
  if (predictions.empty()) fail_runtime(std::string(metric) + ": no predictions to score");
  for (size_t i = 0; i < references.size(); ++i)
    if (references[i].empty())
      fail_runtime(std::string(metric) + ": prediction " + std::to_string(i + 1) + " has no reference");
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace((unsigned char)s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace((unsigned char)s[j])) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Every n-gram of orders 1..max_n, keys joined by single spaces (tokens hold no space), as mteval's
// Words2Ngrams and coco's precook build them.
Counts ngram_counts(const std::vector<std::string>& w, int max_n) {
  Counts c;
  for (size_t i = 0; i < w.size(); ++i) {
    std::string key;
    for (int n = 0; n < max_n && i + n < w.size(); ++n) {
      if (n) key += ' ';
      key += w[i + n];
      c[key] += 1;
    }
  }
  return c;
}

int ngram_order(const std::string& key) { return 1 + int(std::count(key.begin(), key.end(), ' ')); }

// mteval's per-segment statistics against its references (score_segment).
struct SegmentStats {
  Counts tst;                 // the prediction's n-grams
  Counts ref_max;             // each n-gram's largest count in any one reference
  int64_t tst_words = 0;
  int64_t ref_words = 0;      // all references together
  int64_t closest_ref = 0;    // the reference length BLEU's brevity penalty uses
  int64_t nrefs = 0;          // non-empty references
};

SegmentStats segment_stats(const std::vector<std::string>& tst, const std::vector<std::vector<std::string>>& refs,
                           int max_n) {
  SegmentStats s;
  s.tst = ngram_counts(tst, max_n);
  s.tst_words = int64_t(tst.size());
  bool first = true;
  for (const auto& r : refs) {
    const int64_t len = int64_t(r.size());
    if (len > 0) s.nrefs += 1;
    for (const auto& kv : ngram_counts(r, max_n)) {
      int64_t& m = s.ref_max[kv.first];
      m = std::max(m, kv.second);
    }
    s.ref_words += len;
    // brevity_penalty_closest: the closest length, the shorter on a tie; empty references after the
    // first are skipped, the first one sets the starting value whatever its length.
    if (first) {
      s.closest_ref = len;
      first = false;
    } else if (len > 0) {
      const int64_t d_new = std::llabs(s.tst_words - len), d_cur = std::llabs(s.tst_words - s.closest_ref);
      if (d_new < d_cur || (d_new == d_cur && len < s.closest_ref)) s.closest_ref = len;
    }
  }
  return s;
}

std::vector<std::vector<std::string>> tokenize_all(const std::vector<std::string>& texts,
                                                   std::vector<std::string> (*tok)(const std::string&)) {
  std::vector<std::vector<std::string>> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.push_back(tok(t));
  return out;
}

// Length of the longest common subsequence of two token lists.
int64_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<int64_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// ---- PTB tokenisation (coco-caption) ----

// Lowercases ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic capitals; other bytes pass through.
std::string utf8_lower(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
      out += char(c >= 'A' && c <= 'Z' ? c + 32 : c);
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0 && i + 1 < s.size() && ((unsigned char)s[i + 1] & 0xC0) == 0x80) {
      uint32_t cp = ((c & 0x1Fu) << 6) | ((unsigned char)s[i + 1] & 0x3Fu);
      if ((cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) || (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2) ||
          (cp >= 0x410 && cp <= 0x42F))
        cp += 0x20;
      else if (cp >= 0x400 && cp <= 0x40F)
        cp += 0x50;
      else if (((cp >= 0x100 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177)) && cp % 2 == 0 && cp != 0x130)
        cp += 1;  // Latin Extended-A pairs: capital even, small odd
      else if (((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) && cp % 2 == 1)
        cp += 1;  // ... and the two runs where the capital is odd
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
      i += 2;
      continue;
    }
    out += char(c);
    ++i;
  }
  return out;
}

// One whitespace-separated chunk (already lowercased) to PTB tokens.
void ptb_split_chunk(std::string w, bool last_in_line, std::vector<std::string>& out) {
  static const std::vector<std::pair<std::string, std::string>> opening = {
      {"\"", "``"}, {"\xe2\x80\x9c", "``"}, {"\xe2\x80\x98", "`"}, {"'", "`"}, {"(", "-lrb-"},
      {"[", "-lsb-"}, {"{", "-lcb-"}, {"\xc2\xa3", "#"}, {"$", "$"}};
  static const std::vector<std::pair<std::string, std::string>> closing = {
      {"\"", "''"}, {"\xe2\x80\x9d", "''"}, {"\xe2\x80\x99", "'"}, {"'", "'"}, {")", "-rrb-"}, {"]", "-rsb-"},
      {"}", "-rcb-"}, {",", ","}, {";", ";"}, {":", ":"}, {"!", "!"}, {"?", "?"}, {"...", "..."},
      {"\xe2\x80\xa6", "..."}};
  static const std::set<std::string> clitics = {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"};
  static const std::set<std::string> abbreviations = {"mr", "mrs", "ms", "dr", "st", "co", "inc", "ltd",
                                                      "jr", "sr", "vs", "etc", "prof", "mt"};
  replace_all(w, "\xe2\x80\x99", "'");  // right single quote inside words is an apostrophe
  if (w == "\xe2\x80\x94" || w == "\xe2\x80\x93" || w == "--") {
    out.push_back("--");
    return;
  }
  for (const auto* list : {&opening, &closing})  // a lone bracket, quote or mark ("£" becomes "#")
    for (const auto& m : *list)
      if (w == m.first) {
        out.push_back(m.second);
        return;
      }
  if (clitics.count(w) || w == "'" || w == "." || w == "-") {
    out.push_back(w);
    return;
  }
  if (w.find_first_not_of('.') == std::string::npos || w.find_first_not_of('-') == std::string::npos) {
    out.push_back(w[0] == '.' ? "..." : "--");  // runs of periods or hyphens
    return;
  }
  for (bool more = true; more && !w.empty();) {
    more = false;
    // A leading hyphen or period before a non-digit is split off ("-friendly", ".price"; not "-5", ".5").
    if (w.size() > 1 && (w[0] == '-' || w[0] == '.') && !is_digit(w[1])) {
      size_t n = w.find_first_not_of(w[0]);
      if (n == std::string::npos) break;
      out.push_back(w[0] == '-' ? (n > 1 ? "--" : "-") : (n > 1 ? "..." : "."));
      w = w.substr(n);
      more = true;
      continue;
    }
    for (const auto& o : opening)
      if (w.size() > o.first.size() && starts_with(w, o.first) && !clitics.count(w)) {
        out.push_back(o.second);
        w = w.substr(o.first.size());
        more = true;
        break;
      }
  }
  std::vector<std::string> tail;  // reversed
  for (bool more = true; more && !w.empty();) {
    more = false;
    for (const auto& c : closing)
      if (w.size() > c.first.size() && ends_with(w, c.first) && !(c.first == "'" && clitics.count(w))) {
        tail.push_back(c.second);
        w.resize(w.size() - c.first.size());
        more = true;
        break;
      }
    if (!more && w.size() > 1 && (w.back() == '-' || ends_with(w, ".."))) {
      // A trailing hyphen ("cambridge-", "20-") or a run of periods (".." reads as an ellipsis).
      const char c = w.back();
      const size_t keep = w.find_last_not_of(c) + 1;
      if (keep == 0) break;
      tail.push_back(c == '-' ? (w.size() - keep > 1 ? "--" : "-") : "...");
      w.resize(keep);
      more = true;
      continue;
    }
    if (!more && w.size() > 1 && w.back() == '.') {
      const std::string stem = w.substr(0, w.size() - 1);
      const bool abbreviation = stem.find('.') != std::string::npos ||
                                (stem.size() == 1 && std::isalpha((unsigned char)stem[0])) ||
                                (!last_in_line && abbreviations.count(stem));
      if (!abbreviation) {
        tail.push_back(".");
        w = stem;
        more = true;
      }
    }
  }
  if (w == "cannot") {
    out.push_back("can");
    out.push_back("not");
  } else if (!w.empty()) {
    std::string clitic;
    if (w.size() > 3 && ends_with(w, "n't"))
      clitic = "n't";
    else
      for (const char* c : {"'s", "'re", "'ve", "'ll", "'d", "'m"})
        if (w.size() > std::string(c).size() && ends_with(w, c)) clitic = c;
    if (!clitic.empty()) {
      out.push_back(w.substr(0, w.size() - clitic.size()));
      out.push_back(clitic);
    } else {
      out.push_back(w);
    }
  }
  out.insert(out.end(), tail.rbegin(), tail.rend());
}

}  // namespace

std::vector<std::string> mteval_tokenize(const std::string& text) {
  // The SGML reader turns whitespace runs into one space, then `tokenization` runs.
  std::string s;
  for (char c : text) s += std::isspace((unsigned char)c) ? ' ' : c;
  replace_all(s, "<skipped>", "");
  replace_all(s, "&quot;", "\"");
  replace_all(s, "&amp;", "&");
  replace_all(s, "&lt;", "<");
  replace_all(s, "&gt;", ">");
  s = " " + s + " ";
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c + 32);
  // s/([\{-\~\[-\` -\&\(-\+\:-\@\/])/ $1 /g : ASCII punctuation except ' - . , and the digits.
  std::string t;
  for (char c : s) {
    const bool punct = (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
                       (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
    if (punct) {
      t += ' ';
      t += c;
      t += ' ';
    } else {
      t += c;
    }
  }
  // Three two-character rules, each a left-to-right global substitution without overlaps (Perl's s///g).
  auto rule = [](const std::string& in, bool (*m)(char, char), int kind) {
    std::string o;
    size_t i = 0;
    while (i < in.size()) {
      if (i + 1 < in.size() && m(in[i], in[i + 1])) {
        if (kind == 0) o += std::string(1, in[i]) + " " + in[i + 1] + " ";        // $1 $2<space>
        else if (kind == 1) o += std::string(" ") + in[i] + " " + in[i + 1];     // <space>$1 $2
        else o += std::string(1, in[i]) + " " + in[i + 1] + " ";                 // $1 $2<space>
        i += 2;
      } else {
        o += in[i++];
      }
    }
    return o;
  };
  t = rule(t, [](char a, char b) { return !is_digit(a) && (b == '.' || b == ','); }, 0);
  t = rule(t, [](char a, char b) { return (a == '.' || a == ',') && !is_digit(b); }, 1);
  t = rule(t, [](char a, char b) { return is_digit(a) && b == '-'; }, 2);
  return split_ws(t);
}

std::vector<std::string> ptb_tokenize(const std::string& text) {
  static const std::set<std::string> punctuation = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".",
                                                    "?", "!", ",", ":", "-", "--", "...", ";"};
  std::vector<std::string> chunks = split_ws(utf8_lower(text)), toks, out;
  for (size_t i = 0; i < chunks.size(); ++i) ptb_split_chunk(chunks[i], i + 1 == chunks.size(), toks);
  for (auto& t : toks)
    if (!punctuation.count(t)) out.push_back(t);
  return out;
}

double metric_bleu(const std::vector<std::string>& predictions, const References& references) {
  check_inputs("BLEU", predictions, references);
  constexpr int N = 4;
  int64_t match[N + 1] = {0}, total[N + 1] = {0}, ref_length = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    SegmentStats s = segment_stats(mteval_tokenize(predictions[i]), tokenize_all(references[i], mteval_tokenize), N);
    for (const auto& kv : s.tst) {
      auto it = s.ref_max.find(kv.first);
      if (it != s.ref_max.end()) match[ngram_order(kv.first)] += std::min(kv.second, it->second);
    }
    for (int n = 1; n <= N; ++n) total[n] += std::max<int64_t>(0, s.tst_words - n + 1);
    ref_length += s.closest_ref;
  }
  // bleu_score: the brevity penalty exp(min(0, 1 - r/c)), 0 when there is no output at all; an order with
  // no n-gram in the output contributes log 1; an order with no match contributes log(1 / (2^k total)).
  if (total[1] == 0) return 0.0;
  const double bp = std::exp(std::min(0.0, 1.0 - double(ref_length) / double(total[1])));
  double log_sum = 0, smooth = 1;
  for (int n = 1; n <= N; ++n) {
    if (total[n] == 0) continue;
    if (match[n] == 0) {
      smooth *= 2;
      log_sum += std::log(1.0 / (smooth * double(total[n])));
    } else {
      log_sum += std::log(double(match[n]) / double(total[n]));
    }
  }
  return std::exp(log_sum / N) * bp;
}

double metric_nist(const std::vector<std::string>& predictions, const References& references) {
  check_inputs("NIST", predictions, references);
  constexpr int N = 5;
  std::vector<std::vector<std::vector<std::string>>> refs;
  refs.reserve(references.size());
  for (const auto& group : references) refs.push_back(tokenize_all(group, mteval_tokenize));
  // compute_ngram_info: info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn)) over every reference of the
  // test set; the empty prefix counts all reference words.
  Counts ref_counts;
  int64_t ref_words_all = 0;
  for (const auto& group : refs)
    for (const auto& r : group) {
      ref_words_all += int64_t(r.size());
      for (const auto& kv : ngram_counts(r, N)) ref_counts[kv.first] += kv.second;
    }
  auto info = [&](const std::string& key) {
    const size_t sp = key.rfind(' ');
    const double prefix = sp == std::string::npos ? double(ref_words_all) : double(ref_counts.at(key.substr(0, sp)));
    return -std::log(double(ref_counts.at(key)) / prefix) / std::log(2.0);
  };
  double tst_info[N + 1] = {0};
  int64_t total[N + 1] = {0}, ref_words = 0, nrefs = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    SegmentStats s = segment_stats(mteval_tokenize(predictions[i]), refs[i], N);
    for (const auto& kv : s.tst) {
      auto it = s.ref_max.find(kv.first);
      if (it != s.ref_max.end()) tst_info[ngram_order(kv.first)] += info(kv.first) * double(std::min(kv.second, it->second));
    }
    for (int n = 1; n <= N; ++n) total[n] += std::max<int64_t>(0, s.tst_words - n + 1);
    ref_words += s.ref_words;
    nrefs += s.nrefs;
  }
  if (ref_words == 0 || nrefs == 0) return 0.0;
  double score = 0;
  for (int n = 1; n <= N; ++n) score += tst_info[n] / double(std::max<int64_t>(total[n], 1));
  // nist_length_penalty: exp(-beta log^2(ratio)) below ratio 1, beta so that ratio 1.5 gives 0.5.
  const double ratio = double(total[1]) / (double(ref_words) / (double(nrefs) / double(predictions.size())));
  double penalty = 1;
  if (ratio <= 0) penalty = 0;
  else if (ratio < 1) {
    const double beta = -std::log(0.5) / std::log(1.5) / std::log(1.5);
    penalty = std::exp(-beta * std::log(ratio) * std::log(ratio));
  }
  return score * penalty;
}

double metric_rouge_l(const std::vector<std::string>& predictions, const References& references) {
  check_inputs("ROUGE-L", predictions, references);
  constexpr double beta = 1.2;
  // rouge.py splits the tokenized text on " ": an empty text is one empty token.
  auto tokens = [](const std::string& t) {
    std::vector<std::string> w = ptb_tokenize(t);
    if (w.empty()) w.push_back("");
    return w;
  };
  double sum = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    const std::vector<std::string> c = tokens(predictions[i]);
    double prec_max = 0, rec_max = 0;
    for (const auto& ref : references[i]) {
      const std::vector<std::string> r = tokens(ref);
      const double lcs = double(lcs_length(r, c));
      prec_max = std::max(prec_max, lcs / double(c.size()));
      rec_max = std::max(rec_max, lcs / double(r.size()));
    }
    if (prec_max != 0 && rec_max != 0)
      sum += (1 + beta * beta) * prec_max * rec_max / (rec_max + beta * beta * prec_max);
  }
  return sum / double(predictions.size());
}

double metric_cider(const std::vector<std::string>& predictions, const References& references) {
  check_inputs("CIDEr", predictions, references);
  constexpr int N = 4;
  constexpr double sigma = 6.0;
  std::vector<Counts> tst;
  std::vector<std::vector<Counts>> refs(references.size());
  Counts df;  // segments whose references hold the n-gram
  for (size_t i = 0; i < predictions.size(); ++i) {
    tst.push_back(ngram_counts(ptb_tokenize(predictions[i]), N));
    std::set<std::string> seen;
    for (const auto& r : references[i]) {
      refs[i].push_back(ngram_counts(ptb_tokenize(r), N));
      for (const auto& kv : refs[i].back()) seen.insert(kv.first);
    }
    for (const auto& k : seen) df[k] += 1;
  }
  const double log_segments = std::log(double(predictions.size()));
  struct Vec {
    std::unordered_map<std::string, double> w[N];
    double norm[N] = {0};
    int64_t length = 0;  // the number of bigrams (cider_scorer.py counts its n == 1 index, i.e. bigrams)
  };
  auto to_vec = [&](const Counts& c) {
    Vec v;
    for (const auto& kv : c) {
      const int n = ngram_order(kv.first) - 1;
      auto it = df.find(kv.first);
      const double idf = log_segments - std::log(std::max(1.0, it == df.end() ? 0.0 : double(it->second)));
      const double x = double(kv.second) * idf;
      v.w[n][kv.first] = x;
      v.norm[n] += x * x;
      if (n == 1) v.length += kv.second;
    }
    for (double& x : v.norm) x = std::sqrt(x);
    return v;
  };
  double total = 0;
  for (size_t i = 0; i < predictions.size(); ++i) {
    const Vec h = to_vec(tst[i]);
    double score[N] = {0};
    for (const auto& rc : refs[i]) {
      const Vec r = to_vec(rc);
      const double delta = double(h.length - r.length);
      for (int n = 0; n < N; ++n) {
        double val = 0;
        for (const auto& kv : h.w[n]) {
          auto it = r.w[n].find(kv.first);
          if (it != r.w[n].end()) val += std::min(kv.second, it->second) * it->second;
        }
        if (h.norm[n] != 0 && r.norm[n] != 0) val /= h.norm[n] * r.norm[n];
        score[n] += val * std::exp(-(delta * delta) / (2 * sigma * sigma));
      }
    }
    double mean = 0;
    for (double s : score) mean += s;
    total += mean / N / double(refs[i].size()) * 10.0;
  }
  return total / double(predictions.size());
}

TextMetrics metrics_text(const std::vector<std::string>& predictions, const References& references) {
  TextMetrics m;
  m.bleu = metric_bleu(predictions, references);
  m.nist = metric_nist(predictions, references);
  m.rouge_l = metric_rouge_l(predictions, references);
  m.cider = metric_cider(predictions, references);
  m.segments = int64_t(predictions.size());
  for (const auto& g : references) m.references += int64_t(g.size());
  return m;
}

void e2e_files_write(const std::string& predictions_path, const std::string& references_path,
                     const std::vector<std::string>& predictions, const References& references) {
  auto one_line = [](std::string s) {
    for (char& c : s)
      if (c == '\n' || c == '\r') c = ' ';
    return s;
  };
  std::ofstream p(predictions_path, std::ios::binary), r(references_path, std::ios::binary);
  if (!p) fail_runtime("cannot write '" + predictions_path + "'", "check that the directory is writable");
  if (!r) fail_runtime("cannot write '" + references_path + "'", "check that the directory is writable");
  for (const auto& s : predictions) p << one_line(s) << '\n';
  for (size_t i = 0; i < references.size(); ++i) {
    if (i) r << '\n';
    for (const auto& s : references[i]) r << one_line(s) << '\n';
  }
  p.close();
  r.close();
  if (!p || !r) fail_runtime("cannot write '" + predictions_path + "' or '" + references_path + "'", "is the disk full?");
}

}  // namespace lora
