// `lora export`: GGUF LoRA files for llama.cpp, PEFT's canonical layout, merged models. See export_gguf.h
// for the formats and where their conventions come from (llama.cpp's convert_lora_to_gguf.py, gguf-py
// and src/llama-adapter.cpp).
#include "core/commands/export_gguf.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/commands/output_dir.h"
#include "core/formats/family.h"
#include "core/formats/safetensors.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

ExportFormat export_format_parse(const std::string& name) {
  if (name == "gguf") return ExportFormat::gguf;
  if (name == "peft") return ExportFormat::peft;
  if (name == "merged") return ExportFormat::merged;
  fail_usage("unknown export format '" + name + "'; the formats are gguf, peft, merged",
             "gguf: a llama.cpp LoRA file; peft: PEFT's adapter layout; merged: a HF model with the adapter folded in");
}

std::string adapter_base_dir_resolve(const AdapterFile& ad) {
  if (ad.base_name.empty()) return "";
  std::error_code ec;
  for (const fs::path& cand : {fs::path(ad.base_name), fs::path(ad.dir) / ad.base_name})
    if (fs::is_regular_file(cand / "config.json", ec)) return cand.string();
  return "";
}

// ---- GGUF ----

namespace {
// Every llama.cpp architecture some family exports to ("gpt2, llama and qwen2").
std::string gguf_arch_names() {
  std::vector<std::string> names;
  for (const Family* f : families())
    for (const GgufArch& a : f->gguf_archs) names.push_back(a.name);
  return names_and(names);
}
}  // namespace

std::string gguf_arch_for(const ModelConfig& cfg) {
  const Family* family = family_find(cfg.family);
  const std::string arch = family ? family->gguf_arch(cfg) : "";
  if (!arch.empty()) return arch;
  fail_usage("cannot export a LoRA adapter for a " + cfg.family + " (model_type " + cfg.model_type +
                 ") model to GGUF: lora maps the llama.cpp architectures " + gguf_arch_names(),
             "use --to peft or --to merged for this model");
}

std::string gguf_tensor_name(const std::string& arch, const std::string& module) {
  const Family* family = family_for_gguf_arch(arch);
  return family ? family->gguf_tensor(module) : "";
}

Tensor gguf_rotary_permute_rows(const Tensor& w, int n_head) {
  const int64_t rows = w.dim(0), cols = w.numel() / rows;
  if (n_head <= 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0)
    fail_runtime("cannot reorder " + std::to_string(rows) + " rows into " + std::to_string(n_head) +
                 " rotary heads of an even head size");
  const int64_t half = rows / n_head / 2;
  Tensor out = tensor_host(w.shape);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)  // (head, pair i, member j) <- (head, half j, index i)
        std::memcpy(out.f32() + ((h * half + i) * 2 + j) * cols, w.f32() + ((h * 2 + j) * half + i) * cols,
                    size_t(cols) * sizeof(float));
  return out;
}

namespace {

// Little-endian GGUF v3 serialisation into a byte string.
constexpr uint32_t kGgufVersion = 3;
constexpr size_t kGgufAlignment = 32;   // general.alignment's default
constexpr size_t kGgmlMaxName = 64;     // GGML_MAX_NAME, including the terminating zero
enum GgufValueType : uint32_t { GGUF_VALUE_TYPE_UINT32 = 4, GGUF_VALUE_TYPE_FLOAT32 = 6, GGUF_VALUE_TYPE_STRING = 8 };
constexpr uint32_t kGgmlTypeF32 = 0;

struct GgufBytes {
  std::string s;
  void raw(const void* p, size_t n) { s.append(static_cast<const char*>(p), n); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void str(const std::string& v) { u64(v.size()); s += v; }
  void pad() { s.append((kGgufAlignment - s.size() % kGgufAlignment) % kGgufAlignment, '\0'); }
  void kv_str(const std::string& k, const std::string& v) { str(k); u32(GGUF_VALUE_TYPE_STRING); str(v); }
  void kv_u32(const std::string& k, uint32_t v) { str(k); u32(GGUF_VALUE_TYPE_UINT32); u32(v); }
  void kv_f32(const std::string& k, float v) { str(k); u32(GGUF_VALUE_TYPE_FLOAT32); raw(&v, 4); }
};

bool host_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

}  // namespace

ExportReport gguf_export_lora(const AdapterFile& ad, const std::string& arch, const std::string& path, int n_head,
                              int n_kv_head) {
  if (!host_little_endian()) fail_runtime("GGUF export needs a little-endian host");
  const GgufArch* arch_info = nullptr;
  family_for_gguf_arch(arch, &arch_info);
  const bool rotary_rows = arch_info && arch_info->rotary_permute;  // see gguf_rotary_permute_rows
  if (rotary_rows && (n_head <= 0 || n_kv_head <= 0))
    fail_runtime("GGUF export for the llama arch needs the base's head counts (internal error)");
  ExportReport rep;
  rep.arch = arch;
  // One alpha for the file: the first module's scale * r (exact for uniform adapters, rsLoRA folded in).
  const AdapterModule& first = ad.modules.front();
  rep.alpha = first.scale * float(first.r);
  if (!(rep.alpha > 0) || !std::isfinite(rep.alpha))
    fail_usage("adapter '" + ad.dir + "' has scale " + std::to_string(first.scale) + " on " + first.module +
                   "; llama.cpp needs a positive adapter.lora.alpha (0 means scale 1 there)",
               "check lora_alpha in adapter_config.json");
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::vector<std::string> unmapped;
  std::set<std::string> seen;
  for (const auto& m : ad.modules) {
    std::string name = gguf_tensor_name(arch, m.module);
    if (name.empty()) {
      unmapped.push_back(m.module);
      continue;
    }
    if (!seen.insert(name).second) fail_usage("adapter '" + ad.dir + "' adapts " + name + " twice (" + m.module + ")");
    Tensor b = m.b;
    const float k = m.scale * float(m.r) / rep.alpha;  // llama.cpp applies alpha / r_m
    if (std::fabs(k - 1.0f) > 1e-6f) {
      b = tensor_host(m.b.shape);
      for (int64_t i = 0; i < b.numel(); ++i) b.f32()[i] = m.b.f32()[i] * k;
      ++rep.rescaled;
    }
    const bool is_q = name.find(".attn_q.weight") != std::string::npos;
    if (rotary_rows && (is_q || name.find(".attn_k.weight") != std::string::npos)) {
      const int heads = is_q ? n_head : n_kv_head;
      if (b.dim(0) % (2 * int64_t(heads)) != 0)
        fail_usage("adapter '" + ad.dir + "' has " + std::to_string(b.dim(0)) + " output rows on " + m.module +
                       ", which do not split into the base's " + std::to_string(heads) + " heads of an even size",
                   "check that the base model (--base, or the adapter's base_model_name_or_path) is the one it was "
                   "trained on");
      b = gguf_rotary_permute_rows(b, heads);  // B's rows only: (P B) A = P (B A)
    }
    tensors.push_back({name + ".lora_a", m.a});
    tensors.push_back({name + ".lora_b", b});
  }
  if (!unmapped.empty()) {
    std::string list;
    for (size_t i = 0; i < unmapped.size() && i < 12; ++i) list += "\n  " + unmapped[i];
    if (unmapped.size() > 12) list += "\n  ... and " + std::to_string(unmapped.size() - 12) + " more";
    fail_usage("adapter '" + ad.dir + "' adapts " + std::to_string(unmapped.size()) +
                   " module(s) that have no llama.cpp " + arch + " tensor:" + list,
               "GGUF export covers the attention and MLP projections; embeddings, heads and other modules cannot "
               "be represented (use --to merged)");
  }

  GgufBytes g;
  g.raw("GGUF", 4);
  g.u32(kGgufVersion);
  g.u64(tensors.size());
  g.u64(6);  // metadata pairs below
  g.kv_str("general.architecture", arch);
  g.kv_str("general.type", "adapter");
  g.kv_str("general.name", fs::path(ad.dir).filename().empty() ? fs::path(ad.dir).parent_path().filename().string()
                                                                : fs::path(ad.dir).filename().string());
  g.kv_u32("general.file_type", 0);  // LLAMA_FTYPE_ALL_F32
  g.kv_str("adapter.type", "lora");
  g.kv_f32("adapter.lora.alpha", rep.alpha);
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.size() >= kGgmlMaxName)
      fail_usage("GGUF tensor name '" + name + "' is longer than llama.cpp's limit of " +
                 std::to_string(kGgmlMaxName - 1) + " characters");
    g.str(name);
    g.u32(uint32_t(t.ndim()));
    for (int d = t.ndim() - 1; d >= 0; --d) g.u64(uint64_t(t.dim(d)));  // ggml order: innermost first
    g.u32(kGgmlTypeF32);
    g.u64(offset);
    offset += (t.nbytes() + kGgufAlignment - 1) / kGgufAlignment * kGgufAlignment;
  }
  g.pad();
  for (const auto& [name, t] : tensors) {
    g.raw(t.f32(), t.nbytes());
    g.pad();
  }
  file_write_atomic(path, g.s);
  rep.tensors = int(tensors.size());
  if (rep.rescaled)
    rep.notes.push_back(std::to_string(rep.rescaled) + " module(s) have their own scale (rank_pattern, alpha_pattern or "
                        "rsLoRA); it is folded into their lora_b, as llama.cpp has one alpha per file");
  return rep;
}

// ---- PEFT ----

int peft_export(const AdapterFile& ad, const std::string& family, const std::string& out_dir) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::set<std::string> suffixes;
  for (const auto& m : ad.modules) {
    const std::string key = "base_model.model." + module_name_canonical(m.module, family);
    tensors.push_back({key + ".lora_A.weight", m.a});
    tensors.push_back({key + ".lora_B.weight", m.b});
    suffixes.insert(m.module.substr(m.module.rfind('.') + 1));
  }
  const std::vector<Tensor> head = adapter_classifier_head(ad);
  for (int i = 0; i < int(head.size()); ++i) tensors.push_back({std::string("base_model.model.") + kClassifierNames[i], head[i]});
  json cfg = ad.config;
  // Keys PEFT reads, with PEFT's defaults where an older layout left them out. rank_pattern and
  // alpha_pattern are kept: adapter_file_read checked that they give each module's tensors.
  cfg["peft_type"] = "LORA";
  cfg["r"] = ad.r;
  cfg["lora_alpha"] = ad.alpha;
  cfg["use_rslora"] = ad.rslora;
  if (!cfg.contains("target_modules") || cfg["target_modules"].is_null())
    cfg["target_modules"] = std::vector<std::string>(suffixes.begin(), suffixes.end());
  auto fill = [&](const char* key, const json& v) {
    if (!cfg.contains(key)) cfg[key] = v;
  };
  fill("base_model_name_or_path", ad.base_name);
  const Family* fam = family_find(family);
  fill("task_type", fam ? fam->peft_task_type : "CAUSAL_LM");
  fill("lora_dropout", 0.0);
  fill("bias", "none");
  fill("rank_pattern", json::object());
  fill("alpha_pattern", json::object());
  if (!head.empty()) {
    cfg["modules_to_save"] = {"classifier"};
    cfg["task_type"] = "SEQ_CLS";
  }
  fill("modules_to_save", nullptr);
  fill("layers_to_transform", nullptr);
  fill("layers_pattern", nullptr);
  fill("init_lora_weights", true);
  fill("revision", nullptr);
  if (fam && fam->peft_fan_in_fan_out) cfg["fan_in_fan_out"] = true;
  fill("fan_in_fan_out", false);
  cfg["inference_mode"] = true;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) fail_runtime("cannot create directory '" + out_dir + "': " + ec.message());
  safetensors_write((fs::path(out_dir) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}}, DType::f32);
  file_write_atomic((fs::path(out_dir) / "adapter_config.json").string(), cfg.dump(2) + "\n");
  return int(tensors.size());
}

// ---- the command ----

ExportReport export_run(const ExportOptions& o) {
  ExportReport rep;
  if (!o.labels.empty() && o.format != ExportFormat::merged)
    fail_usage("--labels names a classification head's labels in a merged model; --to " +
                   std::string(o.format == ExportFormat::gguf ? "gguf" : "peft") + " writes an adapter",
               "use --to merged, or leave out --labels");
  if (o.format == ExportFormat::merged) {
    MergeOptions m;
    m.adapter_dir = o.adapter_dir;
    m.base_dir = o.base_dir;
    m.out_dir = o.out;
    m.dtype = o.dtype;
    m.labels = o.labels;
    m.overwrite = o.overwrite;
    if (m.base_dir.empty()) {
      AdapterFile ad = adapter_file_read(o.adapter_dir);
      m.base_dir = adapter_base_dir_resolve(ad);
      if (m.base_dir.empty())
        fail_usage("--to merged needs the base model: the adapter names '" + ad.base_name +
                       "', which is not a model directory here",
                   "pass --base MODEL_DIR");
      rep.notes.push_back("base model: " + m.base_dir + " (the adapter's base_model_name_or_path)");
    }
    MergeReport mr = merge_run(m);
    rep.tensors = int(mr.tensors_written);
    for (auto& n : mr.notes) rep.notes.push_back(n);
    return rep;
  }
  AdapterFile ad = adapter_file_read(o.adapter_dir);
  std::string base_dir = o.base_dir.empty() ? adapter_base_dir_resolve(ad) : o.base_dir;
  std::string family = adapter_family_guess(ad);
  ModelConfig cfg;
  if (!base_dir.empty()) {
    cfg = model_config_load(base_dir);
    family = cfg.family;
  }
  output_path_check(o.out, o.overwrite, {o.adapter_dir, base_dir});
  if (o.format == ExportFormat::gguf) {
    if (!ad.saved.empty())
      fail_usage("adapter '" + o.adapter_dir + "' saves a trained classification head (modules_to_save: classifier.dense "
                 "and classifier.out_proj, weights and biases), which a llama.cpp LoRA file cannot carry: llama.cpp "
                 "reads only .lora_a/.lora_b pairs added to the base model's tensors, and a base without that head "
                 "(roberta-base) has nothing to add them to",
                 "merge it (lora merge, or --to merged) and convert the merged RobertaForSequenceClassification with "
                 "llama.cpp's convert_hf_to_gguf.py (its bert arch with a classification head; name a 2-label head's "
                 "labels with --labels, which that converter needs); or use --to peft");
    if (fs::is_directory(o.out)) fail_usage("--out '" + o.out + "' is a directory; GGUF export writes one file",
                                            "give a file path such as adapter.gguf");
    std::string arch;
    if (!base_dir.empty()) {
      arch = gguf_arch_for(cfg);
      // llama.cpp's llama and qwen2 graphs (src/models/llama.cpp, qwen2.cpp) build full attention on every
      // layer: a base's sliding window is lost in its GGUF. That concerns the base model, not the adapter
      // file, and changes nothing for sequences no longer than the window, so it is a note, not a refusal.
      int sliding = 0;  // layers with a window
      for (int l = 0; l < cfg.n_layer; ++l) sliding += cfg.window_of(l) > 0;
      const std::string where = sliding == cfg.n_layer ? "every layer"
                                : "on " + std::to_string(sliding) + " of " + std::to_string(cfg.n_layer) + " layers";
      if (sliding > 0)
        rep.notes.push_back("the base model attends through a sliding window of " + std::to_string(cfg.sliding_window) +
                            " tokens (" + where + "), which llama.cpp's " + arch + " architecture does not "
                            "implement: there every layer attends over the whole context, so llama.cpp's outputs "
                            "match transformers' and lora's only for sequences of at most " +
                            std::to_string(cfg.sliding_window) + " tokens");
    } else if (const Family* fam = family_find(family); fam && fam->gguf_archs.size() == 1) {
      arch = fam->gguf_archs[0].name;  // the module names tell the architecture
    } else {
      fail_usage("cannot tell which llama.cpp architecture adapter '" + o.adapter_dir + "' is for" +
                     (fam && fam->gguf_archs.size() > 1 ? " (" + names_and(fam->model_types) + " share tensor names)"
                                                        : std::string()) +
                     "; its base_model_name_or_path '" + ad.base_name + "' is not a model directory here",
                 "pass --base MODEL_DIR (only its config.json is read)");
    }
    ExportReport g = gguf_export_lora(ad, arch, o.out, cfg.n_head, cfg.n_kv_head);
    for (auto& n : rep.notes) g.notes.insert(g.notes.begin(), n);
    return g;
  }
  const std::string tmp = output_tmp_dir(o.out);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  rep.tensors = peft_export(ad, family, tmp);
  output_dir_install(tmp, o.out);
  return rep;
}

}  // namespace lora
