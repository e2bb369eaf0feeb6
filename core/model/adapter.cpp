// PEFT-layout adapter save and load (see adapter.h for the layout and the block-structure argument).
#include "core/model/adapter.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/strings.h"
#include "core/formats/checkpoint.h"
#include "core/formats/family.h"
#include "core/formats/safetensors.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kClassifierNames[4] = {"classifier.dense.weight", "classifier.dense.bias",
                                         "classifier.out_proj.weight", "classifier.out_proj.bias"};

namespace {
// PEFT's key prefix: "base_model.model." + the family's checkpoint prefix ("transformer.", "model.").
std::string peft_prefix(const Model& m) { return "base_model.model." + checkpoint_prefix(m.config().family); }

std::vector<Linear*> model_linears(Model& m) {
  std::vector<Linear*> out;
  for (auto& b : m.blocks())
    for (Linear* l : b.linears()) out.push_back(l);
  return out;
}

// The name written in target_modules, which PEFT matches as a suffix of each module's full name:
// "h.3.attn.c_attn" -> "c_attn", "encoder.layer.0.attention.self.query" -> "query". BERT-style names
// ending in "dense" are ambiguous as a suffix (attention.output.dense, intermediate.dense, output.dense
// and classifier.dense), so those are written as the module's full name, which matches only itself.
std::string module_suffix(const Model& m, const std::string& hf_name) {
  std::string last = hf_name.substr(hf_name.rfind('.') + 1);
  if (last == "dense") return checkpoint_prefix(m.config().family) + hf_name;
  return last;
}

float peft_scale(float alpha, int r, bool rslora) { return rslora ? alpha / std::sqrt(float(r)) : alpha / float(r); }
}  // namespace

void adapter_save(Model& model, const std::string& dir, const std::string& base_model_name) {
  Backend& be = model.backend();
  const LoraSpec& spec = model.lora_spec();
  if (spec.full) fail_usage("adapter_save called on a full fine-tune", "full fine-tunes write a model directory");
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::set<std::string> targets;
  std::set<int> layers;
  json rank_pattern = json::object(), alpha_pattern = json::object();
  int layer = 0;
  for (auto& blk : model.blocks()) {
    for (Linear* lin : blk.linears()) {
      if (lin->adapters.empty()) continue;
      int R = 0;
      for (auto& ad : lin->adapters) R += ad.r;
      const LoraAdapter& first = lin->adapters.front();
      // PEFT's scale for the combined rank must equal ours: alpha' = scale * r' (or scale * sqrt(r')).
      float alpha_c = spec.rslora ? first.scale * std::sqrt(float(R)) : first.scale * float(R);
      Tensor a = tensor_host({R, lin->in}), b = tensor_host({lin->out, R});
      int off = 0;
      for (auto& ad : lin->adapters) {
        Tensor ha = be.download(ad.a), hb = be.download(ad.b);
        float k = ad.scale / peft_scale(alpha_c, R, spec.rslora);  // 1 when all adapters share r and alpha
        std::copy(ha.f32(), ha.f32() + ha.numel(), a.f32() + int64_t(off) * lin->in);
        for (int64_t i = 0; i < ad.ncols; ++i)
          for (int j = 0; j < ad.r; ++j) b.f32()[(ad.col0 + i) * R + off + j] = k * hb.f32()[i * ad.r + j];
        off += ad.r;
      }
      std::string key = peft_prefix(model) + lin->hf_name;
      tensors.push_back({key + ".lora_A.weight", a});
      tensors.push_back({key + ".lora_B.weight", b});
      std::string suffix = module_suffix(model, lin->hf_name);
      targets.insert(suffix);
      layers.insert(layer);
      if (R != spec.r) rank_pattern[suffix] = R;
      if (std::fabs(alpha_c - spec.alpha) > 1e-6f * std::fabs(spec.alpha)) alpha_pattern[suffix] = alpha_c;
    }
    ++layer;
  }
  if (tensors.empty()) fail_runtime("the model has no LoRA adapters to save");
  const bool classifier = model.config().head == HeadKind::classifier;
  if (classifier) {
    ClassifierHead& h = model.classifier();
    const Tensor* parts[4] = {&h.dense_w, &h.dense_b, &h.out_w, &h.out_b};
    for (int i = 0; i < 4; ++i) tensors.push_back({std::string("base_model.model.") + kClassifierNames[i], be.download(*parts[i])});
  }
  json cfg = {
      {"peft_type", "LORA"},
      {"task_type", classifier ? "SEQ_CLS" : "CAUSAL_LM"},
      {"base_model_name_or_path", base_model_name},
      {"r", spec.r},
      {"lora_alpha", spec.alpha},
      {"lora_dropout", spec.dropout},
      {"use_rslora", spec.rslora},
      {"fan_in_fan_out", model.config().conv1d_weights},
      {"bias", "none"},
      {"target_modules", std::vector<std::string>(targets.begin(), targets.end())},
      {"rank_pattern", rank_pattern},
      {"alpha_pattern", alpha_pattern},
      {"modules_to_save", classifier ? json({"classifier"}) : json(nullptr)},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"revision", nullptr},
  };
  if (int(layers.size()) != model.config().n_layer) {
    cfg["layers_to_transform"] = std::vector<int>(layers.begin(), layers.end());
    cfg["layers_pattern"] = family_of(model.config()).peft_layers_pattern;
  }
  fs::create_directories(dir);
  safetensors_write((fs::path(dir) / "adapter_model.safetensors").string(), tensors,
                    {{"format", "pt"}, {"written_by", "lora " LORA_VERSION}}, DType::f32);
  file_write_atomic((fs::path(dir) / "adapter_config.json").string(), cfg.dump(2) + "\n");
}

std::string adapter_base_name(const std::string& dir) {
  json cfg = json_read_file((fs::path(dir) / "adapter_config.json").string());
  auto it = cfg.find("base_model_name_or_path");
  return it != cfg.end() && it->is_string() ? it->get<std::string>() : "";
}

namespace {

// PEFT's rank_pattern / alpha_pattern lookup (peft.utils.other.get_pattern_key): a key matches a module
// when the regular expression "(.*\.)?(key)$" matches its full name.
template <class T>
T pattern_lookup(const json& pattern, const std::string& module, T fallback) {
  if (!pattern.is_object()) return fallback;
  for (auto it = pattern.begin(); it != pattern.end(); ++it) {
    if (!it->is_number()) continue;
    bool hit = false;
    try {
      hit = std::regex_match(module, std::regex("(.*\\.)?(" + it.key() + ")"));
    } catch (const std::regex_error&) {
      hit = module == it.key() || ends_with(module, "." + it.key());
    }
    if (hit) return it->get<T>();
  }
  return fallback;
}
}  // namespace

AdapterFile adapter_file_read(const std::string& dir) {
  AdapterFile ad;
  ad.dir = dir;
  ad.config_path = (fs::path(dir) / "adapter_config.json").string();
  ad.weights_path = (fs::path(dir) / "adapter_model.safetensors").string();
  if (!fs::is_directory(dir))
    fail_runtime("adapter directory '" + dir + "' does not exist", "pass the output directory of `lora train`");
  if (!fs::exists(ad.weights_path)) {
    if (fs::exists(fs::path(dir) / "adapter_model.bin"))
      fail_runtime("'" + dir + "' holds adapter_model.bin, a pickle; lora never unpickles files",
                   "convert it in Python: PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)");
    fail_runtime("'" + ad.weights_path + "' is missing",
                 "an adapter directory holds adapter_config.json and adapter_model.safetensors");
  }
  if (!fs::exists(ad.config_path))
    fail_runtime("'" + ad.config_path + "' is missing", "an adapter directory holds adapter_config.json and adapter_model.safetensors");
  ad.config = json_read_file(ad.config_path);
  const json& c = ad.config;
  if (!c.is_object()) fail_runtime("'" + ad.config_path + "' is not a JSON object");
  auto num = [&](const char* key, double fallback) {
    auto it = c.find(key);
    if (it == c.end() || it->is_null()) return fallback;
    if (!it->is_number())
      fail_usage("'" + ad.config_path + "': key '" + key + "' should be a number, found " + it->dump());
    return it->get<double>();
  };
  auto flag = [&](const char* key) {
    auto it = c.find(key);
    return it != c.end() && it->is_boolean() && it->get<bool>();
  };
  const std::string peft_type = c.value("peft_type", std::string("LORA"));
  if (peft_type != "LORA")
    fail_usage("'" + ad.config_path + "' has peft_type " + peft_type + ", expected LORA",
               "only LoRA adapters can be merged or exported");
  if (flag("use_dora"))
    fail_usage("'" + ad.config_path + "' is a DoRA adapter (use_dora: true), which lora cannot merge or export",
               "merge it with PEFT's merge_and_unload");
  if (flag("lora_bias"))
    fail_usage("'" + ad.config_path + "' trains LoRA biases (lora_bias: true), which lora cannot merge or export");
  bool saves_classifier = false;
  if (c.contains("modules_to_save") && c["modules_to_save"].is_array()) {
    std::vector<std::string> others;
    for (const json& m : c["modules_to_save"]) {
      if (m == "classifier") saves_classifier = true;
      else if (!(m == "score")) others.push_back(m.dump());  // PEFT's SEQ_CLS default adds "score" (absent here)
    }
    if (!others.empty())
      fail_usage("'" + ad.config_path + "' lists modules_to_save " + c["modules_to_save"].dump() +
                     ": lora restores, merges and exports only a classification head ('classifier')",
                 "save the adapter with modules_to_save=[\"classifier\"] or without modules_to_save");
  }
  ad.r = int(num("r", 8));
  ad.alpha = float(num("lora_alpha", 8));
  ad.rslora = flag("use_rslora");
  auto bn = c.find("base_model_name_or_path");
  ad.base_name = bn != c.end() && bn->is_string() ? bn->get<std::string>() : "";

  SafetensorsFile st = SafetensorsFile::open(ad.weights_path);
  // "base_model.model.<module>.lora_A.weight", optionally with an adapter name before ".weight".
  const std::regex key_re(R"(^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.([A-Za-z0-9_\-]+))?\.weight$)");
  struct Pair { const SafetensorsEntry *a = nullptr, *b = nullptr; std::string name; };
  std::map<std::string, Pair> pairs;
  std::vector<std::string> order, unknown, problems;
  // modules_to_save tensors: "base_model.model.classifier.dense.weight" (as saved) or with PEFT's wrapper
  // "classifier.modules_to_save.default.dense.weight".
  const std::regex saved_re(R"(^(?:base_model\.model\.)?classifier\.(?:modules_to_save\.[A-Za-z0-9_\-]+\.)?((?:dense|out_proj)\.(?:weight|bias))$)");
  for (const auto& e : st.entries()) {
    std::smatch m;
    if (saves_classifier && std::regex_match(e.name, m, saved_re)) {
      ad.saved.push_back({"classifier." + std::string(m[1]), st.to_f32(e)});
      continue;
    }
    if (!std::regex_match(e.name, m, key_re)) {
      unknown.push_back(e.name);
      continue;
    }
    const std::string module = m[1];
    if (!pairs.count(module)) order.push_back(module);
    Pair& p = pairs[module];
    const std::string name = m[3].matched ? std::string(m[3]) : "";
    if ((p.a || p.b) && p.name != name)
      problems.push_back(e.name + ": a second adapter ('" + name + "' besides '" + p.name + "') on " + module);
    p.name = name;
    (m[2] == "A" ? p.a : p.b) = &e;
  }
  if (!unknown.empty())
    fail_usage("'" + ad.weights_path + "' has " + std::to_string(unknown.size()) +
                   " tensors that are not LoRA A/B weights:" + error_list(unknown),
               "lora merges and exports LoRA adapters with at most a saved classification head (no DoRA magnitudes, "
               "embedding LoRA or other saved modules)");
  for (const auto& module : order) {
    const Pair& p = pairs[module];
    if (!p.a || !p.b)
      problems.push_back(module + ": has lora_" + std::string(p.a ? "A" : "B") + " but no lora_" + (p.a ? "B" : "A"));
  }
  if (order.empty()) problems.push_back("no LoRA tensors at all");
  if (!problems.empty())
    fail_usage("adapter '" + ad.weights_path + "' is incomplete or inconsistent:" + error_list(problems),
               "the file may be truncated or written by another tool; save it again with PEFT or `lora train`");

  for (const auto& module : order) {
    const Pair& p = pairs[module];
    AdapterModule am;
    am.module = module;
    am.key_a = p.a->name;
    am.key_b = p.b->name;
    am.a = st.to_f32(*p.a);
    am.b = st.to_f32(*p.b);
    am.r = pattern_lookup<int>(c.value("rank_pattern", json()), module, ad.r);
    am.alpha = pattern_lookup<float>(c.value("alpha_pattern", json()), module, ad.alpha);
    if (am.a.ndim() != 2 || am.b.ndim() != 2 || am.a.dim(0) != am.r || am.b.dim(1) != am.r)
      problems.push_back(am.key_a + " " + am.a.shape_str() + " and " + am.key_b + " " + am.b.shape_str() +
                         ": expected rank " + std::to_string(am.r) + " from adapter_config.json (r / rank_pattern)");
    if (am.r <= 0) problems.push_back(module + ": rank " + std::to_string(am.r) + " is not positive");
    am.scale = ad.rslora ? am.alpha / std::sqrt(float(am.r)) : am.alpha / float(am.r);
    ad.modules.push_back(std::move(am));
  }
  if (!problems.empty())
    fail_usage("adapter '" + ad.weights_path + "' disagrees with '" + ad.config_path + "':" + error_list(problems),
               "r, rank_pattern and the tensors' shapes must agree, as PEFT requires to load it");
  return ad;
}

std::vector<Tensor> adapter_classifier_head(const AdapterFile& ad) {
  std::vector<Tensor> got(4);
  std::vector<std::string> missing;
  for (int i = 0; i < 4; ++i) {
    for (const auto& [name, t] : ad.saved)
      if (name == kClassifierNames[i]) got[i] = t;
    if (got[i].empty()) missing.push_back(kClassifierNames[i]);
  }
  if (missing.size() == 4) return {};
  if (!missing.empty())
    fail_usage("'" + ad.weights_path + "' has an incomplete classification head; missing:" + error_list(missing),
               "the file may be truncated; save the adapter again");
  // dense (C,C) and (C), out_proj (NL,C) and (NL).
  const Tensor &dw = got[0], &db = got[1], &ow = got[2], &ob = got[3];
  const bool fits = dw.ndim() == 2 && dw.dim(0) == dw.dim(1) && db.ndim() == 1 && db.dim(0) == dw.dim(0) &&
                    ow.ndim() == 2 && ow.dim(1) == dw.dim(0) && ob.ndim() == 1 && ob.dim(0) == ow.dim(0);
  if (!fits)
    fail_usage("'" + ad.weights_path + "' holds a classification head whose shapes do not fit together: " +
                   kClassifierNames[0] + " " + dw.shape_str() + ", " + kClassifierNames[1] + " " + db.shape_str() + ", " +
                   kClassifierNames[2] + " " + ow.shape_str() + ", " + kClassifierNames[3] + " " + ob.shape_str(),
               "expected (C, C), (C), (num_labels, C), (num_labels); save the adapter again");
  return got;
}

namespace {
// The classification head from an adapter's saved modules; without them the base checkpoint must have
// carried a head (a model evaluated with a random head would report nonsense).
void classifier_load(Model& model, const AdapterFile& f) {
  ClassifierHead& h = model.classifier();
  const Tensor* want[4] = {&h.dense_w, &h.dense_b, &h.out_w, &h.out_b};
  std::vector<Tensor> got = adapter_classifier_head(f);
  if (got.empty()) {
    if (h.loaded) return;  // the base checkpoint's own head
    fail_usage("'" + f.weights_path + "' has no classification head (base_model.model.classifier.*) and the base model has none",
               "train the adapter with lora (which saves the head) or save it with PEFT's modules_to_save=[\"classifier\"]");
  }
  std::vector<std::string> bad;
  for (int i = 0; i < 4; ++i)
    if (got[i].shape != want[i]->shape)
      bad.push_back(std::string(kClassifierNames[i]) + " " + got[i].shape_str() + ", the model's is " + want[i]->shape_str());
  if (!bad.empty())
    fail_usage("'" + f.weights_path + "' holds a classification head that does not fit this model:" + error_list(bad),
               "set model.num_labels to the number of labels the adapter was trained with");
  model.classifier_set(got[0], got[1], got[2], got[3]);
}
}  // namespace

void adapter_check_finite(const AdapterFile& ad, const std::string& use) {
  auto check = [&](const std::string& key, const Tensor& t) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t.f32()[i]) && bad++ == 0) first = i;
    if (bad == 0) return;
    fail_runtime("'" + ad.weights_path + "': tensor '" + key + "' holds " + std::to_string(bad) +
                     " NaN or infinite value(s) (the first at element " + std::to_string(first) + ", " +
                     std::to_string(t.f32()[first]) + "); refusing to " + use,
                 "the run that wrote it diverged: retrain from an earlier checkpoint with a lower train.lr, or with "
                 "train.clip_grad_norm");
  };
  for (const AdapterModule& m : ad.modules) {
    check(m.key_a, m.a);
    check(m.key_b, m.b);
  }
  for (const auto& [name, t] : ad.saved) check(name, t);
}

void adapter_load(Model& model, const std::string& dir) {
  const bool classifier = model.config().head == HeadKind::classifier;
  AdapterFile f = adapter_file_read(dir);
  adapter_check_finite(f, "load it");
  if (!classifier && !f.saved.empty())
    fail_usage("'" + f.weights_path + "' saves a classification head (modules_to_save), but this " +
                   model.config().family + " model has a language-model head",
               "load it onto the RoBERTa model it was trained on");
  std::map<std::string, Linear*> by_name;
  for (Linear* lin : model_linears(model)) by_name[lin->hf_name] = lin;
  std::vector<std::string> unknown, bad_shape;
  for (const AdapterModule& m : f.modules) {
    // "transformer.h.0.attn.c_attn" or "h.0.attn.c_attn" -> our "h.0.attn.c_attn" (LLaMA: "model.layers...")
    const std::string prefix = checkpoint_prefix(model.config().family);
    const std::string name = m.module.compare(0, prefix.size(), prefix) == 0 ? m.module.substr(prefix.size()) : m.module;
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      unknown.push_back(m.key_a);
      continue;
    }
    const Linear& lin = *it->second;
    if (m.a.dim(1) != lin.in || m.b.dim(0) != lin.out)
      bad_shape.push_back(m.key_a + " " + m.a.shape_str() + " and " + m.key_b + " " + m.b.shape_str() +
                          ": the layer is " + std::to_string(lin.out) + " x " + std::to_string(lin.in) + " (out x in)");
  }
  if (!unknown.empty())
    fail_usage("'" + f.weights_path + "' has " + std::to_string(unknown.size()) +
                   " adapted modules that this " + model.config().family + " model does not have:" + error_list(unknown),
               "check that the adapter was trained on this base model");
  if (!bad_shape.empty())
    fail_usage("'" + f.weights_path + "' has LoRA tensors whose shapes do not fit this model:" + error_list(bad_shape),
               "the adapter was trained on a base model of another width");
  Backend& be = model.backend();
  const DType dt = be.activation_dtype();
  LoraSpec spec;
  spec.r = f.r;
  spec.alpha = f.alpha;
  spec.rslora = f.rslora;
  auto dropout = f.config.find("lora_dropout");
  spec.dropout = dropout != f.config.end() && dropout->is_number() ? dropout->get<float>() : 0.0f;
  for (const AdapterModule& m : f.modules) {
    const std::string prefix = checkpoint_prefix(model.config().family);
    const std::string name = m.module.compare(0, prefix.size(), prefix) == 0 ? m.module.substr(prefix.size()) : m.module;
    Linear& lin = *by_name[name];
    LoraAdapter ad;
    ad.role = "all";
    ad.col0 = 0;
    ad.ncols = lin.out;
    ad.r = m.r;
    ad.alpha = m.alpha;
    ad.scale = m.scale;
    ad.a = be.alloc(m.a.shape, DType::f32);
    ad.b = be.alloc(m.b.shape, DType::f32);
    be.upload(ad.a, m.a);
    be.upload(ad.b, m.b);
    ad.da = be.alloc(m.a.shape, DType::f32);
    ad.db = be.alloc(m.b.shape, DType::f32);
    ad.a_val = dt == DType::f32 ? ad.a : be.alloc(m.a.shape, dt);
    ad.b_val = dt == DType::f32 ? ad.b : be.alloc(m.b.shape, dt);
    lin.dropout = spec.dropout;
    lin.adapters.clear();
    lin.adapters.push_back(std::move(ad));
  }
  if (classifier) classifier_load(model, f);
  model.lora_loaded(spec);
  model.sync_values();
}

}  // namespace lora
