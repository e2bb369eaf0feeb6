// What the GLUE-style CLI tests share: a tiny random RoBERTa written by `lora init` (the quickstart's BPE
// vocabulary plus RoBERTa's <s> <pad> </s> <unk>) and synthetic sentence pairs from the quickstart's
// domain whose label says whether (or how often) the second sentence contains the word "pub".
#pragma once
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace glue_test {

namespace fs = std::filesystem;
using nlohmann::json;

inline const std::string kTokenizer = LORA_SOURCE_DIR "/data/quickstart/model-tokenizer";

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Example {
  std::string a, b;
  int label;
};

// n sentence pairs; label 1 when the second sentence contains "pub". With max_pubs > 1 the second sentence
// holds "pub" 0..max_pubs times and the label is that count (a 3-way task for max_pubs 2, as MNLI's).
inline std::vector<Example> make_examples(int n, uint64_t seed, int max_pubs = 1) {
  static const char* words[] = {"the",    "restaurant", "serves", "food",   "near",    "river",  "city",
                                "centre", "cheap",      "coffee", "shop",   "family",  "friendly", "Italian",
                                "English", "price",     "range",  "area",   "children", "high"};
  std::mt19937_64 rng(seed);
  auto sentence = [&](int pubs) {
    const int len = 4 + int(rng() % 4);
    std::vector<bool> pub(size_t(len), false);
    const int at = int(rng() % len);  // drawn even without a "pub", so that older tests keep their data
    if (pubs > 0) pub[size_t(at)] = true;
    for (int k = 1; k < pubs; ++k) pub[size_t(rng() % len)] = true;  // may land on a "pub": the label counts
    std::string s;
    for (int i = 0; i < len; ++i) s += (i ? " " : "") + std::string(pub[size_t(i)] ? "pub" : words[rng() % 20]);
    return s;
  };
  std::vector<Example> out;
  for (int i = 0; i < n; ++i) {
    const int want = int(rng() % (max_pubs + 1));
    const bool decoy = rng() % 2;  // "pub" in the first sentence says nothing
    Example e{sentence(decoy), sentence(want), 0};
    for (size_t p = e.b.find("pub"); p != std::string::npos; p = e.b.find("pub", p + 1)) ++e.label;
    out.push_back(e);
  }
  return out;
}

inline std::string jsonl_of(const std::vector<Example>& ex) {
  std::string s;
  for (const auto& e : ex) s += json({{"sentence1", e.a}, {"sentence2", e.b}, {"label", e.label}}).dump() + "\n";
  return s;
}

// Writes dir/tok (the vocabulary with RoBERTa's special tokens at ids 0-3; positions are numbered from
// <pad> + 1; merges name tokens, not ids: unchanged), dir/<config_name> (a 2-layer RoBERTa, d_model
// `hidden`) and, with `lora init`, the model directory dir/<base_name>.
inline CliResult tiny_roberta_write(const fs::path& dir, int hidden = 64, const std::string& config_name = "config.json",
                                    const std::string& base_name = "base") {
  if (!fs::exists(dir / "tok" / "vocab.json")) {
    fs::create_directories(dir / "tok");
    json quick = json::parse(read_text(fs::path(kTokenizer) / "vocab.json"));
    json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}};
    for (auto it = quick.begin(); it != quick.end(); ++it) vocab[it.key()] = it.value().get<int>() + 4;
    write_text(dir / "tok" / "vocab.json", vocab.dump());
    fs::copy_file(fs::path(kTokenizer) / "merges.txt", dir / "tok" / "merges.txt");
  }
  const int V = int(json::parse(read_text(dir / "tok" / "vocab.json")).size());
  write_text(dir / config_name,
             json({{"model_type", "roberta"}, {"architectures", {"RobertaForSequenceClassification"}},
                   {"vocab_size", V}, {"hidden_size", hidden}, {"num_hidden_layers", 2},
                   {"num_attention_heads", 4}, {"intermediate_size", 2 * hidden}, {"max_position_embeddings", 66},
                   {"type_vocab_size", 1}, {"layer_norm_eps", 1e-5}, {"hidden_act", "gelu"},
                   {"bos_token_id", 0}, {"pad_token_id", 1}, {"eos_token_id", 2},
                   {"hidden_dropout_prob", 0.1}, {"classifier_dropout", nullptr}})
                 .dump());
  return lora_run("init --config " + (dir / config_name).string() + " --out " + (dir / base_name).string() +
                  " --tokenizer " + (dir / "tok").string() + " --seed 5");
}

// Removes the classification head (classifier.*) from a model directory written by tiny_roberta_write,
// leaving an encoder as roberta-base is published (RobertaForMaskedLM): train then starts a fresh head of
// model.num_labels outputs.
inline void tiny_roberta_head_strip(const fs::path& model_dir) {
  const std::string path = (model_dir / "model.safetensors").string();
  std::vector<std::pair<std::string, lora::Tensor>> kept;
  {
    lora::SafetensorsFile st = lora::SafetensorsFile::open(path);
    for (const auto& e : st.entries())
      if (e.name.rfind("classifier.", 0) != 0) kept.push_back({e.name, st.to_f32(e)});
  }
  lora::safetensors_write(path, kept, {{"format", "pt"}}, lora::DType::f32);
}

// A run of `recipe` for 6 steps (checkpoints at 3 and 6) into dir/whole, then a copy of it cut back to
// step 3 and resumed into dir/resumed with `resume_args` added: the caller compares the two. REQUIREs
// both runs to succeed.
struct ResumeRuns {
  fs::path whole, resumed;
  CliResult out;  // the resumed run's
};
inline ResumeRuns resume_from_step3(const fs::path& recipe, const fs::path& dir, const std::string& resume_args = "") {
  const std::string common = " --set train.max_steps=6 --set output.save_every=3 --set output.keep_last=0 --set data.eval=";
  ResumeRuns r{dir / "whole", dir / "resumed", {}};
  CliResult whole = lora_run("train " + recipe.string() + " --set output.dir=" + r.whole.string() + common);
  INFO(whole.out);
  REQUIRE(whole.code == 0);
  fs::copy(r.whole, r.resumed, fs::copy_options::recursive);
  fs::remove_all(r.resumed / "checkpoints" / "step-00000006");
  fs::remove(r.resumed / "adapter_model.safetensors");
  r.out = lora_run("train " + recipe.string() + " --set output.dir=" + r.resumed.string() + common + resume_args +
                   " --resume " + r.resumed.string());
  INFO(r.out.out);
  REQUIRE(r.out.code == 0);
  return r;
}

// The evaluation records of a run's metrics.jsonl (those with eval_loss), in order.
inline std::vector<nlohmann::json> eval_records(const fs::path& run) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(run / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);)
    if (nlohmann::json j = nlohmann::json::parse(line); j.contains("eval_loss")) out.push_back(j);
  return out;
}

}  // namespace glue_test
