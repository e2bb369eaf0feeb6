// See run_outputs.h.
#include "core/train/run_outputs.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/strings.h"
#include "core/model/generate.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

std::FILE* open_or_fail(const std::string& path, bool append) {
  std::FILE* f = std::fopen(path.c_str(), append ? "a" : "w");
  if (!f) fail_runtime("cannot write '" + path + "'", "check that the output directory is writable");
  return f;
}

std::string num(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// An axis over [lo, hi] with about five round ticks (1, 2 or 5 times a power of ten) that enclose it.
struct Axis {
  double lo = 0, hi = 1, tick = 0.2;
};
Axis nice_axis(double lo, double hi) {
  if (!(hi > lo)) {  // one value, or none: a unit-wide range around it
    const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1.0;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / 5;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double tick = raw <= p ? p : raw <= 2 * p ? 2 * p : raw <= 5 * p ? 5 * p : 10 * p;
  return {std::floor(lo / tick + 1e-9) * tick, std::ceil(hi / tick - 1e-9) * tick, tick};
}

}  // namespace

RunOutputs::RunOutputs(const std::string& out_dir, bool append) : dir_(out_dir) {
  log_ = open_or_fail((fs::path(out_dir) / "train.log").string(), append);
  samples_ = open_or_fail((fs::path(out_dir) / "samples.jsonl").string(), append);
}

RunOutputs::~RunOutputs() {
  if (log_) std::fclose(log_);
  if (samples_) std::fclose(samples_);
}

void RunOutputs::line(const std::string& text) {
  std::fprintf(log_, "%s\n", text.c_str());
  std::fflush(log_);  // a run killed hard still leaves its log up to the last line
}

void RunOutputs::samples(int64_t step, const std::vector<RunSample>& samples) {
  for (const RunSample& s : samples) {
    nlohmann::ordered_json j = {{"step", step}, {"prompt", s.prompt}, {"generated", s.generated}, {"reference", s.reference}};
    std::fprintf(samples_, "%s\n", j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  }
  std::fflush(samples_);
}

void RunOutputs::plot() const {
  const fs::path metrics = fs::path(dir_) / "metrics.jsonl";
  const std::string text = fs::exists(metrics) ? file_read(metrics.string()) : "";
  const std::string title = fs::path(dir_).lexically_normal().filename().string();
  file_write_atomic((fs::path(dir_) / "loss.svg").string(), loss_svg(text, title.empty() ? dir_ : title));
}

std::vector<RunSample> run_samples(Model& model, const Dataset& data, const Tokenizer& tok, int n, int max_new) {
  std::vector<RunSample> out;
  for (size_t i = 0; i < data.size() && int(out.size()) < n; ++i) {
    if (i > 0 && data.prompt_text(i) == data.prompt_text(i - 1)) continue;
    if (data.prompt_length(i) == 0) continue;  // a {"text": ...} record: nothing to continue from
    TokenSpan t = data.tokens(i);
    std::vector<int32_t> prompt(t.begin(), t.begin() + data.prompt_length(i));
    const std::vector<int32_t> gen = generate_greedy(model, prompt, max_new, tok.eos_id());
    out.push_back({data.prompt_text(i), trim(tok.decode(gen)), data.completion_text(i)});
  }
  return out;
}

std::string loss_svg(const std::string& metrics_jsonl, const std::string& title) {
  std::map<int64_t, double> loss, eval_loss, lr;
  for (const std::string& row : text_lines(metrics_jsonl)) {
    const nlohmann::json j = nlohmann::json::parse(row, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;  // a torn last line too
    const int64_t step = j["step"].get<int64_t>();
    auto take = [&](const char* key, std::map<int64_t, double>& into) {
      if (j.contains(key) && j[key].is_number() && std::isfinite(j[key].get<double>())) into[step] = j[key].get<double>();
    };
    take("loss", loss);
    take("lr", lr);
    take("eval_loss", eval_loss);
  }

  // The picture: the plot area inside margins that hold the axes' labels.
  const double W = 760, H = 420, x0 = 70, x1 = W - 80, y0 = 50, y1 = H - 60;
  int64_t max_step = 1;
  double lmin = INFINITY, lmax = -INFINITY, lrmax = 0;
  for (const auto* m : {&loss, &eval_loss})
    for (const auto& [step, v] : *m) {
      max_step = std::max(max_step, step);
      lmin = std::min(lmin, v);
      lmax = std::max(lmax, v);
    }
  for (const auto& [step, v] : lr) {
    max_step = std::max(max_step, step);
    lrmax = std::max(lrmax, v);
  }
  const Axis ax = nice_axis(0, double(max_step));
  const Axis ay = std::isfinite(lmin) ? nice_axis(lmin, lmax) : nice_axis(0, 1);
  const Axis alr = nice_axis(0, lrmax > 0 ? lrmax : 1);
  auto X = [&](double s) { return x0 + (s - ax.lo) / (ax.hi - ax.lo) * (x1 - x0); };
  auto Y = [&](double v) { return y1 - (v - ay.lo) / (ay.hi - ay.lo) * (y1 - y0); };
  auto YLR = [&](double v) { return y1 - (v - alr.lo) / (alr.hi - alr.lo) * (y1 - y0); };
  auto polyline = [&](const std::map<int64_t, double>& m, const std::function<double(double)>& y, const char* style) {
    if (m.empty()) return std::string();
    std::string pts;
    for (const auto& [step, v] : m) pts += num("%.1f,", X(double(step))) + num("%.1f ", y(v));
    return "<polyline fill=\"none\" " + std::string(style) + " points=\"" + pts + "\"/>\n";
  };

  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num("%.0f", W) + "\" height=\"" +
                   num("%.0f", H) + "\" viewBox=\"0 0 " + num("%.0f", W) + " " + num("%.0f", H) +
                   "\" font-family=\"sans-serif\" font-size=\"12\">\n"
                   "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num("%.0f", W / 2) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">" + xml_escape(title) +
       ": loss and learning rate</text>\n";
  // Grid and tick labels: steps below, loss on the left, learning rate on the right.
  for (double t = ax.lo; t <= ax.hi + ax.tick / 2; t += ax.tick)
    s += "<line x1=\"" + num("%.1f", X(t)) + "\" y1=\"" + num("%.1f", y0) + "\" x2=\"" + num("%.1f", X(t)) + "\" y2=\"" +
         num("%.1f", y1) + "\" stroke=\"#e5e5e5\"/>\n<text x=\"" + num("%.1f", X(t)) + "\" y=\"" + num("%.1f", y1 + 16) +
         "\" text-anchor=\"middle\">" + num("%g", t) + "</text>\n";
  for (double t = ay.lo; t <= ay.hi + ay.tick / 2; t += ay.tick)
    s += "<line x1=\"" + num("%.1f", x0) + "\" y1=\"" + num("%.1f", Y(t)) + "\" x2=\"" + num("%.1f", x1) + "\" y2=\"" +
         num("%.1f", Y(t)) + "\" stroke=\"#e5e5e5\"/>\n<text x=\"" + num("%.1f", x0 - 6) + "\" y=\"" +
         num("%.1f", Y(t) + 4) + "\" text-anchor=\"end\">" + num("%.4g", t) + "</text>\n";
  if (!lr.empty())
    for (double t = alr.lo; t <= alr.hi + alr.tick / 2; t += alr.tick)
      s += "<text x=\"" + num("%.1f", x1 + 6) + "\" y=\"" + num("%.1f", YLR(t) + 4) + "\" fill=\"#2ca02c\">" +
           num("%.3g", t) + "</text>\n";
  s += "<rect x=\"" + num("%.1f", x0) + "\" y=\"" + num("%.1f", y0) + "\" width=\"" + num("%.1f", x1 - x0) +
       "\" height=\"" + num("%.1f", y1 - y0) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  s += "<text x=\"" + num("%.1f", (x0 + x1) / 2) + "\" y=\"" + num("%.1f", H - 20) + "\" text-anchor=\"middle\">step</text>\n";
  s += "<text transform=\"translate(18," + num("%.1f", (y0 + y1) / 2) + ") rotate(-90)\" text-anchor=\"middle\">loss</text>\n";
  if (!lr.empty())
    s += "<text transform=\"translate(" + num("%.1f", W - 12) + "," + num("%.1f", (y0 + y1) / 2) +
         ") rotate(90)\" text-anchor=\"middle\" fill=\"#2ca02c\">learning rate</text>\n";

  s += polyline(lr, YLR, "stroke=\"#2ca02c\" stroke-width=\"1.2\" stroke-dasharray=\"5,3\"");
  s += polyline(loss, Y, "stroke=\"#1f77b4\" stroke-width=\"1.5\"");
  s += polyline(eval_loss, Y, "stroke=\"#ff7f0e\" stroke-width=\"2\"");
  for (const auto& [step, v] : eval_loss)
    s += "<circle cx=\"" + num("%.1f", X(double(step))) + "\" cy=\"" + num("%.1f", Y(v)) + "\" r=\"3.5\" fill=\"#ff7f0e\">"
         "<title>step " + std::to_string(step) + ": eval loss " + num("%.4f", v) + "</title></circle>\n";

  // The legend, top right inside the plot, with each series' last value.
  double ly = y0 + 16;
  auto legend = [&](const std::map<int64_t, double>& m, const char* color, const char* dash, const std::string& name) {
    if (m.empty()) return;
    s += "<line x1=\"" + num("%.1f", x1 - 200) + "\" y1=\"" + num("%.1f", ly - 4) + "\" x2=\"" + num("%.1f", x1 - 176) +
         "\" y2=\"" + num("%.1f", ly - 4) + "\" stroke=\"" + color + "\" stroke-width=\"2\"" + dash + "/>\n<text x=\"" +
         num("%.1f", x1 - 170) + "\" y=\"" + num("%.1f", ly) + "\">" + name + " " +
         num("%.4g", m.rbegin()->second) + "</text>\n";
    ly += 16;
  };
  legend(loss, "#1f77b4", "", "train loss");
  legend(eval_loss, "#ff7f0e", "", "eval loss");
  legend(lr, "#2ca02c", " stroke-dasharray=\"5,3\"", "learning rate");
  if (loss.empty() && eval_loss.empty())
    s += "<text x=\"" + num("%.1f", (x0 + x1) / 2) + "\" y=\"" + num("%.1f", (y0 + y1) / 2) +
         "\" text-anchor=\"middle\" fill=\"#888\">no steps yet</text>\n";
  s += "</svg>\n";
  return s;
}

}  // namespace lora
