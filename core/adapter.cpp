// PEFT-layout adapter save and load (see adapter.h for the layout and the block-structure argument).
#include "core/adapter.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/safetensors.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
const char* kPrefix = "base_model.model.transformer.";

std::vector<Linear*> model_linears(Model& m) {
  std::vector<Linear*> out;
  for (auto& b : m.blocks())
    for (Linear* l : {&b.qkv, &b.attn_out, &b.fc, &b.fc_out}) out.push_back(l);
  return out;
}

// "h.3.attn.c_attn" -> "c_attn"; "h.3.mlp.c_proj" -> "c_proj"
std::string module_suffix(const std::string& hf_name) { return hf_name.substr(hf_name.rfind('.') + 1); }

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
    for (Linear* lin : {&blk.qkv, &blk.attn_out, &blk.fc, &blk.fc_out}) {
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
      std::string key = kPrefix + lin->hf_name;
      tensors.push_back({key + ".lora_A.weight", a});
      tensors.push_back({key + ".lora_B.weight", b});
      std::string suffix = module_suffix(lin->hf_name);
      targets.insert(suffix);
      layers.insert(layer);
      if (R != spec.r) rank_pattern[suffix] = R;
      if (std::fabs(alpha_c - spec.alpha) > 1e-6f * std::fabs(spec.alpha)) alpha_pattern[suffix] = alpha_c;
    }
    ++layer;
  }
  if (tensors.empty()) fail_runtime("the model has no LoRA adapters to save");
  json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
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
      {"modules_to_save", nullptr},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"revision", nullptr},
  };
  if (int(layers.size()) != model.config().n_layer) {
    cfg["layers_to_transform"] = std::vector<int>(layers.begin(), layers.end());
    cfg["layers_pattern"] = "h";
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
// The value of a PEFT rank_pattern/alpha_pattern entry matching a module, as PEFT matches them:
// the key is a regular expression matched at the end of the module name after a dot (or the whole name).
template <class T>
T pattern_lookup(const json& pattern, const std::string& module, T fallback) {
  if (!pattern.is_object()) return fallback;
  for (auto it = pattern.begin(); it != pattern.end(); ++it) {
    try {
      if (std::regex_match(module, std::regex("(.*\\.)?(" + it.key() + ")")) && it->is_number())
        return it->get<T>();
    } catch (const std::regex_error&) {
      if (module == it.key() && it->is_number()) return it->get<T>();
    }
  }
  return fallback;
}
}  // namespace

void adapter_load(Model& model, const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  const std::string st_path = (fs::path(dir) / "adapter_model.safetensors").string();
  if (!fs::is_directory(dir))
    fail_runtime("adapter directory '" + dir + "' does not exist", "pass the output directory of `lora train`");
  if (!fs::exists(st_path)) {
    if (fs::exists(fs::path(dir) / "adapter_model.bin"))
      fail_runtime("'" + dir + "' holds adapter_model.bin, a pickle; lora never unpickles files",
                   "convert it in Python: PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)");
    fail_runtime("'" + st_path + "' is missing", "an adapter directory holds adapter_config.json and adapter_model.safetensors");
  }
  json cfg = json_read_file(cfg_path);
  auto get_num = [&](const char* key, double fallback) {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) return fallback;
    if (!it->is_number()) fail_runtime("'" + cfg_path + "': key '" + key + "' should be a number, found " + it->dump());
    return it->get<double>();
  };
  std::string peft_type = cfg.value("peft_type", std::string("LORA"));
  if (peft_type != "LORA")
    fail_usage("'" + cfg_path + "' has peft_type " + peft_type + "; only LORA adapters are supported");
  if (cfg.contains("modules_to_save") && cfg["modules_to_save"].is_array() && !cfg["modules_to_save"].empty())
    fail_usage("'" + cfg_path + "' lists modules_to_save, which this version cannot load",
               "save the adapter without modules_to_save");
  const int r_default = int(get_num("r", 8));
  const double alpha_default = get_num("lora_alpha", 8);
  const bool rslora = cfg.value("use_rslora", false);
  const double dropout = get_num("lora_dropout", 0);

  SafetensorsFile st = SafetensorsFile::open(st_path);
  std::map<std::string, Linear*> by_name;
  for (Linear* lin : model_linears(model)) by_name[lin->hf_name] = lin;
  // Accept "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", with or without the
  // "transformer." part and with an adapter name (".default") as older PEFT versions wrote.
  std::regex key_re(R"(^(?:base_model\.model\.)?(?:transformer\.)?(.+)\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$)");
  std::map<std::string, std::pair<const SafetensorsEntry*, const SafetensorsEntry*>> pairs;
  std::vector<std::string> unknown;
  for (const auto& e : st.entries()) {
    std::smatch m;
    if (!std::regex_match(e.name, m, key_re) || !by_name.count(m[1])) {
      unknown.push_back(e.name);
      continue;
    }
    auto& p = pairs[m[1]];
    (m[2] == "A" ? p.first : p.second) = &e;
  }
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 8; ++i) list += "\n  " + unknown[i];
    if (unknown.size() > 8) list += "\n  ... and " + std::to_string(unknown.size() - 8) + " more";
    fail_usage("'" + st_path + "' has " + std::to_string(unknown.size()) +
                   " tensors that match no LoRA layer of this " + model.config().family + " model:" + list,
               "check that the adapter was trained on this base model");
  }
  if (pairs.empty()) fail_usage("'" + st_path + "' holds no LoRA tensors");
  Backend& be = model.backend();
  const DType dt = be.activation_dtype();
  LoraSpec spec;
  spec.r = r_default;
  spec.alpha = float(alpha_default);
  spec.rslora = rslora;
  spec.dropout = float(dropout);
  for (auto& [name, p] : pairs) {
    Linear& lin = *by_name[name];
    if (!p.first || !p.second)
      fail_usage("'" + st_path + "': " + name + " has lora_" + (p.first ? "A" : "B") + " but not lora_" +
                 (p.first ? "B" : "A"));
    Tensor a = st.to_f32(*p.first), b = st.to_f32(*p.second);
    const std::string suffix = module_suffix(name);
    int r = pattern_lookup<int>(cfg["rank_pattern"], name, r_default);
    r = pattern_lookup<int>(cfg["rank_pattern"], suffix, r);
    double alpha = pattern_lookup<double>(cfg["alpha_pattern"], name, alpha_default);
    alpha = pattern_lookup<double>(cfg["alpha_pattern"], suffix, alpha);
    if (a.ndim() != 2 || a.dim(0) != r || a.dim(1) != lin.in)
      fail_usage("'" + st_path + "': " + p.first->name + " has shape " + a.shape_str() + ", expected (" +
                 std::to_string(r) + ", " + std::to_string(lin.in) + ")",
                 "the adapter's rank or the base model's width does not match");
    if (b.ndim() != 2 || b.dim(0) != lin.out || b.dim(1) != r)
      fail_usage("'" + st_path + "': " + p.second->name + " has shape " + b.shape_str() + ", expected (" +
                 std::to_string(lin.out) + ", " + std::to_string(r) + ")",
                 "the adapter's rank or the base model's width does not match");
    LoraAdapter ad;
    ad.role = "all";
    ad.col0 = 0;
    ad.ncols = lin.out;
    ad.r = r;
    ad.alpha = float(alpha);
    ad.scale = peft_scale(float(alpha), r, rslora);
    ad.a = be.alloc(a.shape, DType::f32);
    ad.b = be.alloc(b.shape, DType::f32);
    be.upload(ad.a, a);
    be.upload(ad.b, b);
    ad.da = be.alloc(a.shape, DType::f32);
    ad.db = be.alloc(b.shape, DType::f32);
    ad.a_val = dt == DType::f32 ? ad.a : be.alloc(a.shape, dt);
    ad.b_val = dt == DType::f32 ? ad.b : be.alloc(b.shape, dt);
    lin.dropout = spec.dropout;
    lin.adapters.clear();
    lin.adapters.push_back(std::move(ad));
  }
  model.lora_loaded(spec);
  model.sync_values();
}

}  // namespace lora
