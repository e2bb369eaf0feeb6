// `lora info` (see inspect.h): telling the kinds apart, and inspecting model directories, adapters,
// safetensors files and GGUF files. Runs and datasets are in core/commands/inspect_run.cpp, the human summary
// in core/commands/inspect_text.cpp. Every reader here is the one training uses (Checkpoint, adapter_file_read,
// SafetensorsFile), so what info accepts, train accepts too.
#include "core/commands/inspect.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "core/base/error.h"
#include "core/formats/checkpoint.h"
#include "core/formats/gguf_read.h"
#include "core/formats/safetensors.h"
#include "core/model/adapter.h"
#include "core/text/tokenizer.h"

namespace lora {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

bool file_starts_with(const std::string& path, const char* magic, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string head(n, '\0');
  return in.read(head.data(), std::streamsize(n)) && std::memcmp(head.data(), magic, n) == 0;
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

uint64_t file_bytes(const fs::path& p) {
  std::error_code ec;
  uint64_t n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  for (char& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

const char* kKindsHint =
    "lora info reads a run directory (the output of lora train), an adapter directory (adapter_config.json), "
    "a model directory (config.json + safetensors), a tokenizer directory (vocab.json + merges.txt, "
    "tokenizer.json or tokenizer.model), a tokenized dataset (.h5 in data.cache_dir), a .safetensors file or a "
    ".gguf file";

// The tokenizer files lora reads or copies, in the order tokenizer_load looks for them.
const char* kTokenizerFiles[] = {"vocab.json", "merges.txt", "encoder.json", "vocab.bpe", "tokenizer.model",
                                 "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                 "added_tokens.json"};

const char* norm_name(NormKind k) { return k == NormKind::rmsnorm ? "rmsnorm" : "layernorm"; }
const char* pos_name(PosKind k) { return k == PosKind::rotary ? "rotary" : "learned"; }
const char* act_name(ActKind k) {
  return k == ActKind::swiglu ? "swiglu" : k == ActKind::gelu_erf ? "gelu (erf)" : "gelu (tanh)";
}

ojson config_json(const ModelConfig& c) {
  ojson j;
  j["layers"] = c.n_layer;
  j["d_model"] = c.d_model;
  j["heads"] = c.n_head;
  j["kv_heads"] = c.n_kv_head > 0 ? c.n_kv_head : c.n_head;
  j["head_dim"] = c.head_dim > 0 ? c.head_dim : (c.n_head > 0 ? c.d_model / c.n_head : 0);
  j["d_ff"] = c.d_ff;
  j["vocab_size"] = c.vocab_size;
  j["context"] = c.max_positions;
  j["norm"] = norm_name(c.norm);
  j["position"] = pos_name(c.pos);
  j["activation"] = act_name(c.act);
  j["norm_eps"] = c.norm_eps;
  if (c.pos == PosKind::rotary) j["rope_theta"] = c.rope_theta;
  j["causal"] = c.causal;
  j["post_norm"] = c.post_norm;
  j["tied_head"] = c.tied_head;
  j["bias"] = c.bias;
  if (c.has_window()) {
    j["sliding_window"] = c.sliding_window;
    if (!c.sliding_layers.empty()) {  // Qwen2: the window applies to these layers only
      ojson layers = ojson::array();
      for (int l = 0; l < c.n_layer; ++l)
        if (c.window_of(l) > 0) layers.push_back(l);
      j["sliding_layers"] = layers;
    }
  }
  j["head"] = c.head == HeadKind::classifier ? (c.num_labels == 1 ? "regression" : "classifier") : "lm";
  if (c.head == HeadKind::classifier) j["num_labels"] = c.num_labels;
  return j;
}

// Tensors, parameters, bytes and tensor count by dtype over safetensors files.
struct TensorTally {
  int64_t tensors = 0, parameters = 0;
  uint64_t bytes = 0;
  std::map<std::string, int64_t> dtypes;  // dtype -> tensors
  void add(const SafetensorsFile& f, const std::string& path) {
    for (const auto& e : f.entries()) {
      ++tensors;
      parameters += e.numel();
      dtypes[st_dtype_name(e.dtype)] += 1;
    }
    bytes += file_bytes(path);
  }
};

ojson tally_json(const TensorTally& t, ojson j) {
  j["tensors"] = t.tensors;
  j["parameters"] = t.parameters;
  j["dtypes"] = t.dtypes;
  j["bytes"] = t.bytes;
  return j;
}

// "transformer.h.3.attn.c_attn" -> 3 (the block index in GPT-2 and LLaMA-family names), -1 when none.
int module_layer(const std::string& module) {
  static const std::regex re(R"((?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(module, m, re) ? std::stoi(m[1].str()) : -1;
}

}  // namespace

bool path_is_hdf5(const std::string& path) { return file_starts_with(path, "\x89HDF\r\n\x1a\n", 8); }

InspectKind inspect_kind(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();  // "dir/" -> "dir"
  std::error_code ec;
  if (!fs::exists(p, ec))
    fail_runtime("'" + path + "' does not exist", "check the path; " + std::string(kKindsHint));
  if (is_dir(p)) {
    if (is_file(p / "recipe.yaml") && (is_dir(p / "checkpoints") || is_file(p / "metrics.jsonl"))) return InspectKind::run;
    if (is_file(p / "adapter_config.json")) return InspectKind::adapter;
    if (is_file(p / "config.json")) return InspectKind::model;
    for (const char* name : kTokenizerFiles)
      if (is_file(p / name)) return InspectKind::tokenizer;  // tokenizer files alone (data.tokenizer)
    if (is_file(p / "COMMITTED") && is_file(p / "state.json"))
      fail_usage("'" + path + "' is one checkpoint of a training run, not a run, adapter or model directory",
                 "run `lora info " + p.parent_path().parent_path().string() + "` to see the run and its checkpoints");
    if (p.filename() == "checkpoints" && is_file(p.parent_path() / "recipe.yaml"))
      fail_usage("'" + path + "' is the checkpoints folder of a training run, not a run, adapter or model directory",
                 "run `lora info " + p.parent_path().string() + "` to see the run and its checkpoints");
    fail_usage("'" + path + "' is a directory with neither recipe.yaml + checkpoints/ (a run), adapter_config.json "
                   "(an adapter), config.json (a model) nor tokenizer files",
               kKindsHint);
  }
  if (!is_file(p)) fail_usage("'" + path + "' is neither a regular file nor a directory", kKindsHint);
  std::ifstream probe(path, std::ios::binary);
  if (!probe) fail_runtime("cannot open '" + path + "' for reading", "check the file's permissions");
  if (path_is_hdf5(path)) return InspectKind::dataset;
  if (file_starts_with(path, "GGUF", 4)) return InspectKind::gguf;
  const std::string ext = lower_ext(p);
  if (ext == ".safetensors") return InspectKind::safetensors;
  if (ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt" || ext == ".pkl")
    fail_usage("'" + path + "' is a pickled PyTorch file; lora never unpickles files, which can run arbitrary code",
               "convert the model once to safetensors with transformers' save_pretrained(..., safe_serialization=True)");
  // A safetensors file under another name: its header starts with a u64 length and then '{'.
  if (file_bytes(p) >= 10) {
    std::ifstream in(path, std::ios::binary);
    char head[9] = {};
    if (in.read(head, 9) && head[8] == '{') {
      uint64_t n = 0;
      std::memcpy(&n, head, 8);
      if (n >= 2 && n <= file_bytes(p) - 8) return InspectKind::safetensors;
    }
  }
  if (ext == ".h5" || ext == ".hdf5")
    fail_runtime("'" + path + "' is named like a tokenized dataset but is not an HDF5 file (truncated or corrupt)",
                 "delete it and run `lora prepare` again");
  if (ext == ".gguf")
    fail_runtime("'" + path + "' is named like a GGUF file but does not start with \"GGUF\" (truncated or corrupt)",
                 "write it again with `lora export --to gguf`");
  fail_usage("'" + path + "' is not a file lora info knows: not a tokenized dataset (HDF5), safetensors or GGUF file",
             kKindsHint);
}

ojson inspect_path(const std::string& path, const InspectOptions& o) {
  switch (inspect_kind(path)) {
    case InspectKind::run: return inspect_run(path);
    case InspectKind::adapter: return inspect_adapter(path);
    case InspectKind::model: return inspect_model(path);
    case InspectKind::tokenizer: return inspect_tokenizer(path);
    case InspectKind::dataset: return inspect_dataset(path);
    case InspectKind::safetensors: return inspect_safetensors(path, o);
    case InspectKind::gguf: return inspect_gguf(path, o);
  }
  fail_usage("'" + path + "': unknown kind");
}

// Adds "tokenizer_files" (those of kTokenizerFiles in dir) and "tokenizer" {kind, vocab_size, eos_id, bos_id
// (-1: none put before examples), fingerprint} to j; a tokenizer that cannot be loaded is "tokenizer_error",
// or, with must_load, the error itself.
ojson tokenizer_json(const std::string& dir, ojson j, bool must_load) {
  std::vector<std::string> tok_files;
  for (const char* name : kTokenizerFiles)
    if (is_file(fs::path(dir) / name)) tok_files.push_back(name);
  j["tokenizer_files"] = tok_files;
  if (tok_files.empty()) return j;
  try {
    auto tok = tokenizer_load(dir);
    j["tokenizer"] = {{"kind", tok->kind()},     {"vocab_size", tok->vocab_size()}, {"eos_id", tok->eos_id()},
                      {"bos_id", tok->bos_id()}, {"fingerprint", tok->fingerprint()}};
  } catch (const Error& e) {
    if (must_load) throw;
    j["tokenizer_error"] = e.what();
  }
  return j;
}

// {"kind": "model", "path", "family", "model_type", "config": {layers, d_model, heads, kv_heads, head_dim,
//  d_ff, vocab_size, context, norm, position, activation, ..., sliding_window and sliding_layers (the layers
//  it applies to, where not every layer) when some layer attends through a window}, "tensors", "parameters",
//  "dtypes", "bytes", "weight_files": [...], "shards", "sharded", and tokenizer_json's keys}
ojson inspect_model(const std::string& dir) {
  Checkpoint ck = Checkpoint::open(dir);
  const ModelConfig& c = ck.config();
  TensorTally t;
  for (const std::string& f : ck.files()) t.add(SafetensorsFile::open(f), f);
  ojson j;
  j["kind"] = "model";
  j["path"] = dir;
  j["family"] = c.family;
  j["model_type"] = c.model_type;
  j["config"] = config_json(c);
  j = tally_json(t, j);
  std::vector<std::string> names;
  for (const std::string& f : ck.files()) names.push_back(fs::path(f).filename().string());
  j["weight_files"] = names;
  j["shards"] = names.size();
  j["sharded"] = is_file(fs::path(dir) / "model.safetensors.index.json");
  return tokenizer_json(dir, j, /*must_load=*/false);
}

// {"kind": "tokenizer", "path", "tokenizer_files": [...], "tokenizer": {kind, vocab_size, eos_id, bos_id,
//  fingerprint}}: a directory holding tokenizer files and no config.json (a recipe's data.tokenizer).
ojson inspect_tokenizer(const std::string& dir) {
  ojson j;
  j["kind"] = "tokenizer";
  j["path"] = dir;
  return tokenizer_json(dir, j, /*must_load=*/true);
}

// {"kind": "adapter", "path", "peft_type", "base_model_name_or_path", "r", "alpha", "scale", "rslora",
//  "module_scales": [distinct per-module scales], "targets": target_modules as written, "modules_adapted":
//  [module suffixes], "layers": [block indices], "rank_pattern", "alpha_pattern", "modules", "tensors",
//  "trainable_parameters" (LoRA and saved), "saved_modules": [tensors of modules_to_save],
//  "saved_parameters", "dtypes", "bytes", "written_by"}
ojson inspect_adapter(const std::string& dir) {
  AdapterFile ad = adapter_file_read(dir);
  ojson j;
  j["kind"] = "adapter";
  j["path"] = dir;
  j["peft_type"] = ad.config.value("peft_type", std::string("LORA"));
  j["base_model_name_or_path"] = ad.base_name;
  j["r"] = ad.r;
  j["alpha"] = ad.alpha;
  j["scale"] = ad.rslora ? ad.alpha / std::sqrt(float(ad.r)) : ad.alpha / float(ad.r);
  j["rslora"] = ad.rslora;
  std::set<float> scales;
  std::set<std::string> suffixes;
  std::set<int> layers;
  int64_t params = 0;
  for (const AdapterModule& m : ad.modules) {
    scales.insert(m.scale);
    suffixes.insert(m.module.substr(m.module.rfind('.') + 1));
    int l = module_layer(m.module);
    if (l >= 0) layers.insert(l);
    params += m.a.numel() + m.b.numel();
  }
  int64_t saved_params = 0;
  std::vector<std::string> saved;
  for (const auto& [name, t] : ad.saved) {
    saved.push_back(name);
    saved_params += t.numel();
  }
  j["module_scales"] = scales;
  j["targets"] = ad.config.contains("target_modules") ? ojson(ad.config["target_modules"]) : ojson();
  j["modules_adapted"] = suffixes;
  j["layers"] = layers;
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    auto it = ad.config.find(key);
    j[key] = it != ad.config.end() && it->is_object() ? ojson(*it) : ojson::object();
  }
  j["modules"] = ad.modules.size();
  SafetensorsFile f = SafetensorsFile::open(ad.weights_path);
  TensorTally t;
  t.add(f, ad.weights_path);
  j["tensors"] = t.tensors;
  j["trainable_parameters"] = params + saved_params;
  j["saved_modules"] = saved;  // fully trained tensors (PEFT's modules_to_save), e.g. a classification head
  j["saved_parameters"] = saved_params;
  j["dtypes"] = t.dtypes;
  j["bytes"] = t.bytes + file_bytes(ad.config_path);
  auto w = f.metadata().find("written_by");
  j["written_by"] = w != f.metadata().end() ? w->second : std::string();  // lora records it; PEFT does not
  return j;
}

// {"kind": "safetensors", "path", "tensors", "parameters", "dtypes", "bytes", "metadata": {...},
//  "entries": [{"name", "dtype", "shape"}] (the first max_list unless options.all), "entries_omitted"}
ojson inspect_safetensors(const std::string& path, const InspectOptions& o) {
  SafetensorsFile f = SafetensorsFile::open(path);
  TensorTally t;
  t.add(f, path);
  ojson j;
  j["kind"] = "safetensors";
  j["path"] = path;
  j = tally_json(t, j);
  j["metadata"] = f.metadata();
  ojson entries = ojson::array();
  size_t shown = 0;
  for (const auto& e : f.entries()) {
    if (!o.all && shown >= o.max_list) break;
    entries.push_back({{"name", e.name}, {"dtype", st_dtype_name(e.dtype)}, {"shape", e.shape}});
    ++shown;
  }
  j["entries"] = entries;
  j["entries_omitted"] = f.entries().size() - shown;
  return j;
}

// {"kind": "gguf", "path", "version", "bytes", "metadata": {key: value} (arrays cut to max_list items,
//  their length as "<key>.__count"), "tensors", "parameters", "types": {type: tensors},
//  "entries": [{"name", "type", "ne"}] (ggml order, innermost first), "entries_omitted"}
ojson inspect_gguf(const std::string& path, const InspectOptions& o) {
  GgufFile g = gguf_file_read(path, o.all ? size_t(-1) : o.max_list);
  ojson j;
  j["kind"] = "gguf";
  j["path"] = path;
  j["version"] = g.version;
  j["bytes"] = g.file_bytes;
  j["metadata"] = g.metadata;
  std::map<std::string, int64_t> types;
  uint64_t params = 0;
  ojson entries = ojson::array();
  for (const auto& t : g.tensors) {
    uint64_t n = 1;
    for (uint64_t d : t.ne) n *= d;
    params += n;
    types[gguf_type_name(t.type)] += 1;
    if (o.all || entries.size() < o.max_list)
      entries.push_back({{"name", t.name}, {"type", gguf_type_name(t.type)}, {"ne", t.ne}});
  }
  j["tensors"] = g.tensors.size();
  j["parameters"] = params;
  j["types"] = types;
  j["entries"] = entries;
  j["entries_omitted"] = g.tensors.size() - entries.size();
  return j;
}

}  // namespace lora
