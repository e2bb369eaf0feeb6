// Merging and exporting adapters that save a classification head (RoBERTa GLUE runs: PEFT's
// modules_to_save ["classifier"]), on the golden RoBERTa fixtures (tests/fixtures/golden-roberta, made
// by scripts/make_golden_roberta.py with transformers + PEFT): the merged RobertaForSequenceClassification
// gives PEFT's base + adapter logits (reference "<head>/logits"), whether the base carries a head of the
// same size, of another size, or none (roberta-base's masked-LM layout, with lm_head and pooler);
// config.json names the architecture, the labels and the problem type as transformers writes them;
// --verify compares the heads' logits; `export --to peft` carries the head and `--to gguf` refuses it.
// Tolerances as the other golden tests: logits 1e-5 normwise relative.
#include <doctest/doctest.h>

#include <filesystem>
#include <set>

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
const std::string kDir = std::string(LORA_FIXTURES) + "/golden-roberta";

// The classification logits (B, NL) of a model directory (plus an adapter) on batch.json, eval mode.
Tensor classify_logits(const std::string& model_dir, const std::string& adapter = "") {
  auto be = backend_cpu_create();
  Checkpoint ck = Checkpoint::open(model_dir);
  Model m(*be, ck.config());
  m.load_base(ck);
  if (!adapter.empty()) adapter_load(m, adapter);
  json j = json_read_file(kDir + "/batch.json");
  const int B = int(j["input_ids"].size()), T = int(j["input_ids"][0].size());
  Tensor tokens = tensor_host({B, T}, DType::i32), lengths = tensor_host({B}, DType::i32), labels = tensor_host({B});
  for (int b = 0; b < B; ++b) {
    lengths.i32()[b] = j["lengths"][b].get<int>();
    for (int t = 0; t < T; ++t) tokens.i32()[b * T + t] = j["input_ids"][b][t].get<int>();
  }
  Tensor logits;
  m.classify_step(tokens, lengths, labels, 0.0f, 0, false, &logits);
  return logits;
}

Tensor reference(const std::string& name) {
  SafetensorsFile ref = SafetensorsFile::open(kDir + "/reference.safetensors");
  const SafetensorsEntry* e = ref.find(name);
  REQUIRE_MESSAGE(e != nullptr, name);
  return ref.to_f32(*e);
}

std::set<std::string> tensor_names(const std::string& file) {
  std::set<std::string> out;
  SafetensorsFile st = SafetensorsFile::open(file);
  for (const auto& e : st.entries()) out.insert(e.name);
  return out;
}

// roberta-cls's encoder under another head, in a directory named roberta-cls (the adapters'
// base_model_name_or_path): "none" as roberta-base is saved (RobertaForMaskedLM: lm_head.* and a
// pooler, no classifier, no id2label), or a head of num_labels (at most 3) outputs with its id2label.
std::string base_variant(const std::string& head, int num_labels = 0) {
  const std::string dir = temp_dir() + "/roberta-cls";
  fs::create_directories(dir);
  SafetensorsFile st = SafetensorsFile::open(kDir + "/roberta-cls/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& e : st.entries())
    if (e.name.rfind("classifier.", 0) != 0) tensors.push_back({e.name, st.to_f32(e)});
  auto filled = [](std::vector<int64_t> shape, float v) {
    Tensor t = tensor_host(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = v * float(i % 7 + 1);
    return t;
  };
  json cfg = json_read_file(kDir + "/roberta-cls/config.json");
  if (head == "none") {
    for (const char* n : {"lm_head.dense.weight", "roberta.pooler.dense.weight"}) tensors.push_back({n, filled({32, 32}, 0.01f)});
    for (const char* n : {"lm_head.dense.bias", "lm_head.layer_norm.weight", "lm_head.layer_norm.bias", "roberta.pooler.dense.bias"})
      tensors.push_back({n, filled({32}, 0.02f)});
    tensors.push_back({"lm_head.bias", filled({97}, 0.03f)});
    cfg["architectures"] = {"RobertaForMaskedLM"};
    cfg.erase("id2label");
    cfg.erase("label2id");
  } else {
    tensors.push_back({"classifier.dense.weight", filled({32, 32}, 0.01f)});
    tensors.push_back({"classifier.dense.bias", filled({32}, 0.02f)});
    tensors.push_back({"classifier.out_proj.weight", filled({num_labels, 32}, 0.03f)});
    tensors.push_back({"classifier.out_proj.bias", filled({num_labels}, 0.04f)});
    json id2label = json::object(), label2id = json::object();
    const char* names[] = {"entailment", "neutral", "contradiction"};
    for (int i = 0; i < num_labels; ++i) {
      id2label[std::to_string(i)] = names[i];
      label2id[names[i]] = i;
    }
    cfg["id2label"] = id2label;
    cfg["label2id"] = label2id;
    cfg["num_labels"] = num_labels;
  }
  safetensors_write(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  file_write_atomic(dir + "/config.json", cfg.dump(2));
  return dir;
}

MergeOptions options(const std::string& head, const std::string& base = "") {
  MergeOptions o;
  o.base_dir = base.empty() ? kDir + "/roberta-" + head : base;
  o.adapter_dir = kDir + "/adapter-" + head;
  o.out_dir = temp_dir() + "/merged";
  return o;
}
}  // namespace

TEST_CASE("golden roberta: the merged classifier gives PEFT's base + adapter logits") {
  for (const std::string head : {"cls", "reg"}) {
    const int NL = head == "cls" ? 3 : 1;
    MergeOptions o = options(head);
    o.verify = true;
    MergeReport rep = merge_run(o);
    CHECK(rep.modules_merged == 4);  // query and value, 2 layers
    CHECK(rep.head_labels == NL);
    CHECK(rep.tensors_written == 41);  // the base's 41 tensors, its head replaced by the adapter's
    REQUIRE(rep.verified);
    MESSAGE(head << ": verify max abs " << rep.verify.max_abs << ", max rel " << rep.verify.max_rel);
    CHECK(rep.verify.passed);
    CHECK(rep.verify.max_rel < 1e-5);
    // Tensor names exactly as RobertaForSequenceClassification.save_pretrained writes them.
    CHECK(tensor_names(o.out_dir + "/model.safetensors") == tensor_names(kDir + "/roberta-" + head + "/model.safetensors"));
    // The head is the adapter's, bit for bit (fp32).
    SafetensorsFile merged = SafetensorsFile::open(o.out_dir + "/model.safetensors");
    AdapterFile ad = adapter_file_read(o.adapter_dir);
    std::vector<Tensor> saved = adapter_classifier_head(ad);
    REQUIRE(saved.size() == 4);
    for (int i = 0; i < 4; ++i) CHECK(rel_error(merged.to_f32(*merged.find(kClassifierNames[i])), saved[i]) == 0);
    // Logits of the merged model equal PEFT's base + adapter logits.
    double err = rel_error(classify_logits(o.out_dir), reference(head + "/logits"));
    MESSAGE(head << ": merged logits vs PEFT base + adapter: normwise relative error " << err);
    CHECK(err < 1e-5);
    json cfg = json_read_file(o.out_dir + "/config.json");
    CHECK(cfg["architectures"] == json({"RobertaForSequenceClassification"}));
    CHECK(cfg["id2label"].size() == size_t(NL));
    CHECK(cfg["id2label"]["0"] == "LABEL_0");
    CHECK(cfg["label2id"]["LABEL_0"] == 0);
    CHECK(cfg["problem_type"] == (NL == 1 ? "regression" : "single_label_classification"));
    CHECK_FALSE(cfg.contains("num_labels"));
  }
}

TEST_CASE("merge --verify covers the classification head in every dtype") {
  for (DType dt : {DType::bf16, DType::f16}) {
    MergeOptions o = options("cls");
    o.dtype = dt;
    o.verify = true;
    MergeReport rep = merge_run(o);
    MESSAGE(std::string(dtype_name(dt)) << ": verify max rel " << rep.verify.max_rel << " (threshold " << rep.verify.threshold << ")");
    CHECK(rep.verify.passed);
  }
}

TEST_CASE("merge of a classifier adapter into an encoder without a head or with another head") {
  SUBCASE("roberta-base's layout: masked-LM head and pooler, no classifier") {
    MergeOptions o = options("cls", base_variant("none"));
    o.verify = true;
    MergeReport rep = merge_run(o);
    CHECK(rep.verify.passed);
    CHECK(rep.head_labels == 3);
    bool noted = false;
    for (const auto& n : rep.notes) noted = noted || contains(n, "left out the base's masked-LM head and pooler (7 tensors)");
    CHECK(noted);
    CHECK(tensor_names(o.out_dir + "/model.safetensors") == tensor_names(kDir + "/roberta-cls/model.safetensors"));
    CHECK(rel_error(classify_logits(o.out_dir), reference("cls/logits")) < 1e-5);
    json cfg = json_read_file(o.out_dir + "/config.json");
    CHECK(cfg["architectures"] == json({"RobertaForSequenceClassification"}));
    CHECK(cfg["id2label"] == json({{"0", "LABEL_0"}, {"1", "LABEL_1"}, {"2", "LABEL_2"}}));
    CHECK(cfg["label2id"] == json({{"LABEL_0", 0}, {"LABEL_1", 1}, {"LABEL_2", 2}}));
  }
  SUBCASE("a base head of 2 labels is replaced by the adapter's 3") {
    MergeOptions o = options("cls", base_variant("head", 2));
    o.verify = true;
    MergeReport rep = merge_run(o);
    CHECK(rep.verify.passed);
    CHECK(rel_error(classify_logits(o.out_dir), reference("cls/logits")) < 1e-5);
    json cfg = json_read_file(o.out_dir + "/config.json");
    CHECK(cfg["id2label"].size() == 3);
    CHECK_FALSE(cfg.contains("num_labels"));  // a stale num_labels: 2 would contradict id2label
    CHECK(model_config_load(o.out_dir).num_labels == 3);
  }
  SUBCASE("a base head of as many labels keeps the base's label names") {
    MergeOptions o = options("cls", base_variant("head", 3));
    merge_run(o);
    json cfg = json_read_file(o.out_dir + "/config.json");
    CHECK(cfg["id2label"]["1"] == "neutral");
    CHECK(cfg["label2id"]["contradiction"] == 2);
  }
}

TEST_CASE("merge --labels names the head's labels; a wrong count or a repeated name is refused") {
  MergeOptions o = options("cls");
  o.labels = {"entailment", "neutral", "contradiction"};
  merge_run(o);
  json cfg = json_read_file(o.out_dir + "/config.json");
  CHECK(cfg["id2label"] == json({{"0", "entailment"}, {"1", "neutral"}, {"2", "contradiction"}}));
  CHECK(cfg["label2id"] == json({{"entailment", 0}, {"neutral", 1}, {"contradiction", 2}}));
  MergeOptions bad = options("cls");
  bad.labels = {"negative", "positive"};
  Error e = error_of([&] { merge_run(bad); });
  CHECK(e.code() == EXIT_CODE_USAGE);
  CHECK(contains(e.what(), "--labels gives 2 name(s), but the adapter's classification head has 3 output(s)"));
  CHECK_FALSE(fs::exists(bad.out_dir));
  bad.labels = {"a", "b", "a"};
  CHECK(contains(error_of([&] { merge_run(bad); }).what(), "repeated name ('a')"));
  MergeOptions gpt2;
  gpt2.base_dir = std::string(LORA_FIXTURES) + "/golden/gpt2-tiny";
  gpt2.adapter_dir = std::string(LORA_FIXTURES) + "/golden/adapter";
  gpt2.out_dir = temp_dir() + "/merged";
  gpt2.labels = {"x"};
  CHECK(contains(error_of([&] { merge_run(gpt2); }).what(), "saves none"));
}

TEST_CASE("merge refuses classifier adapters it cannot honour") {
  SUBCASE("an incomplete head") {
    const std::string dir = temp_dir() + "/adapter";
    fs::create_directories(dir);
    SafetensorsFile st = SafetensorsFile::open(kDir + "/adapter-cls/adapter_model.safetensors");
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& e : st.entries())
      if (e.name != "base_model.model.classifier.out_proj.bias") tensors.push_back({e.name, st.to_f32(e)});
    safetensors_write(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
    fs::copy_file(kDir + "/adapter-cls/adapter_config.json", dir + "/adapter_config.json");
    MergeOptions o = options("cls");
    o.adapter_dir = dir;
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "incomplete classification head; missing:"));
    CHECK(contains(e.what(), "classifier.out_proj.bias"));
    CHECK_FALSE(fs::exists(o.out_dir));
  }
  SUBCASE("a head onto a model with a language-model head") {
    MergeOptions o = options("cls", std::string(LORA_FIXTURES) + "/golden/gpt2-tiny");
    o.force = true;
    Error e = error_of([&] { merge_run(o); });
    CHECK(e.code() == EXIT_CODE_USAGE);
    CHECK(contains(e.what(), "saves a classification head (modules_to_save), but the gpt2 base model"));
  }
  SUBCASE("--verify with no head on either side") {
    const std::string dir = temp_dir() + "/adapter";
    fs::create_directories(dir);
    SafetensorsFile st = SafetensorsFile::open(kDir + "/adapter-cls/adapter_model.safetensors");
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& e : st.entries())
      if (!contains(e.name, "classifier.")) tensors.push_back({e.name, st.to_f32(e)});
    safetensors_write(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
    json cfg = json_read_file(kDir + "/adapter-cls/adapter_config.json");
    cfg["modules_to_save"] = nullptr;
    file_write_atomic(dir + "/adapter_config.json", cfg.dump(2));
    MergeOptions o = options("cls", base_variant("none"));
    o.adapter_dir = dir;
    o.verify = true;
    Error e = error_of([&] { merge_run(o); });
    CHECK(contains(e.what(), "neither the base model"));
    CHECK(contains(e.hint(), "merge without --verify"));
    o.verify = false;
    MergeReport rep = merge_run(o);  // the encoder merges; the note says the head will be random
    bool noted = false;
    for (const auto& n : rep.notes) noted = noted || contains(n, "initialises one at random");
    CHECK(noted);
  }
}

TEST_CASE("export of a classifier adapter: peft carries the head, gguf refuses it, merged is merge") {
  const std::string adapter = kDir + "/adapter-cls";
  SUBCASE("peft") {
    ExportOptions e;
    e.format = ExportFormat::peft;
    e.adapter_dir = adapter;
    e.out = temp_dir() + "/peft";
    ExportReport rep = export_run(e);
    CHECK(rep.tensors == 12);  // 8 LoRA tensors and the head's 4
    json cfg = json_read_file(e.out + "/adapter_config.json");
    CHECK(cfg["modules_to_save"] == json({"classifier"}));
    CHECK(cfg["task_type"] == "SEQ_CLS");
    SafetensorsFile st = SafetensorsFile::open(e.out + "/adapter_model.safetensors");
    CHECK(st.find("base_model.model.classifier.out_proj.weight") != nullptr);
    // Loaded back, the exported adapter gives PEFT's logits.
    CHECK(rel_error(classify_logits(kDir + "/roberta-cls", e.out), reference("cls/logits")) < 1e-5);
  }
  SUBCASE("gguf") {
    ExportOptions e;
    e.format = ExportFormat::gguf;
    e.adapter_dir = adapter;
    e.out = temp_dir() + "/a.gguf";
    Error err = error_of([&] { export_run(e); });
    CHECK(err.code() == EXIT_CODE_USAGE);
    CHECK(contains(err.what(), "saves a trained classification head"));
    CHECK(contains(err.what(), ".lora_a/.lora_b"));
    CHECK(contains(err.hint(), "convert_hf_to_gguf.py"));
    CHECK_FALSE(fs::exists(e.out));
  }
  SUBCASE("merged") {
    ExportOptions e;
    e.format = ExportFormat::merged;
    e.adapter_dir = adapter;
    e.base_dir = kDir + "/roberta-cls";
    e.out = temp_dir() + "/merged";
    e.labels = {"entailment", "neutral", "contradiction"};
    export_run(e);
    CHECK(rel_error(classify_logits(e.out), reference("cls/logits")) < 1e-5);
    CHECK(json_read_file(e.out + "/config.json")["id2label"]["2"] == "contradiction");
    e.format = ExportFormat::peft;
    e.out = temp_dir() + "/peft";
    CHECK(contains(error_of([&] { export_run(e); }).what(), "--to peft writes an adapter"));
  }
}

}  // namespace
