// The human summary of `lora info` (see inspect.h): one block per kind, rendered from the JSON object
// inspect_path returns, so --json and the text always agree.
#include <cstdio>

#include "core/commands/inspect.h"

namespace lora {

using ojson = nlohmann::ordered_json;

namespace {

std::string str(const ojson& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v.get<double>());
    return buf;
  }
  return v.dump();
}

// "892,416"
std::string grouped(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (n < 0 ? "-" : "") + out;
}

// "0.89M", "124.4M", "6.74B"
std::string count_short(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", double(n) / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", double(n) / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fK", double(n) / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", (long long)n);
  return buf;
}

std::string bytes_text(uint64_t b) {
  char buf[32];
  if (b >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(1ull << 30));
  else if (b >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1ull << 20));
  else if (b >= 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024.0);
  else std::snprintf(buf, sizeof buf, "%llu bytes", (unsigned long long)b);
  return buf;
}

// {"F32": 52, "BF16": 3} -> "F32 x52, BF16 x3"
std::string counts(const ojson& m) {
  std::string out;
  for (auto it = m.begin(); it != m.end(); ++it) out += (out.empty() ? "" : ", ") + it.key() + " x" + str(it.value());
  return out.empty() ? "none" : out;
}

std::string join(const ojson& arr, const char* sep = " ") {
  if (!arr.is_array()) return str(arr);
  std::string out;
  for (const auto& v : arr) out += (out.empty() ? "" : sep) + str(v);
  return out.empty() ? "-" : out;
}

// [0,1,2,3,5] -> "0-3, 5"
std::string ranges(const ojson& arr) {
  std::string out;
  size_t i = 0;
  while (i < arr.size()) {
    size_t k = i;
    while (k + 1 < arr.size() && arr[k + 1].get<int64_t>() == arr[k].get<int64_t>() + 1) ++k;
    out += (out.empty() ? "" : ", ") + str(arr[i]) + (k > i ? "-" + str(arr[k]) : "");
    i = k + 1;
  }
  return out.empty() ? "-" : out;
}

void row(std::string& out, const char* label, const std::string& text) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "  %-14s", label);
  out += buf + text + "\n";
}

// "KIND, N tokens, eos E[, bos B] (files)" from inspect's tokenizer keys.
std::string tokenizer_line(const ojson& j) {
  const std::string files = join(j["tokenizer_files"], ", ");
  if (j.contains("tokenizer")) {
    const ojson& t = j["tokenizer"];
    return str(t["kind"]) + ", " + str(t["vocab_size"]) + " tokens, eos " + str(t["eos_id"]) +
           (t.value("bos_id", -1) >= 0 ? ", bos " + str(t["bos_id"]) : "") + " (" + files + ")";
  }
  if (j.contains("tokenizer_error")) return "cannot be loaded: " + str(j["tokenizer_error"]) + " (" + files + ")";
  return "no tokenizer files (set data.tokenizer in a recipe)";
}

std::string model_text(const ojson& j) {
  const ojson& c = j["config"];
  std::string out = "model directory " + str(j["path"]) + "\n";
  row(out, "family", str(j["family"]) + " (model_type " + str(j["model_type"]) + ")");
  row(out, "config", str(c["layers"]) + " layers, d_model " + str(c["d_model"]) + ", " + str(c["heads"]) + " heads (" +
                         str(c["kv_heads"]) + " key/value heads, head_dim " + str(c["head_dim"]) + "), d_ff " +
                         str(c["d_ff"]) + ", vocab " + str(c["vocab_size"]) + ", context " + str(c["context"]));
  std::string window;  // " (sliding window 4096)", Qwen2's " (sliding window 4096 on layers 28-31)"
  if (c.contains("sliding_window"))
    window = " (sliding window " + str(c["sliding_window"]) +
             (!c.contains("sliding_layers") ? ""
              : (c["sliding_layers"].size() == 1 ? " on layer " : " on layers ") + ranges(c["sliding_layers"])) + ")";
  row(out, "architecture", str(c["norm"]) + ", " + str(c["position"]) + " positions" +
                               (c.contains("rope_theta") ? " (theta " + str(c["rope_theta"]) + ")" : "") + ", " +
                               str(c["activation"]) + ", " +
                               (c["causal"].get<bool>() ? "causal" : "bidirectional") + window + ", " +
                               (c["post_norm"].get<bool>() ? "post-norm" : "pre-norm") + ", " +
                               (c["tied_head"].get<bool>() ? "tied head" : "separate head") +
                               (c["bias"].get<bool>() ? ", biases" : "") +
                               (c["head"] == "lm" ? "" : ", " + str(c["head"]) + " head (" + str(c["num_labels"]) + " labels)"));
  row(out, "parameters", count_short(j["parameters"].get<int64_t>()) + " (" + grouped(j["parameters"].get<int64_t>()) +
                             ") in " + str(j["tensors"]) + " tensors: " + counts(j["dtypes"]));
  row(out, "weights", (j["sharded"].get<bool>() ? str(j["shards"]) + " shards (model.safetensors.index.json): "
                                                : std::string()) +
                          join(j["weight_files"], ", ") + ", " + bytes_text(j["bytes"].get<uint64_t>()));
  row(out, "tokenizer", tokenizer_line(j));
  return out;
}

std::string tokenizer_text(const ojson& j) {
  std::string out = "tokenizer directory " + str(j["path"]) + "\n";
  row(out, "tokenizer", tokenizer_line(j));
  row(out, "fingerprint", str(j["tokenizer"]["fingerprint"]) + " (recorded in the datasets it tokenizes)");
  return out;
}

std::string adapter_rows(const ojson& j) {
  std::string out;
  row(out, "base model", j["base_model_name_or_path"].get<std::string>().empty() ? "(not recorded)"
                                                                                 : str(j["base_model_name_or_path"]));
  row(out, "rank", "r " + str(j["r"]) + ", alpha " + str(j["alpha"]) + ", scale " + str(j["scale"]) +
                       (j["rslora"].get<bool>() ? " (rsLoRA: alpha / sqrt(r))" : " (alpha / r)"));
  if (j["module_scales"].size() > 1 ||
      (j["module_scales"].size() == 1 && str(j["module_scales"][0]) != str(j["scale"])))
    row(out, "module scales", join(j["module_scales"], ", ") + " (rank_pattern / alpha_pattern)");
  row(out, "targets", join(j["targets"]) + " (modules adapted: " + join(j["modules_adapted"]) + ")");
  row(out, "layers", ranges(j["layers"]) + " (" + std::to_string(j["layers"].size()) + " layers)");
  if (!j["rank_pattern"].empty()) row(out, "rank_pattern", j["rank_pattern"].dump());
  if (!j["alpha_pattern"].empty()) row(out, "alpha_pattern", j["alpha_pattern"].dump());
  if (!j["saved_modules"].empty())
    row(out, "saved modules", join(j["saved_modules"], ", ") + " (" + grouped(j["saved_parameters"].get<int64_t>()) +
                                  " parameters trained in full, PEFT's modules_to_save)");
  row(out, "tensors", str(j["tensors"]) + " (" + counts(j["dtypes"]) + ") on " + str(j["modules"]) + " modules, " +
                          grouped(j["trainable_parameters"].get<int64_t>()) + " trainable parameters, " +
                          bytes_text(j["bytes"].get<uint64_t>()) + " on disk");
  return out;
}

std::string adapter_text(const ojson& j) {
  const std::string by = str(j["written_by"]);
  return "adapter " + str(j["path"]) + " (PEFT " + str(j["peft_type"]) + (by.empty() ? "" : ", written by " + by) +
         ")\n" + adapter_rows(j);
}

std::string run_text(const ojson& j) {
  std::string out = "run directory " + str(j["path"]) +
                    (j["finished"].get<bool>() ? " (finished)" : " (not finished: no adapter or model written yet)") + "\n";
  if (j.contains("recipe")) {
    const ojson& r = j["recipe"];
    row(out, "model", str(r["model.path"]));
    if (str(r["lora.mode"]) == "full")
      row(out, "training", "full fine-tune");
    else
      row(out, "lora", "r " + str(r["lora.r"]) + ", alpha " + str(r["lora.alpha"]) + (r["lora.rslora"].get<bool>() ? " (rsLoRA)" : "") +
                           " on " + join(r["lora.targets"]) +
                           (r["lora.layers"].empty() ? std::string(", every layer") : ", layers " + ranges(r["lora.layers"])) +
                           ", dropout " + str(r["lora.dropout"]) +
                           (r.contains("lora.init_from") ? ", started from " + str(r["lora.init_from"]) : ""));
    row(out, "data", "train " + str(r["data.train"]) + (str(r["data.eval"]).empty() ? "" : ", eval " + str(r["data.eval"])) +
                         ", max_length " + str(r["data.max_length"]));
    row(out, "train", "lr " + str(r["train.lr"]) + " " + str(r["train.schedule"]) + ", batch " + str(r["train.batch_size"]) +
                          " x grad_accum " + str(r["train.grad_accum"]) + ", " +
                          (r["train.max_steps"].get<int64_t>() > 0 ? str(r["train.max_steps"]) + " steps"
                                                                   : str(r["train.epochs"]) + " epochs") +
                          ", seed " + str(r["train.seed"]));
  } else {
    row(out, "recipe", "cannot be read: " + str(j["recipe_error"]));
  }
  std::string ck;
  for (const auto& c : j["checkpoints"])
    ck += (ck.empty() ? "" : ", ") + (c.contains("error") ? str(c["dir"]) + " (unreadable)"
                                                          : "step " + str(c["step"]) + " (epoch " + str(c["epoch"]) + ")");
  if (ck.empty()) ck = "none committed";
  row(out, "checkpoints", ck + (j["incomplete_checkpoints"].get<int64_t>() > 0
                                    ? "; " + str(j["incomplete_checkpoints"]) + " incomplete (ignored by --resume)"
                                    : ""));
  if (!str(j["latest"]).empty()) row(out, "newest", str(j["latest"]) + " (what --resume continues from)");
  if (j.contains("metrics")) {
    const ojson& m = j["metrics"];
    std::string losses;
    for (const auto& l : m["last_losses"]) losses += (losses.empty() ? "" : ", ") + str(l["step"]) + ": " + str(l["loss"]);
    row(out, "metrics", str(m["records"]) + " records, last step " + str(m["last_step"]) +
                            (m["unreadable_lines"].get<int64_t>() ? ", " + str(m["unreadable_lines"]) + " unreadable lines" : ""));
    if (!losses.empty()) row(out, "last losses", losses);
    if (!m["last_eval"].is_null())
      row(out, "last eval", "step " + str(m["last_eval"]["step"]) + ": loss " + str(m["last_eval"]["eval_loss"]) +
                                ", token accuracy " + str(m["last_eval"]["eval_token_accuracy"]));
  } else {
    row(out, "metrics", "no metrics.jsonl");
  }
  if (j.contains("adapter"))
    row(out, "adapter", "adapter_config.json + adapter_model.safetensors: r " + str(j["adapter"]["r"]) + ", alpha " +
                            str(j["adapter"]["alpha"]) + ", " + str(j["adapter"]["tensors"]) + " tensors, " +
                            grouped(j["adapter"]["trainable_parameters"].get<int64_t>()) + " parameters");
  if (j.contains("adapter_error")) row(out, "adapter", "cannot be read: " + str(j["adapter_error"]));
  if (j.contains("model_dir")) row(out, "model", "full fine-tune written to " + str(j["model_dir"]));
  return out;
}

std::string dataset_text(const ojson& j) {
  std::string out = "tokenized dataset " + str(j["path"]) + " (format_version " + str(j["format_version"]) + ")\n";
  row(out, "source", str(j["source_path"]) + " (" + str(j["source_hash"]) + "), format " + str(j["format"]));
  row(out, "template", str(j["template"]));
  row(out, "tokenizer", "fingerprint " + str(j["tokenizer_fingerprint"]) + ", vocab " + str(j["vocab_size"]) + ", eos " +
                            str(j["eos_id"]));
  row(out, "examples", str(j["examples"]) + " (max_length " + str(j["max_length"]) + ": " + str(j["truncated"]) +
                           " truncated, " + str(j["dropped"]) + " dropped)" +
                           (j["labelled"].get<int64_t>() ? ", " + str(j["labelled"]) + " labelled" : ""));
  row(out, "tokens", grouped(j["tokens"].get<int64_t>()) + ": " + grouped(j["prompt_tokens"].get<int64_t>()) +
                         " prompt (no loss), " + grouped(j["completion_tokens"].get<int64_t>()) + " completion");
  const ojson& l = j["length"];
  row(out, "lengths", "min " + str(l["min"]) + ", mean " + str(l["mean"]) + ", p50 " + str(l["p50"]) + ", p90 " +
                          str(l["p90"]) + ", p99 " + str(l["p99"]) + ", max " + str(l["max"]));
  std::string h;
  int64_t lo = 1;
  for (const auto& b : l["histogram"]) {
    h += (h.empty() ? "" : " | ") + std::to_string(lo) + "-" + str(b["upto"]) + ": " + str(b["examples"]);
    lo = b["upto"].get<int64_t>() + 1;
  }
  row(out, "histogram", h);
  return out;
}

std::string omitted_line(const ojson& j, const char* what) {
  int64_t n = j["entries_omitted"].get<int64_t>();
  return n > 0 ? "    ... and " + std::to_string(n) + " more " + what + " (--all lists them all)\n" : "";
}

std::string safetensors_text(const ojson& j) {
  std::string out = "safetensors file " + str(j["path"]) + ": " + str(j["tensors"]) + " tensors, " +
                    grouped(j["parameters"].get<int64_t>()) + " parameters (" + counts(j["dtypes"]) + "), " +
                    bytes_text(j["bytes"].get<uint64_t>()) + "\n";
  std::string meta;
  for (auto it = j["metadata"].begin(); it != j["metadata"].end(); ++it)
    meta += (meta.empty() ? "" : ", ") + it.key() + "=" + str(it.value());
  row(out, "metadata", meta.empty() ? "none" : meta);
  out += "  tensors (name, dtype, shape):\n";
  for (const auto& e : j["entries"]) {
    std::string shape = "(";
    for (size_t i = 0; i < e["shape"].size(); ++i) shape += (i ? ", " : "") + str(e["shape"][i]);
    out += "    " + str(e["name"]) + "  " + str(e["dtype"]) + "  " + shape + ")\n";
  }
  return out + omitted_line(j, "tensors");
}

std::string gguf_text(const ojson& j) {
  std::string out = "GGUF file " + str(j["path"]) + ": version " + str(j["version"]) + ", " + str(j["tensors"]) +
                    " tensors, " + grouped(j["parameters"].get<int64_t>()) + " parameters (" + counts(j["types"]) +
                    "), " + bytes_text(j["bytes"].get<uint64_t>()) + "\n";
  out += "  metadata:\n";
  for (auto it = j["metadata"].begin(); it != j["metadata"].end(); ++it) {
    std::string v = it.value().is_array() ? "[" + join(it.value(), ", ") + "]" : str(it.value());
    out += "    " + it.key() + " = " + v + "\n";
  }
  out += "  tensors (name, type, dims in ggml order):\n";
  for (const auto& e : j["entries"]) out += "    " + str(e["name"]) + "  " + str(e["type"]) + "  [" + join(e["ne"], ", ") + "]\n";
  return out + omitted_line(j, "tensors");
}

}  // namespace

std::string inspect_text(const ojson& j) {
  const std::string kind = j.value("kind", "");
  if (kind == "model") return model_text(j);
  if (kind == "tokenizer") return tokenizer_text(j);
  if (kind == "adapter") return adapter_text(j);
  if (kind == "run") return run_text(j);
  if (kind == "dataset") return dataset_text(j);
  if (kind == "safetensors") return safetensors_text(j);
  if (kind == "gguf") return gguf_text(j);
  return j.dump(2) + "\n";
}

}  // namespace lora
