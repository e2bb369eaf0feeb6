// See optimizer.h. Clipping follows torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6),
// applied only when below 1; the coefficient is folded into AdamW's grad_scale, so no extra pass.
#include "core/train/optimizer.h"

#include <cmath>
#include <map>

#include "core/base/error.h"

namespace lora {

float schedule_lr(const std::string& kind, float base_lr, int64_t step, int64_t warmup, int64_t total) {
  if (warmup > 0 && step < warmup) return base_lr * float(step) / float(warmup);
  if (kind == "constant") return base_lr;
  if (total <= warmup) return base_lr;
  double progress = double(step - warmup) / double(total - warmup);
  if (progress > 1) progress = 1;
  if (kind == "linear") return base_lr * float(std::max(0.0, 1.0 - progress));
  if (kind == "cosine") return base_lr * float(0.5 * (1.0 + std::cos(M_PI * progress)));
  fail_usage("unknown train.schedule '" + kind + "'", "use constant, linear or cosine");
}

AdamW::AdamW(Backend& be, std::vector<TrainableParam> params, const AdamWConfig& cfg)
    : be_(be), params_(std::move(params)), cfg_(cfg) {
  for (const auto& p : params_) {
    m_.push_back(be_.alloc(p.master->shape, DType::f32));
    v_.push_back(be_.alloc(p.master->shape, DType::f32));
  }
}

OptimizerStep AdamW::step(float lr, float grad_unscale) {
  OptimizerStep out;
  double sq = 0;
  for (const auto& p : params_) sq += be_.sum_squares(*p.grad);
  out.grad_norm = std::sqrt(sq) * grad_unscale;
  if (!std::isfinite(out.grad_norm)) {
    out.skipped = true;
    return out;
  }
  float clip = 1.0f;
  if (cfg_.clip_grad_norm > 0) {
    double coef = cfg_.clip_grad_norm / (out.grad_norm + 1e-6);
    if (coef < 1) clip = float(coef);
  }
  AdamWParams ap;
  ap.lr = lr;
  ap.beta1 = cfg_.beta1;
  ap.beta2 = cfg_.beta2;
  ap.eps = cfg_.eps;
  ap.weight_decay = cfg_.weight_decay;
  ap.step = updates_ + 1;
  ap.grad_scale = grad_unscale * clip;
  std::vector<AdamWSlot> slots;
  for (size_t i = 0; i < params_.size(); ++i) {
    AdamWSlot s;
    s.param = params_[i].master;
    s.grad = params_[i].grad;
    s.m = &m_[i];
    s.v = &v_[i];
    s.shadow = params_[i].value->data != params_[i].master->data ? params_[i].value : nullptr;
    s.decay = params_[i].decay;
    slots.push_back(s);
  }
  be_.adamw_update(slots, ap);
  ++updates_;
  return out;
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_export() {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.push_back({"m/" + params_[i].name, be_.download(m_[i])});
    out.push_back({"v/" + params_[i].name, be_.download(v_[i])});
  }
  return out;
}

void AdamW::state_import(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& source) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& kv : tensors) by_name[kv.first] = &kv.second;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (int which = 0; which < 2; ++which) {
      std::string name = (which ? "v/" : "m/") + params_[i].name;
      auto it = by_name.find(name);
      if (it == by_name.end())
        fail_runtime("optimizer state '" + source + "' has no tensor '" + name + "'",
                     "the checkpoint was written by a run with other trainable tensors; resume with the same recipe");
      Tensor& dst = which ? v_[i] : m_[i];
      if (it->second->numel() != dst.numel())
        fail_runtime("optimizer state '" + source + "': '" + name + "' has shape " + it->second->shape_str() +
                     ", expected " + dst.shape_str(), "resume with the recipe the checkpoint was made with");
      be_.upload(dst, *it->second);
    }
  }
}

void LossScaler::update(bool overflow) {
  if (!enabled) return;
  if (overflow) {
    scale = std::max(1.0, scale / 2);
    good_steps = 0;
  } else if (++good_steps >= growth_interval) {
    scale *= 2;
    good_steps = 0;
  }
}

}  // namespace lora
