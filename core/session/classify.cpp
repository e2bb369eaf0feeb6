// See classify.h.
#include "core/session/classify.h"

#include <cmath>

#include "core/base/error.h"
#include "core/metrics/metrics.h"

namespace lora {

void classify_config_apply(const Recipe& r, ModelConfig& cfg) {
  if (r.model.num_labels <= 0) return;
  if (cfg.head != HeadKind::classifier)
    fail_usage("model.num_labels is " + std::to_string(r.model.num_labels) + " but the " + cfg.family +
                   " model has a language-model head, not a classification head",
               "remove model.num_labels; classification heads are implemented for RoBERTa");
  cfg.num_labels = r.model.num_labels;
}

DatasetOptions classify_dataset_options(const Recipe& r) {
  DatasetOptions o;
  o.text_fields = r.data.text_fields;
  o.label_field = r.data.label_field;
  o.label_names = r.data.label_names;
  return o;
}

void classify_data_check(const Dataset& data, const ModelConfig& cfg, const std::string& what) {
  const std::string& path = data.info().source_path;
  const bool glue = data.info().format == "glue";
  if (cfg.head != HeadKind::classifier) {
    if (glue)
      fail_usage(what + " data '" + path + "' is classification data (format glue) but the " + cfg.family +
                     " model has a language-model head",
                 "fine-tune a model with a classification head (RoBERTa) on it, or give generation data");
    return;
  }
  if (!glue)
    fail_usage(what + " data '" + path + "' is " + data.info().format + " data but the " + cfg.family +
                   " model classifies: it needs records with texts and a label (data.format glue)",
               "give JSONL records such as {\"sentence1\": ..., \"sentence2\": ..., \"label\": 1} or a GLUE .tsv file");
  const int NL = cfg.num_labels;
  for (size_t i = 0; i < data.size(); ++i) {
    const float y = data.label(i);
    const bool ok = NL == 1 ? std::isfinite(y) : (y >= 0 && y < float(NL) && y == std::floor(y));
    if (ok) continue;
    const std::string where = path + ":" + std::to_string(data.source_line(i));
    if (NL == 1)
      fail_usage(where + ": label " + std::to_string(y) + " is not a finite number (the model has a regression head)",
                 "fix the record");
    fail_usage(where + ": label " + std::to_string(y) + " is not a class id of the model's " + std::to_string(NL) +
                   "-label head (0.." + std::to_string(NL - 1) + ")",
               y == std::floor(y) && y >= float(NL)
                   ? "set model.num_labels to the task's number of labels (roberta-base's config.json says 2)"
                   : "labels of a classification head are 0, 1, ...; for a regression task set model.num_labels: 1");
  }
}

std::vector<std::pair<std::string, double>> glue_metrics(const std::string& task, const std::vector<double>& predictions,
                                                         const std::vector<double>& labels, int num_labels) {
  std::vector<std::pair<std::string, double>> out;
  if (num_labels == 1 || task == "stsb") {
    out.push_back({"pearson", metric_pearson(predictions, labels)});
    out.push_back({"spearman", metric_spearman(predictions, labels)});
    return out;
  }
  std::vector<int64_t> p(predictions.begin(), predictions.end()), y(labels.begin(), labels.end());
  const double accuracy = metric_accuracy(p, y);
  if (task == "cola") {
    out.push_back({"matthews", metric_matthews(p, y)});
    out.push_back({"accuracy", accuracy});
    return out;
  }
  out.push_back({"accuracy", accuracy});
  if (num_labels == 2) {
    out.push_back({"f1", metric_f1(p, y)});
    if (task == "auto") out.push_back({"matthews", metric_matthews(p, y)});
  }
  return out;
}

ClassifyEval classify_evaluate(Model& m, std::shared_ptr<const Dataset> data, int batch_size, int max_batches,
                               const std::string& glue_task) {
  BatchStreamOptions o;
  o.batch_size = batch_size;
  o.shuffle = false;
  BatchStream stream(data, o);
  const int NL = m.config().num_labels;
  ClassifyEval ev;
  double loss = 0;
  Batch b;
  for (int i = 0; (max_batches <= 0 || i < max_batches) && stream.next(b); ++i) {
    Tensor logits;
    LossStats s = m.classify_step(b.tokens, b.lengths, b.labels, 0.0f, 0, false, &logits);
    loss += s.loss_sum;
    ev.examples += s.tokens;
    for (int r = 0; r < b.B; ++r) {
      const float* row = logits.f32() + int64_t(r) * NL;
      int best = 0;
      for (int k = 1; k < NL; ++k)
        if (row[k] > row[best]) best = k;
      ev.predictions.push_back(NL == 1 ? double(row[0]) : double(best));
      ev.labels.push_back(b.labels.f32()[r]);
    }
  }
  if (ev.examples == 0) return ev;
  ev.loss = loss / double(ev.examples);
  ev.metrics = glue_metrics(glue_task, ev.predictions, ev.labels, NL);
  return ev;
}

}  // namespace lora
