// `lora export` (core/export_gguf.h): every format read back. GGUF files are parsed by a minimal,
// independent GGUF v3 reader below (header, typed metadata, tensor infos with ggml-order dims, aligned
// data) and compared with the adapter's tensors; PEFT output is loaded with adapter_load and checked
// against PEFT's own logits; merged output against PEFT's merge_and_unload. The same GGUF files are
// checked with the `gguf` Python package by scripts/check_gguf_export.py.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/adapter.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/export_gguf.h"
#include "core/fsutil.h"
#include "core/merge.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {
const std::string kGolden = std::string(LORA_FIXTURES) + "/golden";


// ---- a minimal GGUF v3 reader, written from the format description only ----
struct GgufTensor {
  std::vector<uint64_t> ne;  // ggml order
  uint32_t type = 0;
  uint64_t offset = 0;
  std::vector<float> data;
};
struct Gguf {
  uint32_t version = 0;
  std::map<std::string, std::string> strings;
  std::map<std::string, float> floats;
  std::map<std::string, uint32_t> u32s;
  std::map<std::string, GgufTensor> tensors;
};

Gguf gguf_read(const std::string& path) {
  std::string s = file_read(path);
  size_t p = 0;
  auto need = [&](size_t n) { REQUIRE(p + n <= s.size()); };
  auto u32 = [&] { need(4); uint32_t v; std::memcpy(&v, s.data() + p, 4); p += 4; return v; };
  auto u64 = [&] { need(8); uint64_t v; std::memcpy(&v, s.data() + p, 8); p += 8; return v; };
  auto str = [&] { uint64_t n = u64(); need(n); std::string v = s.substr(p, n); p += n; return v; };
  Gguf g;
  REQUIRE(s.compare(0, 4, "GGUF") == 0);
  p = 4;
  g.version = u32();
  const uint64_t n_tensors = u64(), n_kv = u64();
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = str();
    uint32_t type = u32();
    if (type == 8) g.strings[key] = str();
    else if (type == 6) { uint32_t bits = u32(); float f; std::memcpy(&f, &bits, 4); g.floats[key] = f; }
    else if (type == 4) g.u32s[key] = u32();
    else FAIL("unexpected metadata type " << type << " for " << key);
  }
  std::vector<std::string> order;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = str();
    GgufTensor t;
    uint32_t nd = u32();
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back(u64());
    t.type = u32();
    t.offset = u64();
    CHECK(t.offset % 32 == 0);
    g.tensors[name] = t;
    order.push_back(name);
  }
  const size_t data_start = (p + 31) / 32 * 32;
  for (auto& name : order) {
    GgufTensor& t = g.tensors[name];
    REQUIRE(t.type == 0);  // F32
    uint64_t n = 1;
    for (auto d : t.ne) n *= d;
    REQUIRE(data_start + t.offset + n * 4 <= s.size());
    t.data.resize(n);
    std::memcpy(t.data.data(), s.data() + data_start + t.offset, n * 4);
  }
  return g;
}

// (ncols, r) B times (r, in) A, scaled: the update s * B A as (out, in).
std::vector<double> delta(const float* b, const float* a, int64_t out, int64_t r, int64_t in, double s) {
  std::vector<double> d(out * in, 0.0);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < r; ++k)
      for (int64_t i = 0; i < in; ++i) d[o * in + i] += s * b[o * r + k] * a[k * in + i];
  return d;
}

Tensor reference(const std::string& name) {
  SafetensorsFile ref = SafetensorsFile::open(kGolden + "/reference.safetensors");
  return ref.to_f32(*ref.find(name));
}

// Checks a GGUF export against the adapter it came from: names, ggml dims, and the update llama.cpp
// applies, (alpha / r) * B_gguf A_gguf, equal to the adapter's scale * B A.
void check_gguf_against_adapter(const Gguf& g, const AdapterFile& ad, float expect_alpha) {
  CHECK(g.version == 3);
  CHECK(g.strings.at("general.architecture") == "gpt2");
  CHECK(g.strings.at("general.type") == "adapter");
  CHECK(g.strings.at("adapter.type") == "lora");
  CHECK(g.floats.at("adapter.lora.alpha") == doctest::Approx(expect_alpha));
  CHECK(g.tensors.size() == 2 * ad.modules.size());
  const float alpha = g.floats.at("adapter.lora.alpha");
  for (const auto& m : ad.modules) {
    const std::string name = gguf_tensor_name("gpt2", m.module);
    REQUIRE_MESSAGE(!name.empty(), m.module);
    const GgufTensor& a = g.tensors.at(name + ".lora_a");
    const GgufTensor& b = g.tensors.at(name + ".lora_b");
    const int64_t r = m.a.dim(0), in = m.a.dim(1), out = m.b.dim(0);
    CHECK(a.ne == std::vector<uint64_t>{uint64_t(in), uint64_t(r)});   // ggml: ne0 = in, ne1 = r
    CHECK(b.ne == std::vector<uint64_t>{uint64_t(r), uint64_t(out)});  // ggml: ne0 = r, ne1 = out
    CHECK(std::memcmp(a.data.data(), m.a.f32(), m.a.nbytes()) == 0);  // A carries over bit for bit
    auto ours = delta(b.data.data(), a.data.data(), out, r, in, alpha / double(r));
    auto ref = delta(m.b.f32(), m.a.f32(), out, r, in, m.scale);
    double max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      max_diff = std::max(max_diff, std::fabs(ours[i] - ref[i]));
      max_ref = std::max(max_ref, std::fabs(ref[i]));
    }
    INFO(name << " update relative error " << max_diff / max_ref);
    CHECK(max_diff <= 1e-6 * max_ref);
  }
}
}  // namespace

TEST_CASE("export format names") {
  CHECK(export_format_parse("gguf") == ExportFormat::gguf);
  CHECK(export_format_parse("peft") == ExportFormat::peft);
  CHECK(export_format_parse("merged") == ExportFormat::merged);
  Error e = error_of([] { export_format_parse("onnx"); });
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.what(), "gguf, peft, merged"));
}

TEST_CASE("llama.cpp tensor names") {
  CHECK(gguf_tensor_name("gpt2", "transformer.h.3.attn.c_attn") == "blk.3.attn_qkv.weight");
  CHECK(gguf_tensor_name("gpt2", "h.0.attn.c_proj") == "blk.0.attn_output.weight");
  CHECK(gguf_tensor_name("gpt2", "transformer.h.11.mlp.c_fc") == "blk.11.ffn_up.weight");
  CHECK(gguf_tensor_name("gpt2", "transformer.h.1.mlp.c_proj") == "blk.1.ffn_down.weight");
  CHECK(gguf_tensor_name("gpt2", "transformer.wte") == "");
  CHECK(gguf_tensor_name("llama", "model.layers.2.self_attn.q_proj") == "blk.2.attn_q.weight");
  CHECK(gguf_tensor_name("llama", "model.layers.2.self_attn.o_proj") == "blk.2.attn_output.weight");
  CHECK(gguf_tensor_name("qwen2", "model.layers.0.mlp.gate_proj") == "blk.0.ffn_gate.weight");
  CHECK(gguf_tensor_name("llama", "model.layers.0.mlp.down_proj") == "blk.0.ffn_down.weight");
  CHECK(gguf_tensor_name("llama", "lm_head") == "");
  ModelConfig c;
  c.family = "llama";
  c.model_type = "mistral";
  CHECK(gguf_arch_for(c) == "llama");
  c.model_type = "qwen2";
  CHECK(gguf_arch_for(c) == "qwen2");
  c.family = "roberta";
  c.model_type = "roberta";
  Error e = error_of([&] { gguf_arch_for(c); });
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.hint(), "--to merged"));
}

TEST_CASE("gguf: PEFT's golden adapter, read back") {
  const std::string out = temp_dir() + "/adapter.gguf";
  ExportOptions o;
  o.adapter_dir = kGolden + "/adapter";
  o.out = out;
  ExportReport rep = export_run(o);
  CHECK(rep.arch == "gpt2");
  CHECK(rep.tensors == 16);
  CHECK(rep.rescaled == 0);
  Gguf g = gguf_read(out);
  AdapterFile ad = adapter_file_read(kGolden + "/adapter");
  check_gguf_against_adapter(g, ad, 8.0f);  // r 4, alpha 8: alpha as written in adapter_config.json
  CHECK(g.tensors.count("blk.0.attn_qkv.weight.lora_a"));
  CHECK(g.tensors.count("blk.1.ffn_down.weight.lora_b"));
  for (const auto& [name, t] : g.tensors)  // B carries over unchanged when no module needs rescaling
    if (contains(name, "lora_b")) {
      for (const auto& m : ad.modules)
        if (gguf_tensor_name("gpt2", m.module) + ".lora_b" == name)
          CHECK(std::memcmp(t.data.data(), m.b.f32(), m.b.nbytes()) == 0);
    }
  // An existing file is refused without --overwrite, replaced with it.
  Error e = error_of([&] { export_run(o); });
  CHECK(contains(e.what(), "already exists"));
  o.overwrite = true;
  export_run(o);
}

TEST_CASE("gguf: rsLoRA folds sqrt(r) into alpha") {
  const std::string out = temp_dir() + "/rs.gguf";
  ExportOptions o;
  o.adapter_dir = kGolden + "/adapter-rslora";
  o.out = out;
  export_run(o);
  AdapterFile ad = adapter_file_read(kGolden + "/adapter-rslora");
  check_gguf_against_adapter(gguf_read(out), ad, 16.0f);  // alpha / sqrt(r) = 4 = alpha' / r: alpha' = 16
}

TEST_CASE("gguf: our block-structured q/v adapter is one LoRA on attn_qkv; other scales fold into B") {
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(kGolden + "/gpt2-tiny");
  Model m(*be, ck.config());
  m.load_base(ck);
  LoraSpec spec;
  spec.r = 2;
  spec.alpha = 6;
  spec.targets = {"q", "v", "down"};
  spec.init_seed = 5;
  m.lora_init(spec);
  trainables_perturb(m, 0.29f);
  const std::string adapter = temp_dir() + "/qv";
  adapter_save(m, adapter, kGolden + "/gpt2-tiny");
  ExportOptions o;
  o.adapter_dir = adapter;
  o.out = temp_dir() + "/qv.gguf";
  ExportReport rep = export_run(o);
  AdapterFile ad = adapter_file_read(adapter);
  // c_attn: rank 4 (2 + 2), alpha' 12 (scale 3); mlp.c_proj: rank 2, scale 3, folded: B * 3 * 2 / 12.
  CHECK(rep.alpha == doctest::Approx(12.0f));
  CHECK(rep.rescaled == 2);
  Gguf g = gguf_read(o.out);
  check_gguf_against_adapter(g, ad, 12.0f);
  CHECK(g.tensors.at("blk.0.attn_qkv.weight.lora_a").ne == std::vector<uint64_t>{32, 4});
  CHECK(g.tensors.at("blk.0.attn_qkv.weight.lora_b").ne == std::vector<uint64_t>{4, 96});
}

TEST_CASE("gguf: llama.cpp's rotary row order (convert_hf_to_gguf.py's LlamaModel.permute)") {
  // Per head of size HS, HF's halves (x_0..x_HS/2-1 | x_HS/2..) become adjacent pairs: row 2i+j <- row j*HS/2+i.
  Tensor w = tensor_host({8, 2});  // 2 heads of 4 rows, 2 columns: row k holds (k, 10k)
  for (int k = 0; k < 8; ++k) {
    w.f32()[2 * k] = float(k);
    w.f32()[2 * k + 1] = float(10 * k);
  }
  Tensor p = gguf_rotary_permute_rows(w, 2);
  const std::vector<int> expect = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int k = 0; k < 8; ++k) {
    CHECK(p.f32()[2 * k] == float(expect[k]));
    CHECK(p.f32()[2 * k + 1] == float(10 * expect[k]));
  }
  Tensor one = tensor_host({6, 1});  // one head of 6: halves (0 1 2 | 3 4 5) -> pairs (0 3)(1 4)(2 5)
  for (int k = 0; k < 6; ++k) one.f32()[k] = float(k);
  Tensor q = gguf_rotary_permute_rows(one, 1);
  CHECK(std::vector<float>(q.f32(), q.f32() + 6) == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(error_of([&] { gguf_rotary_permute_rows(one, 2); }).code() == EXIT_CODE_RUNTIME);  // heads of 3: odd
}

TEST_CASE("gguf: LLaMA-family adapters, q and k lora_b in llama.cpp's rotary order for llama, not for qwen2") {
  // PEFT's golden LLaMA adapter on llama-tiny: 4 query heads, 2 key/value heads, head size 8, r 4.
  const std::string golden = std::string(LORA_FIXTURES) + "/golden-llama";
  const AdapterFile ad = adapter_file_read(golden + "/adapter");
  const std::vector<int> head = {0, 4, 1, 5, 2, 6, 3, 7};  // HS 8: row 2i+j <- row 4j+i
  auto check = [&](const std::string& base, const std::string& arch, bool permuted) {
    ExportOptions o;
    o.adapter_dir = golden + "/adapter";
    o.base_dir = base;
    o.out = temp_dir() + "/" + arch + ".gguf";
    o.overwrite = true;
    ExportReport rep = export_run(o);
    CHECK(rep.arch == arch);
    CHECK(rep.tensors == 28);
    Gguf g = gguf_read(o.out);
    CHECK(g.strings.at("general.architecture") == arch);
    CHECK(g.floats.at("adapter.lora.alpha") == doctest::Approx(8.0f));
    for (const auto& m : ad.modules) {
      const std::string name = gguf_tensor_name(arch, m.module);
      INFO(m.module << " -> " << name);
      const GgufTensor& a = g.tensors.at(name + ".lora_a");
      const GgufTensor& b = g.tensors.at(name + ".lora_b");
      const int64_t out = m.b.dim(0), r = m.b.dim(1);
      CHECK(b.ne == std::vector<uint64_t>{uint64_t(r), uint64_t(out)});
      CHECK(std::memcmp(a.data.data(), m.a.f32(), m.a.nbytes()) == 0);  // A never changes
      const bool rotary = contains(name, "attn_q.") || contains(name, "attn_k.");
      if (rotary) CHECK(out == (contains(name, "attn_q.") ? 4 : 2) * 8);
      for (int64_t row = 0; row < out; ++row) {
        const int64_t src = permuted && rotary ? row / 8 * 8 + head[row % 8] : row;
        CHECK(std::memcmp(b.data.data() + row * r, m.b.f32() + src * r, size_t(r) * 4) == 0);
      }
    }
  };
  check(golden + "/llama-tiny", "llama", true);
  // The same base declared Qwen2: llama.cpp rotates halves there (NeoX style), the rows stay as they are.
  const std::string qwen = temp_dir() + "/qwen2-tiny";
  fs::create_directories(qwen);
  json cfg = json_read_file(golden + "/llama-tiny/config.json");
  cfg["model_type"] = "qwen2";
  cfg["architectures"] = {"Qwen2ForCausalLM"};
  file_write_atomic(qwen + "/config.json", cfg.dump(2));
  check(qwen, "qwen2", false);
}

TEST_CASE("gguf: a base with a sliding window exports with a note; llama.cpp's graphs attend over everything") {
  auto notes_for = [](const std::string& golden, const std::string& base) {
    ExportOptions o;
    o.adapter_dir = golden + "/adapter";
    o.base_dir = golden + "/" + base;
    o.out = temp_dir() + "/adapter.gguf";
    ExportReport rep = export_run(o);
    CHECK(rep.tensors == 28);
    std::string all;
    for (const auto& n : rep.notes) all += n + "\n";
    return all;
  };
  const std::string fx = std::string(LORA_FIXTURES);
  std::string qwen2 = notes_for(fx + "/golden-qwen2-swa", "qwen2-swa-tiny");
  CHECK(contains(qwen2, "sliding window of 5 tokens (on 1 of 2 layers)"));
  CHECK(contains(qwen2, "llama.cpp's qwen2 architecture does not implement"));
  CHECK(contains(qwen2, "only for sequences of at most 5 tokens"));
  std::string mistral = notes_for(fx + "/golden-mistral", "mistral-tiny");
  CHECK(contains(mistral, "sliding window of 5 tokens (every layer)"));
  CHECK(contains(mistral, "llama.cpp's llama architecture"));
  CHECK(!contains(notes_for(fx + "/golden-llama", "llama-tiny"), "sliding window"));
}

TEST_CASE("gguf refusals: unmappable modules, unknown arch, a directory as --out") {
  SUBCASE("a module llama.cpp has no tensor for") {
    std::string dir = temp_dir() + "/emb";
    fs::create_directories(dir);
    SafetensorsFile st = SafetensorsFile::open(kGolden + "/adapter/adapter_model.safetensors");
    std::vector<std::pair<std::string, Tensor>> t;
    for (const auto& e : st.entries()) t.push_back({e.name, st.to_f32(e)});
    t.push_back({"base_model.model.transformer.h.0.attn.q_attn.lora_A.weight", tensor_host({4, 32})});
    t.push_back({"base_model.model.transformer.h.0.attn.q_attn.lora_B.weight", tensor_host({32, 4})});
    safetensors_write(dir + "/adapter_model.safetensors", t, {});
    fs::copy_file(kGolden + "/adapter/adapter_config.json", dir + "/adapter_config.json");
    ExportOptions o;
    o.adapter_dir = dir;
    o.out = temp_dir() + "/x.gguf";
    Error e = error_of([&] { export_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "transformer.h.0.attn.q_attn"));
    CHECK_FALSE(fs::exists(o.out));
  }
  SUBCASE("LLaMA-family names without a base config") {
    std::string dir = temp_dir() + "/llama";
    fs::create_directories(dir);
    std::vector<std::pair<std::string, Tensor>> t = {
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", tensor_host({4, 32})},
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", tensor_host({32, 4})}};
    safetensors_write(dir + "/adapter_model.safetensors", t, {});
    file_write_atomic(dir + "/adapter_config.json", R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                      "base_model_name_or_path": "meta-llama/Llama-3.2-1B"})");
    ExportOptions o;
    o.adapter_dir = dir;
    o.out = temp_dir() + "/x.gguf";
    Error e = error_of([&] { export_run(o); });
    CHECK(contains(e.what(), "llama, mistral and qwen2 share tensor names"));
    CHECK(contains(e.hint(), "--base"));
  }
  SUBCASE("a LLaMA base whose heads do not split the adapter's q rows") {
    const std::string golden = std::string(LORA_FIXTURES) + "/golden-llama";
    const std::string base = temp_dir() + "/three-heads";
    fs::create_directories(base);
    json cfg = json_read_file(golden + "/llama-tiny/config.json");
    cfg["num_attention_heads"] = 3;  // head_dim 8 as before: 24 query rows where the adapter has 32
    cfg["num_key_value_heads"] = 1;
    file_write_atomic(base + "/config.json", cfg.dump(2));
    ExportOptions o;
    o.adapter_dir = golden + "/adapter";
    o.base_dir = base;
    o.out = temp_dir() + "/x.gguf";
    Error e = error_of([&] { export_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "32 output rows on "));
    CHECK(contains(e.what(), "q_proj"));
    CHECK(contains(e.hint(), "base model"));
    CHECK_FALSE(fs::exists(o.out));
  }
  SUBCASE("--out is a directory") {
    ExportOptions o;
    o.adapter_dir = kGolden + "/adapter";
    o.out = temp_dir();
    o.overwrite = true;
    Error e = error_of([&] { export_run(o); });
    CHECK(contains(e.what(), "is a directory"));
  }
}

TEST_CASE("peft: older layouts become PEFT's canonical one, with the same outputs") {
  // Keys with an adapter name and without "base_model.model.transformer.", a config with keys missing.
  std::string old = temp_dir() + "/old";
  fs::create_directories(old);
  SafetensorsFile st = SafetensorsFile::open(kGolden + "/adapter/adapter_model.safetensors");
  std::vector<std::pair<std::string, Tensor>> t;
  for (const auto& e : st.entries()) {
    std::string n = e.name.substr(std::string("base_model.model.transformer.").size());
    t.push_back({n.substr(0, n.size() - 7) + ".default.weight", st.to_f32(e)});
  }
  safetensors_write(old + "/adapter_model.safetensors", t, {});
  file_write_atomic(old + "/adapter_config.json",
                    R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "base_model_name_or_path": "gpt2-tiny"})");
  ExportOptions o;
  o.adapter_dir = old;
  o.out = temp_dir() + "/peft";
  o.format = ExportFormat::peft;
  ExportReport rep = export_run(o);
  CHECK(rep.tensors == 16);
  SafetensorsFile out = SafetensorsFile::open(o.out + "/adapter_model.safetensors");
  for (const auto& e : st.entries()) {
    const SafetensorsEntry* x = out.find(e.name);  // the golden (PEFT) names exactly
    REQUIRE_MESSAGE(x != nullptr, e.name);
    CHECK(x->shape == e.shape);
    CHECK(std::memcmp(out.bytes(*x), st.bytes(e), size_t(e.end - e.begin)) == 0);
  }
  CHECK(out.entries().size() == 16);
  json cfg = json_read_file(o.out + "/adapter_config.json");
  CHECK(cfg["peft_type"] == "LORA");
  CHECK(cfg["fan_in_fan_out"] == true);
  CHECK(cfg["target_modules"] == json({"c_attn", "c_fc", "c_proj"}));
  CHECK(cfg["task_type"] == "CAUSAL_LM");
  CHECK(cfg["use_rslora"] == false);
  CHECK(cfg["inference_mode"] == true);
  // Loaded by our PEFT reader, the outputs are PEFT's.
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(kGolden + "/gpt2-tiny");
  Model m(*be, ck.config());
  m.load_base(ck);
  adapter_load(m, o.out);
  GoldenBatch g = golden_batch();
  double err = logits_rel_error(m.logits(g.tokens, g.lengths), reference("logits"), g);
  MESSAGE("peft export logits vs PEFT: normwise relative error " << err);
  CHECK(err < 1e-5);
}

TEST_CASE("merged: the adapter's base_model_name_or_path, or --base") {
  // A copy of the golden adapter that names its base by absolute path.
  std::string dir = temp_dir() + "/adapter";
  fs::create_directories(dir);
  fs::copy_file(kGolden + "/adapter/adapter_model.safetensors", dir + "/adapter_model.safetensors");
  json cfg = json_read_file(kGolden + "/adapter/adapter_config.json");
  cfg["base_model_name_or_path"] = fs::absolute(kGolden + "/gpt2-tiny").string();
  file_write_atomic(dir + "/adapter_config.json", cfg.dump(2));
  ExportOptions o;
  o.adapter_dir = dir;
  o.out = temp_dir() + "/merged";
  o.format = ExportFormat::merged;
  ExportReport rep = export_run(o);
  CHECK(rep.tensors == 28);
  GoldenBatch g = golden_batch();
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(o.out);
  Model m(*be, ck.config());
  m.load_base(ck);
  CHECK(logits_rel_error(m.logits(g.tokens, g.lengths), reference("merged_logits"), g) < 1e-5);
  // Without a usable base: a clear refusal.
  cfg["base_model_name_or_path"] = "openai-community/gpt2";
  file_write_atomic(dir + "/adapter_config.json", cfg.dump(2));
  o.out = temp_dir() + "/merged2";
  Error e = error_of([&] { export_run(o); });
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.hint(), "--base"));
  o.base_dir = kGolden + "/gpt2-tiny";
  Error f = error_of([&] { export_run(o); });  // names another model: merge's own check applies
  CHECK(contains(f.what(), "openai-community/gpt2"));
}

}  // namespace
