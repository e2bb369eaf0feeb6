// The model's parameters as the optimizer, the checkpoint writer and --dry-run see them: trainable
// tensors (LoRA A/B, or every weight in full mode, plus a classification head, which always trains),
// gradients, counts, and export of base weights (the head included, as HF names it: classifier.*).
#include <set>

#include "core/base/error.h"
#include "core/model/model.h"

namespace lora {

namespace {
std::string adapter_name(const Linear& lin, const LoraAdapter& ad, const char* which) {
  return lin.hf_name + ".lora_" + ad.role + "." + which;
}

// The classification head's tensors as (HF name, master, value, grad, decay): weights decay, biases not.
void classifier_params(ClassifierHead& h, std::vector<TrainableParam>& out) {
  if (h.dense_w.empty()) return;
  out.push_back({"classifier.dense.weight", &h.dense_w, &h.dense_w_val, &h.ddense_w, true});
  out.push_back({"classifier.dense.bias", &h.dense_b, &h.dense_b_val, &h.ddense_b, false});
  out.push_back({"classifier.out_proj.weight", &h.out_w, &h.out_w_val, &h.dout_w, true});
  out.push_back({"classifier.out_proj.bias", &h.out_b, &h.out_b_val, &h.dout_b, false});
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
    add(wte_name_, wte_, dwte_, true);
    add(wpe_name_, wpe_, dwpe_, true);
    add(tte_name_, tte_, dtte_, true);
    add(ln_emb_.hf_name + ".weight", ln_emb_.w, ln_emb_.dw, false);
    add(ln_emb_.hf_name + ".bias", ln_emb_.b, ln_emb_.db, false);
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
    classifier_params(cls_, out);
    return out;
  }
  for (auto& b : blocks_)
    for (Linear* lin : b.linears()) {
      for (auto& ad : lin->adapters) {
        out.push_back({adapter_name(*lin, ad, "A"), &ad.a, &ad.a_val, &ad.da, true});
        out.push_back({adapter_name(*lin, ad, "B"), &ad.b, &ad.b_val, &ad.db, true});
      }
    }
  classifier_params(cls_, out);
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
  const int64_t head = cls_.dense_w.empty() ? 0 : cls_.dense_w.numel() + cls_.dense_b.numel() + cls_.out_w.numel() +
                                                     cls_.out_b.numel();
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
    bump("embeddings", wte_.numel() + numel(wpe_) + numel(tte_) + numel(ln_emb_.w) + numel(ln_emb_.b));
    for (const auto& b : blocks_) {
      for (const Linear* lin : b.linears()) {
        const bool attn = lin == &b.q || lin == &b.k || lin == &b.v || lin == &b.attn_out;
        bump(attn ? "attention (q, k, v, o)" : "mlp (gate, up, down)", numel(lin->w) + numel(lin->b));
      }
      bump("norms", numel(b.ln1.w) + numel(b.ln1.b) + numel(b.ln2.w) + numel(b.ln2.b));
    }
    bump("norms", numel(lnf_.w) + numel(lnf_.b));
    if (!lm_head_.empty()) bump("lm_head", lm_head_.numel());
    if (head) bump("classifier (dense, out_proj)", head);
    return out;
  }
  for (const auto& b : blocks_)
    for (const Linear* lin : b.linears())
      for (const auto& ad : lin->adapters) bump("lora " + ad.role, ad.a.numel() + ad.b.numel());
  if (head) bump("classifier (dense, out_proj)", head);
  return out;
}

int64_t Model::base_param_count() const {
  auto numel = [](const Tensor& t) { return t.empty() ? int64_t(0) : t.numel(); };
  int64_t n = numel(wte_) + numel(wpe_) + numel(tte_) + numel(lm_head_) + numel(lnf_.w) + numel(lnf_.b) +
              numel(ln_emb_.w) + numel(ln_emb_.b);
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
  add(wte_name_, wte_);
  add(wpe_name_, wpe_);
  add(tte_name_, tte_);
  add(ln_emb_.hf_name + ".weight", ln_emb_.w);
  add(ln_emb_.hf_name + ".bias", ln_emb_.b);
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
  add("classifier.dense.weight", cls_.dense_w);
  add("classifier.dense.bias", cls_.dense_b);
  add("classifier.out_proj.weight", cls_.out_w);
  add("classifier.out_proj.bias", cls_.out_b);
  return out;
}

}  // namespace lora
