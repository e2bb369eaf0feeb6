// lora.init_from (see adapter_init.h): a fresh run's LoRA weights, and its classification head when the shape
// fits, taken from a trained adapter instead of the random init.
//
// The reference (microsoft/LoRA, examples/NLU/examples/text-classification/run_glue.py, --lora_path)
// calls torch.load on the file and model.load_state_dict(state, strict=False) on a freshly built
// RobertaForSequenceClassification. Every tensor of the file whose name the model has is loaded: the
// published roberta_base_lora_mnli.bin holds lora_A / lora_B of query and value in all 12 layers and the
// whole classifier (dense (768, 768), out_proj (3, 768)). strict=False forgives missing and unexpected
// names but not a shape mismatch, which raises. Here:
//   - A and B are copied bit for bit. Unlike strict=False, every layer the recipe adapts must find its
//     tensors, every tensor a layer the recipe adapts, with the recipe's rank and scale and the model's
//     shapes: anything else would quietly train another adapter than the recipe describes.
//   - The head is taken whole when its four tensors fit, as load_state_dict takes it. When out_proj has
//     another number of labels (MNLI's 3 against MRPC's 2), the head is left as lora_init made it (a
//     fresh head, as without init_from) with a notice, where the reference stops with a size mismatch.
//   - Optimizer moments, schedule and data order start fresh, as the reference's new Trainer does.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "core/base/error.h"
#include "core/formats/checkpoint.h"
#include "core/model/adapter.h"
#include "core/session/recipe.h"
#include "core/train/adapter_init.h"
#include "core/train/train_state.h"

namespace lora {

namespace fs = std::filesystem;

namespace {
const char* kHint = "point lora.init_from at the output directory of a finished `lora train` run or at a PEFT "
                    "adapter directory (adapter_config.json + adapter_model.safetensors)";

// Says what `dir` is when it is not an adapter; adapter_file_read then checks the adapter itself.
void check_is_adapter(const std::string& dir) {
  std::error_code ec;
  const fs::path p(dir);
  if (!fs::exists(p, ec)) fail_runtime("lora.init_from: '" + dir + "' does not exist", kHint);
  if (!fs::is_directory(p, ec)) fail_runtime("lora.init_from: '" + dir + "' is not a directory", kHint);
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"})
    if (fs::exists(p / name, ec)) return;
  if (fs::exists(p / "model" / "config.json", ec))
    fail_usage("lora.init_from: '" + dir + "' is the output of a full fine-tune (lora.mode full), which has no adapter",
               "use its model as model.path (" + (p / "model").string() + ") and leave lora.init_from unset");
  if (!train_state_latest(dir).empty())
    fail_runtime("lora.init_from: '" + dir + "' holds checkpoints of a run but no adapter: that run has not finished",
                 "finish it with `lora train RECIPE --resume " + dir + "`; the adapter is written at its end");
  if (fs::exists(p / "config.json", ec))
    fail_usage("lora.init_from: '" + dir + "' is a model directory (config.json), not an adapter",
               "model.path names the base model; lora.init_from names an adapter trained on it");
  fail_runtime("lora.init_from: '" + dir + "' is not an adapter directory: it has no adapter_config.json and no "
               "adapter_model.safetensors", kHint);
}

std::string number(double v) { return recipe_format_number(v); }

// "2 (lora.alpha 16 / lora.r 8)" or, with rsLoRA, "5.66 (lora.alpha 16 / sqrt(lora.r 8))".
std::string scale_text(float scale, double alpha, int r, bool rslora, const char* a_name, const char* r_name) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(scale));
  return std::string(buf) + " (" + a_name + " " + number(alpha) + (rslora ? " / sqrt(" : " / ") + r_name + " " +
         std::to_string(r) + (rslora ? "))" : ")");
}

// The head's four tensors from the adapter's saved modules, taken when they fit the model. Returns the notice.
std::string head_from(Model& model, const AdapterFile& f) {
  ClassifierHead& h = model.classifier();
  const char* names[4] = {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                          "classifier.out_proj.bias"};
  const Tensor* want[4] = {&h.dense_w, &h.dense_b, &h.out_w, &h.out_b};
  if (f.saved.empty())
    return "lora.init_from: the adapter has no classification head; the head is initialised as without lora.init_from";
  Tensor got[4];
  std::vector<std::string> missing;
  for (int i = 0; i < 4; ++i) {
    for (const auto& [name, t] : f.saved)
      if (name == names[i]) got[i] = t;
    if (got[i].empty()) missing.push_back(std::string("base_model.model.") + names[i]);
  }
  if (!missing.empty())
    fail_usage("lora.init_from: '" + f.weights_path + "' has an incomplete classification head; missing:" +
                   error_list(missing),
               "the file may be truncated; save the adapter again");
  for (int i : {0, 1})
    if (got[i].shape != want[i]->shape)
      fail_usage("lora.init_from: '" + f.weights_path + "': base_model.model." + names[i] + " has shape " +
                     got[i].shape_str() + ", this model's is " + want[i]->shape_str(),
                 "the adapter was trained on a base model of another width; model.path must be the base it was "
                 "trained on");
  const int64_t labels = model.config().num_labels;
  if (got[2].shape != want[2]->shape || got[3].shape != want[3]->shape)
    return "lora.init_from: the adapter's classification head has " + std::to_string(got[2].dim(0)) +
           " outputs (classifier.out_proj " + got[2].shape_str() + "), this model " + std::to_string(labels) +
           " (model.num_labels): the head is initialised as without lora.init_from";
  model.classifier_set(got[0], got[1], got[2], got[3]);
  return "lora.init_from: the classification head (" + std::to_string(labels) + " outputs) is taken from the adapter too";
}
}  // namespace

std::vector<std::string> adapter_init_from(Model& model, const std::string& dir) {
  const ModelConfig& cfg = model.config();
  const LoraSpec& spec = model.lora_spec();
  if (spec.full) throw std::logic_error("adapter_init_from on a full fine-tune");
  check_is_adapter(dir);
  AdapterFile f;
  try {
    f = adapter_file_read(dir);
    adapter_check_finite(f, "start training from it");
  } catch (const Error& e) {
    throw Error(e.code(), std::string("lora.init_from: ") + e.what(), e.hint());
  }
  if (cfg.head != HeadKind::classifier && !f.saved.empty())
    fail_usage("lora.init_from: '" + f.weights_path + "' holds a classification head (modules_to_save classifier) "
               "but this " + cfg.family + " model is a language model",
               "start from an adapter trained on a language model, or set model.path to the encoder it was trained on");
  const std::string trained = "(its adapter_config.json: r " + std::to_string(f.r) + ", lora_alpha " +
                              number(f.alpha) + ", target_modules " + f.config.value("target_modules", nlohmann::json()).dump() +
                              ", layers_to_transform " + f.config.value("layers_to_transform", nlohmann::json()).dump() + ")";

  // The adapter's modules under our layer names ("roberta.encoder.layer.0..." -> "encoder.layer.0...").
  const std::string prefix = checkpoint_prefix(cfg.family);
  auto layer_name = [&](const AdapterModule& m) {
    return m.module.rfind(prefix, 0) == 0 ? m.module.substr(prefix.size()) : m.module;
  };
  std::map<std::string, const AdapterModule*> in_file;
  for (const AdapterModule& m : f.modules) in_file[layer_name(m)] = &m;
  std::map<std::string, Linear*> layers;
  std::vector<Linear*> adapted;
  for (auto& blk : model.blocks())
    for (Linear* lin : blk.linears()) {
      layers[lin->hf_name] = lin;
      if (!lin->adapters.empty()) adapted.push_back(lin);
    }

  // The same layers on both sides.
  std::vector<std::string> uncovered;
  for (Linear* lin : adapted)
    if (!in_file.count(lin->hf_name)) uncovered.push_back("the recipe adapts " + lin->hf_name + "; the adapter has no weights for it");
  for (const AdapterModule& m : f.modules) {
    auto it = layers.find(layer_name(m));
    if (it == layers.end()) uncovered.push_back(m.key_a + ": this " + cfg.family + " model has no layer " + layer_name(m));
    else if (it->second->adapters.empty()) uncovered.push_back(m.key_a + ": the recipe does not adapt " + layer_name(m));
  }
  if (!uncovered.empty())
    fail_usage("lora.init_from: the adapter in '" + dir + "' and the recipe's lora.targets / lora.layers adapt "
               "different layers:" + error_list(uncovered),
               "set lora.targets and lora.layers as the adapter was trained " + trained);

  // Each layer's tensors: the model's shape, then the recipe's rank and scale.
  std::vector<std::string> bad_shape, bad_rank, bad_scale;
  for (Linear* lin : adapted) {
    const AdapterModule& m = *in_file[lin->hf_name];
    int R = 0;
    for (const LoraAdapter& ad : lin->adapters) R += ad.r;
    const std::string tensors = m.key_a + " " + m.a.shape_str() + " and " + m.key_b + " " + m.b.shape_str();
    if (m.a.dim(1) != lin->in || m.b.dim(0) != lin->out) {
      bad_shape.push_back(tensors + ": the layer is " + std::to_string(lin->out) + " x " + std::to_string(lin->in) +
                          " (out x in)");
      continue;
    }
    if (m.r != R) {
      bad_rank.push_back(tensors + ": rank " + std::to_string(m.r) + ", the recipe's is " + std::to_string(R) +
                         (lin->adapters.size() > 1 ? " (" + std::to_string(lin->adapters.size()) + " adapters of lora.r " +
                                                         std::to_string(spec.r) + " in one layer)"
                                                   : " (lora.r)"));
      continue;
    }
    const float scale = lin->adapters.front().scale;
    if (std::fabs(m.scale - scale) > 1e-6f * std::fabs(scale))
      bad_scale.push_back(m.key_b + ": scale " + scale_text(m.scale, m.alpha, m.r, f.rslora, "lora_alpha", "r") +
                          ", the recipe's is " + scale_text(scale, spec.alpha, spec.r, spec.rslora, "lora.alpha", "lora.r"));
  }
  if (!bad_shape.empty())
    fail_usage("lora.init_from: the LoRA tensors in '" + f.weights_path + "' do not fit this model's layers:" +
                   error_list(bad_shape),
               "the adapter was trained on a base model of another size; model.path must be the base it was trained on" +
                   (f.base_name.empty() ? std::string() : " (its adapter_config.json names '" + f.base_name + "')"));
  if (!bad_rank.empty())
    fail_usage("lora.init_from: the adapter in '" + dir + "' has another rank than the recipe:" + error_list(bad_rank),
               "set lora.r to the adapter's rank " + trained);
  if (!bad_scale.empty())
    fail_usage("lora.init_from: the adapter in '" + dir + "' scales its update differently from the recipe:" +
                   error_list(bad_scale),
               "set lora.alpha and lora.rslora as the adapter was trained (lora_alpha " + number(f.alpha) +
                   ", use_rslora " + (f.rslora ? "true" : "false") + ")");

  // A layer with several adapters (q and v inside GPT-2's c_attn) reads one block-structured adapter, the
  // inverse of adapter_save: adapter k takes A's rows [off, off + r_k) and B's block (its columns of the
  // layer) x (those rank rows); everything outside these blocks must be zero.
  std::vector<std::string> not_blocks;
  for (Linear* lin : adapted) {
    const AdapterModule& m = *in_file[lin->hf_name];
    const int64_t R = m.r;
    int64_t off = 0, stray = 0;
    std::vector<bool> inside(size_t(lin->out * R), false);
    for (const LoraAdapter& ad : lin->adapters) {
      for (int64_t i = 0; i < ad.ncols; ++i)
        for (int j = 0; j < ad.r; ++j) inside[size_t((ad.col0 + i) * R + off + j)] = true;
      off += ad.r;
    }
    for (int64_t k = 0; k < lin->out * R; ++k) stray += !inside[size_t(k)] && m.b.f32()[k] != 0.0f;
    if (stray > 0)
      not_blocks.push_back(m.key_b + ": " + std::to_string(stray) + " non-zero entries outside the blocks of the recipe's " +
                           std::to_string(lin->adapters.size()) + " adapter(s) on " + lin->hf_name);
  }
  if (!not_blocks.empty())
    fail_usage("lora.init_from: the adapter in '" + dir + "' adapts whole layers where the recipe adapts parts of them:" +
                   error_list(not_blocks),
               "set lora.targets as the adapter was trained (e.g. [c_attn] rather than [q, v]) " + trained);

  Backend& be = model.backend();
  for (Linear* lin : adapted) {
    const AdapterModule& m = *in_file[lin->hf_name];
    const int64_t R = m.r, in = lin->in;
    int64_t off = 0;
    for (LoraAdapter& ad : lin->adapters) {
      Tensor a = tensor_host({ad.r, in}), b = tensor_host({ad.ncols, ad.r});  // (r, in), (ncols, r)
      std::copy(m.a.f32() + off * in, m.a.f32() + (off + ad.r) * in, a.f32());
      for (int64_t i = 0; i < ad.ncols; ++i)
        for (int j = 0; j < ad.r; ++j) b.f32()[i * ad.r + j] = m.b.f32()[(ad.col0 + i) * R + off + j];
      be.upload(ad.a, a);
      be.upload(ad.b, b);
      off += ad.r;
    }
  }

  std::vector<std::string> notes = {"lora.init_from: LoRA A and B of " + std::to_string(adapted.size()) + " layers from " +
                                    dir + (f.base_name.empty() ? "" : " (trained on " + f.base_name + ")")};
  if (cfg.head == HeadKind::classifier) notes.push_back(head_from(model, f));
  model.sync_values();
  return notes;
}

}  // namespace lora
