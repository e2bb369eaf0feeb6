// The sequence-classification head of post-norm encoders (RoBERTa; see model.h): HF
// RobertaClassificationHead on each sequence's first token, its weights (set from a checkpoint or an
// adapter, or initialised as transformers does) and the classification step with its backward pass into
// the encoder (Model::body_backward). Shapes: B sequences, T tokens, C channels, NL labels.
#include <cmath>

#include "core/base/error.h"
#include "core/model/model.h"
#include "core/model/model_internal.h"

namespace lora {

using model_internal::dropout_seed;
using model_internal::rows_of;

void Model::classifier_set(const Tensor& dense_w, const Tensor& dense_b, const Tensor& out_w, const Tensor& out_b) {
  if (cfg_.head != HeadKind::classifier) throw std::logic_error("classifier_set on a model without a classification head");
  be_.upload(cls_.dense_w, dense_w);
  be_.upload(cls_.dense_b, dense_b);
  be_.upload(cls_.out_w, out_w);
  be_.upload(cls_.out_b, out_b);
  cls_.loaded = true;
  for (auto [v, m] : {std::pair<Tensor*, Tensor*>{&cls_.dense_w_val, &cls_.dense_w}, {&cls_.dense_b_val, &cls_.dense_b},
                      {&cls_.out_w_val, &cls_.out_w}, {&cls_.out_b_val, &cls_.out_b}})
    if (v->data != m->data) be_.copy(*v, *m);
}

void Model::classifier_init(uint64_t seed) {
  // transformers' _init_weights for nn.Linear: N(0, initializer_range) weights, zero biases.
  Rng rng(rng_mix(seed ^ 0x636c6173736966ull));
  Tensor dw = tensor_host(cls_.dense_w.shape), ow = tensor_host(cls_.out_w.shape);
  for (Tensor* t : {&dw, &ow})
    for (int64_t i = 0; i < t->numel(); ++i) t->f32()[i] = rng.normal() * cfg_.init_std;
  classifier_set(dw, tensor_host(cls_.dense_b.shape), ow, tensor_host(cls_.out_b.shape));
}

LossStats Model::classify_step(const Tensor& tokens, const Tensor& lengths, const Tensor& labels, float dscale,
                               uint64_t dropout_key, bool train, Tensor* logits_out) {
  if (cfg_.head != HeadKind::classifier)
    fail_usage("this " + cfg_.family + " model has a language-model head, not a classification head",
               "classification needs an encoder with a classification head (model_type roberta)");
  Pass p = pass_begin(tokens, lengths, dropout_key, train);
  const int B = p.B, T = p.T;
  const int64_t C = cfg_.d_model, NL = cfg_.num_labels;
  const bool regression = NL == 1, backward = dscale != 0.0f;
  if (labels.numel() != B) throw std::logic_error("classify_step: labels must have one entry per sequence");
  const DType dt = be_.activation_dtype();
  ClassifierHead& h = cls_;
  Acts& a = *acts_;

  // Targets on the device: class ids (i32) for cross-entropy, values (f32) for the squared error.
  Tensor targets;
  if (regression) {
    targets = be_.alloc({B}, DType::f32);
    be_.upload(targets, labels);
  } else {
    Tensor ids = tensor_host({B}, DType::i32);
    for (int b = 0; b < B; ++b) {
      const float y = labels.f32()[b];
      if (!(y >= 0 && y < float(NL) && y == std::floor(y)))
        fail_usage("label " + std::to_string(y) + " of a batch example is not a class id in [0, " + std::to_string(NL) +
                       ")",
                   "labels of a " + std::to_string(NL) + "-class head are 0.." + std::to_string(NL - 1) +
                       "; set model.num_labels or data.label_names to match the data");
      ids.i32()[b] = int32_t(y);
    }
    targets = be_.alloc({B}, DType::i32);
    be_.upload(targets, ids);
  }

  Tensor hidden = body_forward(p);  // (N,C)
  // The first token of each sequence: rows b*T of the hidden states, a strided (B,C) view.
  MatRef first = mat(hidden);
  first.rows = B;
  first.ld = int64_t(T) * C;
  const float pdrop = p.dropout_key != 0 ? cfg_.head_dropout : 0.0f;
  const uint64_t seed1 = dropout_seed(p.dropout_key, (1 << 25) + 0), seed2 = dropout_seed(p.dropout_key, (1 << 25) + 1);
  Tensor x = be_.alloc({B, C}, dt);     // (B,C) first token
  Tensor xd = be_.alloc({B, C}, dt);    // (B,C) after dropout
  Tensor th = be_.alloc({B, C}, dt);    // (B,C) tanh(dense(xd))
  Tensor thd = be_.alloc({B, C}, dt);   // (B,C) after dropout
  Tensor logits = be_.alloc({B, NL}, dt);
  be_.mat_copy(mat(x), first);
  if (pdrop > 0) be_.dropout_forward(xd, x, pdrop, seed1, 0); else be_.copy(xd, x);
  be_.matmul(mat(th), mat(xd), mat(h.dense_w_val), false, true, 1.0f, 0.0f);  // dense: xd W^T + b
  be_.bias_add(mat(th), h.dense_b_val);
  be_.tanh_forward(th, th);
  if (pdrop > 0) be_.dropout_forward(thd, th, pdrop, seed2, 0); else be_.copy(thd, th);
  be_.matmul(mat(logits), mat(thd), mat(h.out_w_val), false, true, 1.0f, 0.0f);  // out_proj
  be_.bias_add(mat(logits), h.out_b_val);
  if (logits_out) *logits_out = be_.download(logits);

  LossStats stats;
  Tensor losses = be_.alloc({B}, DType::f32);
  if (regression) {
    be_.mse_loss(mat(logits), losses, targets, dscale);
  } else {
    Tensor argmax = be_.alloc({B}, DType::i32);
    be_.cross_entropy(mat(logits), losses, argmax, targets, 0.0f, dscale);
    Tensor ha = be_.download(argmax);
    for (int b = 0; b < B; ++b) stats.correct += ha.i32()[b] == int32_t(labels.f32()[b]);
  }
  Tensor hl = be_.download(losses);
  for (int b = 0; b < B; ++b) stats.loss_sum += hl.f32()[b];
  stats.tokens = B;
  if (!backward) return stats;

  // logits now holds dscale * dloss/dlogits (B,NL).
  Tensor dthd = be_.alloc({B, C}, dt), dxd = be_.alloc({B, C}, dt);
  be_.matmul(mat(h.dout_w), mat(logits), mat(thd), true, false, 1.0f, 1.0f);  // dWo += dlogits^T thd
  be_.bias_backward(h.dout_b, mat(logits));
  be_.matmul(mat(dthd), mat(logits), mat(h.out_w_val), false, false, 1.0f, 0.0f);  // (B,C)
  if (pdrop > 0) be_.dropout_backward(dthd, dthd, pdrop, seed2, 0);
  be_.tanh_backward(dthd, dthd, th);
  be_.matmul(mat(h.ddense_w), mat(dthd), mat(xd), true, false, 1.0f, 1.0f);  // dWd += dh^T xd
  be_.bias_backward(h.ddense_b, mat(dthd));
  be_.matmul(mat(dxd), mat(dthd), mat(h.dense_w_val), false, false, 1.0f, 0.0f);
  if (pdrop > 0) be_.dropout_backward(dxd, dxd, pdrop, seed1, 0);
  // Only the first token of each sequence receives a gradient from the head.
  Tensor dhidden = rows_of(a.dlnf, p.N, C);
  be_.fill(dhidden, 0);
  MatRef dfirst = mat(dhidden);
  dfirst.rows = B;
  dfirst.ld = int64_t(T) * C;
  be_.mat_copy(dfirst, mat(dxd));
  body_backward(p, dhidden);
  return stats;
}

}  // namespace lora
