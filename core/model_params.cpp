// The model's parameters as the optimizer, the checkpoint writer and --dry-run see them: trainable
// tensors (LoRA A/B, or every weight in full mode), gradients, counts, and export of base weights.
#include <set>

#include "core/error.h"
#include "core/model.h"

namespace lora {

namespace {
std::string adapter_name(const Linear& lin, const LoraAdapter& ad, const char* which) {
  return lin.hf_name + ".lora_" + ad.role + "." + which;
}
}  // namespace

std::vector<TrainableParam> Model::trainable() {
  std::vector<TrainableParam> out;
  if (spec_.full) {
    // Full fine-tune: masters are the weights themselves on fp32 backends. Decay as HF's default
    // trainer groups it: not on biases and norm weights.
    auto add = [&](const std::string& name, Tensor& w, Tensor& g, bool decay) {
      if (!w.empty()) out.push_back({name, &w, &w, &g, decay});  // absent tensors (no bias, rotary) skipped
    };
    add(cfg_.conv1d_weights ? "wte.weight" : "embed_tokens.weight", wte_, dwte_, true);
    add("wpe.weight", wpe_, dwpe_, true);
    for (auto& b : blocks_) {
      for (Norm* n : {&b.ln1, &b.ln2}) {
        add(n->hf_name + ".weight", n->w, n->dw, false);
        add(n->hf_name + ".bias", n->b, n->db, false);
      }
      for (Linear* lin : b.linears()) {
        add(lin->hf_name + ".weight", lin->w, lin->dw, true);
        add(lin->hf_name + ".bias", lin->b, lin->db, false);
      }
    }
    add(lnf_.hf_name + ".weight", lnf_.w, lnf_.dw, false);
    add(lnf_.hf_name + ".bias", lnf_.b, lnf_.db, false);
    add("lm_head.weight", lm_head_, dlm_head_, true);
    return out;
  }
  for (auto& b : blocks_)
    for (Linear* lin : b.linears()) {
      for (auto& ad : lin->adapters) {
        out.push_back({adapter_name(*lin, ad, "A"), &ad.a, &ad.a_val, &ad.da, true});
        out.push_back({adapter_name(*lin, ad, "B"), &ad.b, &ad.b_val, &ad.db, true});
      }
    }
  return out;
}

void Model::zero_grads() {
  for (auto& p : trainable())
    if (!p.grad->empty()) be_.fill(*p.grad, 0);
}

void Model::sync_values() {
  for (auto& p : trainable())
    if (p.value->data != p.master->data) be_.copy(*p.value, *p.master);
}

std::vector<std::pair<std::string, int64_t>> Model::trainable_counts() const {
  std::vector<std::pair<std::string, int64_t>> out;
  auto bump = [&](const std::string& key, int64_t n) {
    for (auto& kv : out)
      if (kv.first == key) {
        kv.second += n;
        return;
      }
    out.push_back({key, n});
  };
  if (spec_.full) {
    if (cfg_.conv1d_weights) {
      bump("embeddings (wte, wpe)", wte_.numel() + wpe_.numel());
      for (const auto& b : blocks_) {
        bump("attention (c_attn, c_proj)", b.qkv.w.numel() + b.qkv.b.numel() + b.attn_out.w.numel() +
                                               b.attn_out.b.numel());
        bump("mlp (c_fc, c_proj)", b.fc.w.numel() + b.fc.b.numel() + b.fc_out.w.numel() + b.fc_out.b.numel());
        bump("layer norms", 2 * (b.ln1.w.numel() + b.ln2.w.numel()));
      }
      bump("layer norms", 2 * lnf_.w.numel());
      return out;
    }
    auto numel = [](const Tensor& t) { return t.empty() ? int64_t(0) : t.numel(); };
    bump("embeddings (embed_tokens)", wte_.numel());
    for (const auto& b : blocks_) {
      for (const Linear* lin : b.linears()) {
        const bool attn = lin == &b.q || lin == &b.k || lin == &b.v || lin == &b.attn_out;
        bump(attn ? "attention (q, k, v, o)" : "mlp (gate, up, down)", numel(lin->w) + numel(lin->b));
      }
      bump("norms", numel(b.ln1.w) + numel(b.ln1.b) + numel(b.ln2.w) + numel(b.ln2.b));
    }
    bump("norms", numel(lnf_.w) + numel(lnf_.b));
    if (!lm_head_.empty()) bump("lm_head", lm_head_.numel());
    return out;
  }
  for (const auto& b : blocks_)
    for (const Linear* lin : b.linears())
      for (const auto& ad : lin->adapters) bump("lora " + ad.role, ad.a.numel() + ad.b.numel());
  return out;
}

int64_t Model::base_param_count() const {
  auto numel = [](const Tensor& t) { return t.empty() ? int64_t(0) : t.numel(); };
  int64_t n = numel(wte_) + numel(wpe_) + numel(lm_head_) + numel(lnf_.w) + numel(lnf_.b);
  for (const auto& b : blocks_) {
    n += numel(b.ln1.w) + numel(b.ln1.b) + numel(b.ln2.w) + numel(b.ln2.b);
    for (const Linear* lin : b.linears()) n += numel(lin->w) + numel(lin->b);
  }
  return n;
}

std::vector<std::pair<std::string, Tensor>> Model::export_base() {
  std::vector<std::pair<std::string, Tensor>> out;
  auto add = [&](const std::string& name, const Tensor& t) {
    if (!t.empty()) out.push_back({name, be_.download(t)});
  };
  add(cfg_.conv1d_weights ? "wte.weight" : "embed_tokens.weight", wte_);
  add("wpe.weight", wpe_);
  for (auto& b : blocks_) {
    for (Norm* n : {&b.ln1, &b.ln2}) {
      add(n->hf_name + ".weight", n->w);
      add(n->hf_name + ".bias", n->b);
    }
    for (Linear* lin : b.linears()) {
      add(lin->hf_name + ".weight", lin->w);
      add(lin->hf_name + ".bias", lin->b);
    }
  }
  add(lnf_.hf_name + ".weight", lnf_.w);
  add(lnf_.hf_name + ".bias", lnf_.b);
  add("lm_head.weight", lm_head_);
  return out;
}

}  // namespace lora
