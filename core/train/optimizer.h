// AdamW over the model's trainable tensors, learning-rate schedules, global-norm clipping and the
// dynamic loss scaler for fp16 (start 2^16, double after 2000 clean steps, halve and skip on overflow).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/ops/backend.h"

namespace lora {

// Learning rate for optimizer update `step` (0-based), as HF's schedulers: linear warm-up from 0 over
// `warmup` updates, then constant, linear decay to 0 at `total`, or cosine decay to 0 at `total`.
float schedule_lr(const std::string& kind, float base_lr, int64_t step, int64_t warmup, int64_t total);

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  float clip_grad_norm = 0.0f;  // 0: no clipping
};

struct OptimizerStep {
  double grad_norm = 0;  // global L2 norm of the (unscaled) gradients, before clipping
  bool skipped = false;  // non-finite gradients: no update was made
};

class AdamW {
 public:
  AdamW(Backend& be, std::vector<TrainableParam> params, const AdamWConfig& cfg);
  // One update with learning rate lr. grad_unscale multiplies the gradients first (1 / loss scale).
  // `updates` counts the updates made so far (bias correction uses updates + 1).
  OptimizerStep step(float lr, float grad_unscale);
  int64_t updates() const { return updates_; }
  void set_updates(int64_t n) { updates_ = n; }
  // Moments as named host tensors ("m/<param>", "v/<param>"), and their restoration.
  std::vector<std::pair<std::string, Tensor>> state_export();
  void state_import(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& source);

 private:
  Backend& be_;
  std::vector<TrainableParam> params_;
  std::vector<Tensor> m_, v_;
  AdamWConfig cfg_;
  int64_t updates_ = 0;
};

// Dynamic loss scaling for fp16 (Micikevicius et al. 2018).
struct LossScaler {
  bool enabled = false;
  double scale = 65536.0;  // 2^16
  int64_t good_steps = 0;  // consecutive clean steps
  int64_t growth_interval = 2000;
  // After a step: halve on overflow, double after growth_interval clean steps.
  void update(bool overflow);
  float value() const { return enabled ? float(scale) : 1.0f; }
};

}  // namespace lora
