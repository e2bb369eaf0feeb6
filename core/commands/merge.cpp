// `lora merge`: the adapter reader, the merge itself and verification (output paths: output_dir.h).
// See merge.h for the contract and the formula's source.
#include "core/commands/merge.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/base/strings.h"
#include "core/commands/output_dir.h"
#include "core/formats/family.h"
#include "core/formats/safetensors.h"
#include "core/model/adapter.h"
#include "core/model/model.h"
#include "core/ops/backend.h"
#include "core/text/tokenizer.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kHeadNames[] = {"lm_head.", "score.", "classifier.", "qa_outputs."};

}  // namespace

// ---- the adapter as data ----

std::string adapter_family_guess(const AdapterFile& ad) {
  std::vector<std::pair<std::string, std::regex>> patterns;  // (family, its block-module pattern)
  for (const Family* f : families()) patterns.push_back({f->name, std::regex(f->module_pattern)});
  std::set<std::string> found;
  for (const auto& m : ad.modules) {
    std::string family;
    for (const auto& p : patterns)
      if (std::regex_match(m.module, p.second)) {
        family = p.first;
        break;
      }
    found.insert(family);
  }
  return found.size() == 1 ? *found.begin() : "";
}

std::string module_name_canonical(const std::string& module, const std::string& family) {
  const std::string prefix = checkpoint_prefix(family);
  if (prefix.empty() || starts_with(module, prefix)) return module;
  for (const char* head : kHeadNames)
    if (starts_with(module + ".", head)) return module;
  return prefix + module;
}

// ---- the merge ----

void merge_delta_add(Tensor& w, const AdapterModule& m, bool w_in_out) {
  // W (out, in) += s B A, or W (in, out) += s A^T B^T = s (B A)^T; fp32 GEMM with beta = 1.
  static std::unique_ptr<Backend> cpu = backend_cpu_create();
  if (w_in_out)
    cpu->matmul(mat(w), mat(m.a), mat(m.b), true, true, m.scale, 1.0f);
  else
    cpu->matmul(mat(w), mat(m.b), mat(m.a), false, false, m.scale, 1.0f);
}

std::vector<std::pair<std::string, Tensor>> merge_weights(const Checkpoint& base, const AdapterFile& ad,
                                                          std::vector<std::string>* notes) {
  const ModelConfig& cfg = base.config();
  const std::string family = cfg.family;
  // A saved classification head replaces the base's; RobertaForSequenceClassification has no masked-LM
  // head and no pooler, so those are left out with it.
  const std::vector<Tensor> head = adapter_classifier_head(ad);
  if (!head.empty() && cfg.head != HeadKind::classifier)
    fail_usage("adapter '" + ad.dir + "' saves a classification head (modules_to_save), but the " + family +
                   " base model '" + base.dir() + "' has a language-model head",
               "pass the RoBERTa model the adapter was trained on as --base");
  if (!head.empty() && head[0].dim(0) != cfg.d_model)
    fail_usage("adapter '" + ad.dir + "' saves a classification head for hidden size " + std::to_string(head[0].dim(0)) +
                   " (classifier.dense.weight " + head[0].shape_str() + "), but the base model '" + base.dir() +
                   "' has hidden size " + std::to_string(cfg.d_model),
               "the adapter was trained on a model of another size; pass that model as --base");
  // Match adapter modules to base weights by canonical (prefixed) name.
  std::map<std::string, const AdapterModule*> by_weight;
  std::vector<std::string> missing, bad_shape;
  for (const auto& m : ad.modules) {
    const std::string weight = module_name_canonical(m.module, family) + ".weight";
    if (!base.has(weight)) {
      missing.push_back(m.key_a + " -> " + weight);
      continue;
    }
    const int64_t in = m.a.dim(1), out = m.b.dim(0);
    std::vector<int64_t> expect = cfg.conv1d_weights ? std::vector<int64_t>{in, out} : std::vector<int64_t>{out, in};
    std::vector<int64_t> found = base.shape(weight);
    if (found != expect) {
      Tensor probe;
      probe.shape = found;
      bad_shape.push_back(weight + ": base " + probe.shape_str() + ", adapter implies (" + std::to_string(expect[0]) +
                          ", " + std::to_string(expect[1]) + ") from " + m.key_a + " " + m.a.shape_str() + " and " +
                          m.key_b + " " + m.b.shape_str());
      continue;
    }
    by_weight[weight] = &m;
  }
  if (!missing.empty())
    fail_usage("adapter '" + ad.dir + "' adapts " + std::to_string(missing.size()) + " module(s) that the " + family +
                   " base model '" + base.dir() + "' does not have:" + error_list(missing),
               "the adapter was trained on another model" +
                   (ad.base_name.empty() ? std::string() : " (it names '" + ad.base_name + "')") +
                   "; pass that model as --base");
  if (!bad_shape.empty())
    fail_usage("adapter '" + ad.dir + "' does not fit the base model '" + base.dir() + "' (" +
                   std::to_string(bad_shape.size()) + " shape mismatch(es)):" + error_list(bad_shape),
               "the adapter was trained on a model of another size; pass that model as --base");

  const std::string pooler = checkpoint_prefix(family) + "pooler.";
  auto replaced_by_head = [&](const std::string& name) {
    return !head.empty() && (starts_with(name, "classifier.") || starts_with(name, "lm_head.") || starts_with(name, pooler));
  };

  const std::vector<std::string>& unsaved = family_of(cfg).unsaved_suffixes;
  std::vector<std::pair<std::string, Tensor>> out;
  int skipped = 0, dropped = 0;
  for (const auto& stored : base.names()) {
    const std::string name = module_name_canonical(stored, family);
    if (replaced_by_head(name)) {
      dropped += !starts_with(name, "classifier.");
      continue;
    }
    // Buffers save_pretrained does not write: the family's (GPT-2's causal masks) and a tied head's copy.
    if (std::any_of(unsaved.begin(), unsaved.end(), [&](const std::string& s) { return ends_with(name, s); })) {
      ++skipped;
      continue;
    }
    if (cfg.tied_head && name == "lm_head.weight") {
      ++skipped;
      continue;
    }
    Tensor t = base.get(stored, base.shape(stored));
    auto it = by_weight.find(name);
    if (it != by_weight.end()) merge_delta_add(t, *it->second, cfg.conv1d_weights);
    out.push_back({name, t});
  }
  for (int i = 0; i < int(head.size()); ++i) out.push_back({kClassifierNames[i], head[i]});
  if (!notes) return out;
  if (skipped)
    notes->push_back("left out " + std::to_string(skipped) +
                     " non-parameter tensor(s) of the base (causal-mask buffers, tied head copy), as save_pretrained does");
  if (!head.empty())
    notes->push_back("classification head (" + std::to_string(head[2].dim(0)) + " label(s)) from the adapter's saved modules" +
                     (base.has("classifier.out_proj.weight") ? ", replacing the base's" : "") +
                     (dropped ? "; left out the base's masked-LM head and pooler (" + std::to_string(dropped) +
                                    " tensors), which RobertaForSequenceClassification does not have"
                              : std::string()));
  else if (cfg.head == HeadKind::classifier && !base.has("classifier.out_proj.weight"))
    notes->push_back("neither the base nor the adapter has a classification head: the merged encoder has none, "
                     "and transformers initialises one at random when it loads it as RobertaForSequenceClassification");
  return out;
}

// ---- verification ----

double merge_verify_threshold(DType dtype) {
  // Normwise relative logit error (max |diff| / max |ref|). fp32: the merge only reorders fp32 sums;
  // 5.5e-7 is measured on the golden model, 1e-4 leaves room for deep models. fp16 / bf16 round every
  // merged weight once, to unit roundoff u = 2^-11 / 2^-8; the logit error is a sum of such relative
  // perturbations over the layers: 2.4 u (fp16, 1.2e-3) and 2.0 u (bf16, 7.7e-3) on the golden model.
  // The limits are 16 u, room for deeper models; a wrong merge (a missing, doubled or transposed
  // update) moves logits by O(1) relative and fails in every dtype.
  switch (dtype) {
    case DType::f32: return 1e-4;
    case DType::f16: return 16.0 / 2048.0;  // 7.8e-3
    case DType::bf16: return 16.0 / 256.0;  // 6.25e-2
    default: return 0;
  }
}

MergeVerifyResult merge_verify(const std::string& base_dir, const std::string& adapter_dir,
                               const std::string& merged_dir, DType dtype) {
  std::unique_ptr<Backend> be = backend_cpu_create();
  Checkpoint base = Checkpoint::open(base_dir);
  Checkpoint merged_ck = Checkpoint::open(merged_dir);
  // The merged config: a classification head the adapter saves sets num_labels.
  const ModelConfig& cfg = merged_ck.config();
  const bool classifier = cfg.head == HeadKind::classifier;
  // Probe batch: 2 x 16 fixed ids spread over the vocabulary, every position valid; an encoder's rows
  // start with <s>, whose final hidden state the classification head reads.
  const int B = 2, T = std::min(16, cfg.max_positions);
  Tensor tokens = tensor_host({B, T}, DType::i32), lengths = tensor_host({B}, DType::i32);
  for (int i = 0; i < B * T; ++i) tokens.i32()[i] = int((int64_t(i) * 7919 + 13) % cfg.vocab_size);
  for (int b = 0; b < B; ++b) {
    lengths.i32()[b] = T;
    if (classifier && cfg.bos_token_id >= 0) tokens.i32()[b * T] = cfg.bos_token_id;
  }
  auto probe = [&](Model& m) {
    if (!classifier) return m.logits(tokens, lengths);  // (B,T,V)
    Tensor labels = tensor_host({B}), out;               // labels unused: only the logits are compared
    m.classify_step(tokens, lengths, labels, 0.0f, 0, false, &out);
    return out;  // (B,NL)
  };

  Model with_adapter(*be, cfg);
  // The base's own head, unless the adapter's replaces it (it may have another number of labels).
  with_adapter.load_base(base, adapter_file_read(adapter_dir).saved.empty());
  adapter_load(with_adapter, adapter_dir);
  Tensor ref = probe(with_adapter);

  Model merged(*be, cfg);
  merged.load_base(merged_ck);
  Tensor got = probe(merged);

  MergeVerifyResult r;
  double max_ref = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    // std::max drops a NaN argument, so non-finite logits are counted, not compared.
    if (!std::isfinite(got.f32()[i]) || !std::isfinite(ref.f32()[i])) {
      ++r.nonfinite;
      continue;
    }
    r.max_abs = std::max(r.max_abs, double(std::fabs(got.f32()[i] - ref.f32()[i])));
    max_ref = std::max(max_ref, double(std::fabs(ref.f32()[i])));
  }
  if (r.nonfinite > 0) r.max_abs = INFINITY;
  r.max_rel = r.max_abs / std::max(max_ref, 1e-30);
  r.threshold = merge_verify_threshold(dtype);
  r.passed = r.nonfinite == 0 && r.max_rel <= r.threshold;
  return r;
}

// ---- paths ----

bool base_name_matches(const std::string& recorded, const std::string& base_dir, const std::string& adapter_dir) {
  if (recorded.empty()) return true;
  std::error_code ec;
  auto canon = [&](const fs::path& p) { return fs::weakly_canonical(p, ec); };
  const fs::path base = canon(base_dir);
  for (const fs::path& cand : {fs::path(recorded), fs::path(adapter_dir) / recorded})
    if (fs::exists(cand, ec) && fs::equivalent(cand, base_dir, ec)) return true;
  auto last = [](std::string s) {
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    size_t k = s.rfind('/');
    return k == std::string::npos ? s : s.substr(k + 1);
  };
  return last(recorded) == base.filename().string() || last(recorded) == last(base_dir);
}

DType merge_dtype_parse(const std::string& name) {
  if (name == "fp32" || name == "f32" || name == "float32") return DType::f32;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "fp16" || name == "f16" || name == "float16") return DType::f16;
  fail_usage("unknown dtype '" + name + "'", "use one of fp32, bf16, fp16");
}

// ---- the command ----

namespace {
// config.json keys of a RobertaForSequenceClassification with num_labels outputs, as transformers
// writes them: id2label {"0": "LABEL_0", ...} (names given, else the base's own when it has as many)
// and label2id its inverse, problem_type; num_labels itself is not a saved key (transformers derives
// it from id2label), so a stale one is removed.
void classifier_config_set(json& cfg, int num_labels, const std::vector<std::string>& names_given) {
  cfg["architectures"] = {"RobertaForSequenceClassification"};
  const json* names = cfg.contains("id2label") && cfg["id2label"].is_object() ? &cfg["id2label"] : nullptr;
  json id2label = json::object(), label2id = json::object();
  for (int i = 0; i < num_labels; ++i) {
    const std::string id = std::to_string(i);
    const bool own = names && int(names->size()) == num_labels && names->contains(id) && (*names)[id].is_string();
    const std::string label = !names_given.empty() ? names_given[i]
                              : own                ? (*names)[id].get<std::string>()
                                                   : "LABEL_" + id;
    id2label[id] = label;
    label2id[label] = i;
  }
  cfg["id2label"] = id2label;
  cfg["label2id"] = label2id;
  cfg.erase("num_labels");
  cfg["problem_type"] = num_labels == 1 ? "regression" : "single_label_classification";
}

// --labels: one distinct, non-empty name per output of the adapter's classification head.
void labels_check(const std::vector<std::string>& labels, int head_labels, const std::string& adapter_dir) {
  if (labels.empty()) return;
  if (!head_labels)
    fail_usage("--labels names the labels of a classification head, but adapter '" + adapter_dir + "' saves none",
               "leave out --labels");
  if (int(labels.size()) != head_labels)
    fail_usage("--labels gives " + std::to_string(labels.size()) + " name(s), but the adapter's classification head has " +
                   std::to_string(head_labels) + " output(s)",
               "name every label in id order, e.g. --labels entailment,neutral,contradiction");
  std::set<std::string> seen;
  for (const auto& l : labels)
    if (l.empty() || !seen.insert(l).second)
      fail_usage("--labels has an empty or repeated name ('" + l + "')", "give each label its own name");
}
}  // namespace

MergeReport merge_run(const MergeOptions& o) {
  MergeReport rep;
  if (o.base_dir.empty()) fail_usage("no base model given", "pass --base MODEL_DIR");
  Checkpoint base = Checkpoint::open(o.base_dir);
  AdapterFile ad = adapter_file_read(o.adapter_dir);
  adapter_check_finite(ad, "merge it");
  if (!base_name_matches(ad.base_name, o.base_dir, o.adapter_dir)) {
    if (!o.force)
      fail_usage("adapter '" + o.adapter_dir + "' was trained on '" + ad.base_name + "' but --base is '" + o.base_dir + "'",
                 "pass the model the adapter was trained on, or --force if '" + o.base_dir + "' is that model under another name");
    rep.notes.push_back("adapter names base '" + ad.base_name + "', merging into '" + o.base_dir + "' (--force)");
  }
  output_path_check(o.out_dir, o.overwrite, {o.base_dir, o.adapter_dir});
  if (o.verify && base.config().head == HeadKind::classifier && ad.saved.empty() && !base.has("classifier.out_proj.weight"))
    fail_usage("--verify compares the classification head's logits, but neither the base model '" + o.base_dir +
                   "' nor the adapter '" + o.adapter_dir + "' has a classification head",
               "merge without --verify, or merge the adapter that saved the head (modules_to_save)");

  const std::vector<Tensor> head = adapter_classifier_head(ad);
  rep.head_labels = head.empty() ? 0 : int(head[2].dim(0));  // out_proj.weight (NL, C)
  labels_check(o.labels, rep.head_labels, o.adapter_dir);

  auto tensors = merge_weights(base, ad, &rep.notes);
  rep.modules_merged = int(ad.modules.size());
  rep.tensors_written = tensors.size();

  const std::string tmp = output_tmp_dir(o.out_dir);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  checkpoint_write(tmp, base.config(), tensors, o.dtype, o.shard_bytes);
  tensors.clear();
  // The base's own config.json (every key transformers needs), with the dtype written.
  json cfg = json_read_file((fs::path(o.base_dir) / "config.json").string());
  const char* dt = o.dtype == DType::f32 ? "float32" : o.dtype == DType::bf16 ? "bfloat16" : "float16";
  if (cfg.contains("dtype")) cfg["dtype"] = dt;
  if (cfg.contains("torch_dtype") || !cfg.contains("dtype")) cfg["torch_dtype"] = dt;
  if (rep.head_labels) classifier_config_set(cfg, rep.head_labels, o.labels);
  file_write_atomic((fs::path(tmp) / "config.json").string(), cfg.dump(2) + "\n");
  const fs::path gen = fs::path(o.base_dir) / "generation_config.json";
  if (fs::exists(gen)) fs::copy_file(gen, fs::path(tmp) / "generation_config.json", fs::copy_options::overwrite_existing);
  tokenizer_files_copy(o.base_dir, tmp);

  if (o.verify) {
    rep.verify = merge_verify(o.base_dir, o.adapter_dir, tmp, o.dtype);
    rep.verified = true;
    if (!rep.verify.passed) {
      fs::remove_all(tmp, ec);
      if (rep.verify.nonfinite > 0)
        fail_runtime("merge verification failed: " + std::to_string(rep.verify.nonfinite) +
                         " logits of the probe batch are NaN or infinite (merged model or base + adapter); nothing "
                         "was written to '" + o.out_dir + "'",
                     "the adapter '" + o.adapter_dir + "' or the base '" + o.base_dir +
                         "' holds non-finite weights: check the training run that wrote it (its loss and grad_norm)");
      char buf[256];
      std::snprintf(buf, sizeof buf, "max abs %.3g, max rel %.3g > threshold %.3g for %s", rep.verify.max_abs,
                    rep.verify.max_rel, rep.verify.threshold, dtype_name(o.dtype));
      fail_runtime("merge verification failed: the merged model's logits differ from base + adapter (" +
                       std::string(buf) + "); nothing was written to '" + o.out_dir + "'",
                   "please report this with the base and adapter; fp32 output (--dtype fp32) is the most exact");
    }
  }
  output_dir_install(tmp, o.out_dir);
  return rep;
}

}  // namespace lora
