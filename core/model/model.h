// The transformer, written once against the op set (core/ops/backend.h): embeddings, pre-norm blocks
// (attention + MLP), final norm, LM head (tied to the embedding or separate) with a fused, row-chunked
// softmax cross-entropy; forward and backward by hand (no autograd), LoRA adapters on any linear layer.
// GPT-2 (LayerNorm, learned positions, GELU, fused c_attn) and the LLaMA family (RMSNorm, rotary
// positions, SwiGLU, separate q/k/v with grouped KV heads) follow from ModelConfig's fields, and so does
// RoBERTa: an encoder (bidirectional attention over the unpadded keys) with post-norm blocks
// (x = LN(x + attn(x)), x = LN(x + mlp(x))), learned positions numbered from padding_idx + 1,
// token-type embedding 0 added, an embedding LayerNorm, erf GELU, biases everywhere, and the
// sequence-classification head of HF RobertaClassificationHead on the first token (<s>), trained in
// full beside the adapters (PEFT's modules_to_save = ["classifier"]): classify_step, not step.
// Dropout, in training only: LoRA's input dropout, the classification head's two dropouts, and, when
// set_dropout asks for them, the model's own hidden dropout (after the embeddings, and on the attention
// output projection and the MLP output before each residual add, where HF RoBERTa and GPT-2 put
// hidden_dropout_prob / resid_pdrop / embd_pdrop) and attention-probability dropout
// (attention_probs_dropout_prob / attn_pdrop). Every mask is a function of (dropout_key, site, element).
//
// Linear layers keep the checkpoint's own orientation: GPT-2's Conv1D stores W as (in, out) and computes
// y = x W; nn.Linear stores (out, in) and computes y = x W^T. A linear layer may carry several LoRA
// adapters, each writing a block of output columns: q, k and v inside GPT-2's fused c_attn are three
// adapters on columns [0,C), [C,2C), [2C,3C) (Hu et al. 2021, section 4.1: h = W0 x + (alpha/r) B A x).
//
// Gradients: parameter gradients accumulate across micro-batches until zero_grads(); the caller scales
// the loss gradient (dscale = 1 / loss tokens of the whole optimizer step) so accumulation is exact.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/formats/model_config.h"
#include "core/ops/backend.h"

namespace lora {

class Checkpoint;

// What trains and how (the recipe's `lora` section, resolved).
struct LoraSpec {
  bool full = false;                 // full fine-tune: every weight trains, no adapters
  int r = 8;                         // rank
  float alpha = 16;                  // scale = alpha / r (alpha / sqrt(r) with rslora)
  float dropout = 0;                 // on the adapter's input (PEFT's lora_dropout)
  bool rslora = false;               // rank-stabilised scaling (Kalajdzievski 2023)
  std::vector<std::string> targets;  // roles (q k v o up down; gate with SwiGLU) or HF module names
                                     // (GPT-2: c_attn c_proj c_fc; LLaMA: q_proj ... down_proj)
  std::vector<int> layers;           // empty: every layer
  uint64_t init_seed = 0;            // A's Kaiming-uniform initialisation
};

// One LoRA adapter: delta y[:, col0:col0+ncols] = scale * (dropout(x) A^T) B^T.
struct LoraAdapter {
  std::string role;       // "q", "v", ... or "all" for an adapter covering the whole layer
  int64_t col0 = 0, ncols = 0;
  int r = 0;
  float alpha = 0, scale = 0;
  Tensor a, b;            // fp32 master weights: A (r, in), B (ncols, r)
  Tensor a_val, b_val;    // activation-dtype copies used by matmuls (the masters on the CPU)
  Tensor da, db;          // fp32 gradients
};

struct Linear {
  std::string hf_name;       // "h.0.attn.c_attn", as in the checkpoint without the family prefix
  int64_t in = 0, out = 0;
  bool w_in_out = false;     // W stored (in, out) (Conv1D)
  Tensor w, b;               // frozen (or, in full mode, trainable) weight and bias
  Tensor dw, db;             // gradients in full mode
  float dropout = 0;         // LoRA input dropout (one mask per layer, shared by its adapters)
  std::vector<LoraAdapter> adapters;
};

struct Norm {
  std::string hf_name;
  Tensor w, b, dw, db;
};

// One transformer block. GPT-2 uses ln1/ln2 (LayerNorm), the fused qkv (c_attn), attn_out, fc and
// fc_out. The LLaMA family (RMSNorm, rotary, SwiGLU) uses ln1/ln2 (RMSNorm, no bias), separate q, k, v,
// attn_out (o_proj), gate (gate_proj), fc (up_proj) and fc_out (down_proj); qkv stays empty. A linear
// layer is in use when its hf_name is set (linears() lists those, in a fixed order).
struct Block {
  Norm ln1, ln2;
  Linear qkv, attn_out, fc, fc_out;
  Linear q, k, v, gate;
  static constexpr int kSlots = 8;  // index i of slot(i): qkv, attn_out, fc, fc_out, q, k, v, gate
  Linear* slot(int i) {
    Linear* all[kSlots] = {&qkv, &attn_out, &fc, &fc_out, &q, &k, &v, &gate};
    return all[i];
  }
  const Linear* slot(int i) const { return const_cast<Block*>(this)->slot(i); }
  // The linear layers in use: GPT-2 qkv attn_out fc fc_out; LLaMA q k v attn_out gate fc fc_out.
  std::vector<Linear*> linears() {
    std::vector<Linear*> out;
    for (Linear* l : {&qkv, &q, &k, &v, &attn_out, &gate, &fc, &fc_out})
      if (!l->hf_name.empty()) out.push_back(l);
    return out;
  }
  std::vector<const Linear*> linears() const {
    std::vector<const Linear*> out;
    for (Linear* l : const_cast<Block*>(this)->linears()) out.push_back(l);
    return out;
  }
};

// HF RobertaClassificationHead: logits = out_proj(dropout(tanh(dense(dropout(h_first))))). Trained in
// full (fp32 masters, like LoRA's A and B); saved in adapters under base_model.model.classifier.*.
struct ClassifierHead {
  Tensor dense_w, dense_b, out_w, out_b;              // fp32 masters (C,C), (C), (NL,C), (NL)
  Tensor dense_w_val, dense_b_val, out_w_val, out_b_val;  // activation-dtype copies (the masters on the CPU)
  Tensor ddense_w, ddense_b, dout_w, dout_b;          // fp32 gradients
  bool loaded = false;                                // set from a checkpoint or an adapter, not initialised
};

// A trainable tensor as the optimizer sees it.
struct TrainableParam {
  std::string name;      // stable name, used in training-state files
  Tensor* master;        // fp32
  Tensor* value;         // the copy the forward pass reads (== master on the CPU)
  Tensor* grad;          // fp32
  bool decay;            // weight decay applies (not to biases and norms)
};

struct LossStats {
  double loss_sum = 0;     // sum of per-token losses over tokens with a target
  int64_t tokens = 0;      // number of tokens with a target
  int64_t correct = 0;     // argmax == target
};

// Key/value cache for incremental decoding (Model::decode_step, core/model/model_decode.cpp). Its rows are
// the sequences decoded together (prompts x beams). Time-major: layer l's keys k[l] are
// (capacity, max_rows, NKV*HS), so every row writes the same slot at each step. Prompts of different
// lengths are right-aligned (left padding): row r's sequence starts at slot start[r]; attention never
// reads the slots before it and positions count from it (position = slot - start[r]), so a padded row
// computes exactly what it would alone. Reordering rows (beam search) never moves keys and values: the
// table slot_rows says which physical row of each filled slot a row reads (attention_decode in backend.h).
struct KvCache {
  int rows = 0;                  // R: sequences now in the cache
  int max_rows = 0;              // physical rows per slot
  int capacity = 0;              // slots
  int used = 0;                  // slots written; the next token goes to slot `used`
  std::vector<int32_t> start;    // (rows) host: first slot of each row's sequence
  std::vector<int32_t> slot_rows;  // (used, rows) host: physical row of (slot, row); empty = identity
  Tensor start_dev, slot_rows_dev; // device copies, refreshed when the host ones change
  bool dirty = false;            // start/slot_rows changed since the last upload
  std::vector<Tensor> k, v;      // per layer, (capacity, max_rows, NKV*HS) in the activation dtype
};

class Model {
 public:
  Model(Backend& be, const ModelConfig& cfg);
  ~Model();
  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }

  // Base weights from a HF checkpoint (shapes checked against the config), and the checkpoint's
  // classification head when it has one; with_head false leaves the head to be set from an adapter
  // (merge --verify of an adapter whose head replaces a base head of another size).
  void load_base(const Checkpoint& ck, bool with_head = true);
  // True when `ck` holds a classification head for this model (a classifier whose checkpoint has
  // classifier.out_proj.weight); lora::Error (exit 2) when that head has another number of labels than
  // model.num_labels set up. load_base checks it; `lora validate` calls it without loading weights.
  bool checkpoint_head_check(const Checkpoint& ck) const;
  // Random base weights (GPT-2's init: N(0, 0.02), zero biases, unit norms) for tests and benchmarks.
  void init_random(uint64_t seed);
  // Adapters per the spec; A Kaiming-uniform(a = sqrt(5)) as PEFT, B zero. In full mode, marks all trainable.
  void lora_init(const LoraSpec& spec);
  const LoraSpec& lora_spec() const { return spec_; }
  // Records the spec of adapters placed by adapter_load (core/model/adapter.cpp).
  void lora_loaded(const LoraSpec& spec) { spec_ = spec; }

  // One forward pass over a batch (host i32 tensors: tokens (B,T), targets (B,T) with -100 = no loss,
  // lengths (B)). With dscale != 0, also the backward pass: gradients += d(dscale * sum of losses).
  // dropout_key makes LoRA dropout masks reproducible (one per micro-batch).
  LossStats step(const Tensor& tokens, const Tensor& targets, const Tensor& lengths, float dscale,
                 float label_smoothing, uint64_t dropout_key, bool train);
  // Logits for every position as a host (B,T,V) tensor (tests, generation).
  Tensor logits(const Tensor& tokens, const Tensor& lengths);

  // ---- sequence classification and regression (config().head == HeadKind::classifier) ----
  // One forward pass (and with dscale != 0 the backward pass) of the classification head on each
  // sequence's first token. labels: host f32 (B), class ids in [0, num_labels) or, with num_labels 1,
  // regression targets. Loss per example: cross-entropy, or squared error (MSE) for regression; stats
  // count examples in `tokens`. logits_out, if given, receives the host (B, num_labels) logits.
  LossStats classify_step(const Tensor& tokens, const Tensor& lengths, const Tensor& labels, float dscale,
                          uint64_t dropout_key, bool train, Tensor* logits_out = nullptr);
  ClassifierHead& classifier() { return cls_; }
  // Sets the head's weights from host f32 tensors (an adapter's saved modules or a checkpoint).
  void classifier_set(const Tensor& dense_w, const Tensor& dense_b, const Tensor& out_w, const Tensor& out_b);
  // A fresh head as transformers initialises one: N(0, initializer_range) weights, zero biases.
  void classifier_init(uint64_t seed);

  // ---- incremental decoding (core/model/model_decode.cpp): the eval-mode forward of step() (adapters on,
  // no dropout; the same block code, with the cache as its attention's keys), one chunk of tokens at a
  // time against a KvCache ----
  // A cache for start.size() rows of up to `capacity` slots; max_rows (>= rows; 0: rows) bounds the
  // rows kv_cache_select may later ask for.
  KvCache kv_cache_create(const std::vector<int32_t>& start, int capacity, int max_rows = 0);
  // Feeds T tokens per row (host i32 (R, T), written at slots used..used+T-1; entries at slots before a
  // row's start are padding and ignored) and returns the logits after each row's last token as a host
  // (R, V) f32 tensor. Errors (lora::Error) for token ids outside the vocabulary, positions past the
  // model's maximum, or a full cache.
  Tensor decode_step(KvCache& cache, const Tensor& tokens);
  // Reorders and resizes the cache's rows: new row i is old row src[i] (beam search keeps the parents of
  // the surviving beams; finished prompts are dropped). src.size() <= max_rows. Host bookkeeping only:
  // no key or value moves.
  void kv_cache_select(KvCache& cache, const std::vector<int32_t>& src);

  // Activation recomputation: keep only each block's residual input and rebuild the block's
  // activations in the backward pass (about a third more compute, activations of one block instead of L).
  void set_recompute(bool on) { recompute_ = on; }
  bool recompute() const { return recompute_; }
  // The model's own dropout probabilities in training (0: off, the default; the recipe's
  // model.hidden_dropout and model.attention_dropout), in [0, 1).
  void set_dropout(float hidden, float attention);

  std::vector<TrainableParam> trainable();
  void zero_grads();
  // After the optimizer changed masters: refresh activation-dtype copies (no-op on the CPU).
  void sync_values();
  // Trainable parameters per module kind ("lora q", "lora v", "full: attn", ...) for --dry-run.
  std::vector<std::pair<std::string, int64_t>> trainable_counts() const;
  int64_t base_param_count() const;

  // All base weights under their HF names (without family prefix) as host f32 tensors.
  std::vector<std::pair<std::string, Tensor>> export_base();

  std::vector<Block>& blocks() { return blocks_; }
  Tensor& wte() { return wte_; }
  Tensor& wpe() { return wpe_; }
  // The LM head's (V,C) weight: the token embedding when tied, else lm_head.weight.
  Tensor& head() { return cfg_.tied_head ? wte_ : lm_head_; }

 private:
  struct Acts;
  struct Pass;  // one forward (and backward) pass: the batch's shape and dropout settings
  Pass pass_begin(const Tensor& tokens, const Tensor& lengths, uint64_t dropout_key, bool train);
  // Embeddings and blocks (and the final norm of pre-norm models): the (N,C) last hidden states.
  Tensor body_forward(const Pass& p);
  // From d(last hidden states) (N,C) back to the embeddings; parameter gradients accumulate.
  void body_backward(const Pass& p, const Tensor& dhidden);
  void block_forward(const Pass& p, int l);
  void block_backward(const Pass& p, int l);
  void norm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Norm& n);
  void norm_backward(Tensor& dinp, Norm& n, const Tensor& dout, const Tensor& inp, const Tensor& mean,
                     const Tensor& rstd);
  // layer: block index; idx: the linear's Block::slot index. gelu_out (the tanh GELU only): also
  // gelu_out = gelu(y), fused into the product where no adapter comes between. gelu_in: dx is the input
  // gradient of the GELU whose output was x, i.e. dx = (dy W^T + LoRA's term) * gelu'(gelu_in).
  void linear_forward(Linear& lin, const Tensor& x, Tensor& y, int layer, int idx, uint64_t dropout_key, bool train,
                      Tensor* gelu_out = nullptr);
  void linear_backward(Linear& lin, const Tensor& x, const Tensor& dy, Tensor& dx, int layer, int idx,
                       uint64_t dropout_key, Tensor* gelu_in = nullptr);
  // Activation buffers for B*T rows; decoding needs one set (forward only) and reuses larger ones.
  void ensure_acts(int B, int T, bool decoding = false);

  Backend& be_;
  ModelConfig cfg_;
  LoraSpec spec_;
  bool recompute_ = false;
  float hidden_dropout_ = 0, attention_dropout_ = 0;  // see set_dropout
  Tensor wte_, wpe_, dwte_, dwpe_;  // (V,C), (offset+P,C); wpe_ empty with rotary positions
  Tensor lm_head_, dlm_head_;       // (V,C) untied LM head (tied_head false); empty when tied
  Tensor tte_, dtte_;               // (types,C) token-type embeddings (RoBERTa; row 0 is added)
  std::string wte_name_, wpe_name_, tte_name_;  // HF names (without the family prefix)
  Norm lnf_;                        // final norm of pre-norm models (empty tensors for post-norm)
  Norm ln_emb_;                     // embedding LayerNorm of post-norm encoders (empty otherwise)
  ClassifierHead cls_;              // empty unless config().head is classifier
  std::vector<Block> blocks_;
  std::unique_ptr<Acts> acts_;
};

// The linear layers a target name selects in a block: role or HF module name -> (linear, column block).
struct TargetSlot {
  Linear Block::*linear;
  std::string role;
  int64_t col0, ncols;  // ncols = -1: the whole layer
};
std::vector<TargetSlot> lora_target_slots(const std::string& target, const ModelConfig& cfg);

}  // namespace lora
