// Sequence classification and regression beside the model (config().head == HeadKind::classifier): what
// training and `lora eval` share. The recipe's settings (model.num_labels, data.text_fields, ...), the
// checks that data fit the head (glue-format data, every label a class id or a finite value), and the
// evaluation: mean loss, predictions and GLUE's metric of the task (eval.glue_task), computed as
// scikit-learn and SciPy do (core/metrics/metrics.h).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/data/dataset.h"
#include "core/model/model.h"
#include "core/session/recipe.h"

namespace lora {

// model.num_labels over config.json's (a usage error for a model without a classification head).
void classify_config_apply(const Recipe& r, ModelConfig& cfg);
// data.text_fields, data.label_field and data.label_names.
DatasetOptions classify_dataset_options(const Recipe& r);
// The data fit the model: classification models read glue-format data whose labels are class ids in
// [0, num_labels) (or finite values for regression); language models do not read glue data. `what`
// names the split ("train", "eval") in messages, which also name the file and source line.
void classify_data_check(const Dataset& data, const ModelConfig& cfg, const std::string& what);

struct ClassifyEval {
  int64_t examples = 0;
  double loss = 0;                                       // mean per-example loss (cross-entropy or squared error)
  std::vector<double> predictions;                       // arg max class, or the regression value
  std::vector<double> labels;
  std::vector<std::pair<std::string, double>> metrics;   // the task's metric first
};

// Evaluates the model over the first max_batches batches (0: all) of data, in file order.
ClassifyEval classify_evaluate(Model& m, std::shared_ptr<const Dataset> data, int batch_size, int max_batches,
                               const std::string& glue_task);
// GLUE's metrics of a task ("auto": accuracy, plus F1 and Matthews for two classes; Pearson and Spearman
// for regression), the task's reported metric first: cola matthews; stsb pearson; mrpc, qqp accuracy
// and F1; sst2, mnli, qnli, rte, wnli accuracy.
std::vector<std::pair<std::string, double>> glue_metrics(const std::string& task, const std::vector<double>& predictions,
                                                         const std::vector<double>& labels, int num_labels);

}  // namespace lora
