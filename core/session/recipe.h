// Recipes: the YAML file that says what `lora train` does (examples in configs/).
//
// Defaults live here, in one struct per section with a one-line comment per field; a recipe holds only
// what it changes (nanoGPT's config habit). recipe_parse is strict: unknown keys (with a "did you mean"),
// wrong types (a string where a number goes, `yes` where a boolean goes, 1.5 where an integer goes),
// duplicate keys and YAML syntax errors are all collected and thrown together as one lora::Error
// (EXIT_CODE_USAGE), one problem per line, each naming the file, line and key. recipe_validate then
// checks values (ranges, choices, required keys), again reporting every problem at once.
//
// Paths. Input paths (model.path, lora.init_from, data.train, data.eval, data.tokenizer, eval.meteor_jar)
// written in a recipe file are relative to the recipe file's directory; output paths (output.dir, data.cache_dir) and
// every path given with --set are relative to the current directory. A leading "~/" means $HOME. The
// struct stores each path joined to its base and lexically normalised; an absolute result below the
// current directory is made relative to it ("/cwd/data/x" -> "data/x"), other results stay as they are,
// so a relative recipe path and relative entries give paths relative to the current directory
// ("../shared/data/x").
//
// Strings with a fixed set of values (device, dtype, schedule, ...) stay strings here; recipe_validate
// checks them against recipe_fields()' choices, so consumers may compare them directly.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/base/error.h"

namespace lora {

struct ModelSection {
  std::string path;             // HF checkpoint directory (config.json + *.safetensors); required to train
  std::string device = "auto";  // "auto" (cuda when a GPU is present), "cpu", "ref" (CPU reference) or "cuda"
  std::string dtype = "auto";   // GPU activations, frozen weights: "auto", "bf16", "fp16", "fp32"; CPU: fp32
  int num_labels = 0;           // classification head outputs (1 = regression); 0 = config.json's
  // The model's own dropout in training (never in eval or generation), in [0, 1). Default 0, not
  // config.json's hidden_dropout_prob / attention_probs_dropout_prob (resid_pdrop, attn_pdrop): runs stay
  // as before and as the paper's E2E code (no dropout in GPT-2 but LoRA's); transformers + PEFT in train
  // mode apply config.json's values (0.1 for RoBERTa and GPT-2), as the paper's GLUE runs do: set 0.1.
  double hidden_dropout = 0.0;     // after the embeddings, on the attention and MLP outputs before the residual add
  double attention_dropout = 0.0;  // on the attention probabilities
};

struct LoraSection {
  std::string mode = "lora";    // "lora": adapters on frozen weights; "full": every weight trains
  int r = 8;                    // rank of the update B A (A: (r, in), B: (out, r))
  double alpha = 16.0;          // the update is scaled by alpha / r (alpha / sqrt(r) with rslora)
  double dropout = 0.0;         // dropout on the adapter's input x during training (paper, E2E: 0.1)
  bool rslora = false;          // rank-stabilised scale alpha / sqrt(r) (Kalajdzievski 2023), not alpha / r
  std::vector<std::string> targets = {"q", "v"};  // adapted layers: roles (q k v o up down gate) or HF names
  std::vector<int> layers;      // 0-based transformer blocks that get adapters; empty = every block
  int init_seed = 0;            // seed of A's Kaiming-uniform initialisation; 0 = use train.seed
  std::string init_from;        // start A, B (and a head of the same shape) from a trained adapter: a finished
                                //   run's output.dir or a PEFT adapter directory, as the paper starts MRPC, RTE
                                //   and STS-B from MNLI; r, targets, layers, alpha and shapes must match the
                                //   recipe (core/model/adapter.h); not read by --resume; "" = fresh init
};

struct DataSection {
  std::string train;            // training examples; required to train
  std::string eval;             // evaluation examples; empty = no evaluation
  std::string format = "auto";  // "e2e" (MR||text lines), "jsonl", "glue" (classification: JSONL or TSV);
                                //   "auto": .txt -> e2e, .tsv -> glue, .jsonl -> jsonl or glue by its fields
  std::vector<std::string> text_fields;  // glue: the one or two text fields; empty = GLUE's names, detected
  std::string label_field;      // glue: the label's field; empty = label, gold_label, is_duplicate, score, Quality
  std::vector<std::string> label_names;  // glue: string labels in id order; empty = numbers (or GLUE's NLI names)
  std::string tokenizer;        // tokenizer directory or file; empty = model.path
  int max_length = 512;         // tokens per example; longer ones lose their end (cut from the right)
  std::string cache_dir = ".lora-cache";  // where tokenized datasets (HDF5) are kept and reused
};

struct TrainSection {
  double lr = 2e-4;             // AdamW peak learning rate
  double beta1 = 0.9;           // AdamW first-moment decay
  double beta2 = 0.999;         // AdamW second-moment decay
  double eps = 1e-8;            // AdamW denominator epsilon
  double weight_decay = 0.01;   // AdamW decoupled weight decay (not applied to biases and norms)
  std::string schedule = "linear";  // decay after warm-up: "constant", "linear" (to 0), "cosine" (to 0)
  int warmup_steps = 0;         // linear warm-up from 0 to lr over this many optimizer steps
  double warmup_ratio = 0.0;    // warm-up as a fraction of all optimizer steps; used when warmup_steps is 0
  int batch_size = 8;           // examples per micro-batch
  int grad_accum = 1;           // micro-batches per optimizer step: batch_size x grad_accum examples a step
  int epochs = 1;               // passes over data.train
  int max_steps = 0;            // optimizer steps to run; 0 = epochs decide
  double clip_grad_norm = 1.0;  // clip the global gradient norm to this; 0 = no clipping
  std::string nonfinite = "abort";  // a step whose loss or gradients are not finite (fp32/bf16): "abort" the
                                    //   run naming the tensor, or "skip" the step (its batch is passed over)
  int nonfinite_skips = 3;      // with nonfinite: skip, the most consecutive steps skipped before the run stops
  double label_smoothing = 0.0; // cross-entropy label smoothing (paper, E2E: 0.1)
  int seed = 42;                // seed of data shuffling, dropout and (unless lora.init_seed) adapter init
  std::string precision = "auto";  // GPU compute: "auto", "bf16", "fp16" (with loss scaling), "fp32"
  bool recompute = false;       // recompute block activations in backward: less memory, more compute
  int eval_every = -1;          // evaluate every this many optimizer steps; 0 = only at the end (and before the
                                // first step); -1 = about ten points a run: max(1, total steps / 10)
  int eval_batches = 0;         // batches per evaluation; 0 = the whole eval set
};

struct EvalSection {
  int batch_size = 8;           // examples per evaluation or generation batch
  int max_new_tokens = 64;      // longest generated continuation
  int beam_size = 1;            // beam search width; 1 = greedy decoding (paper, E2E: 10)
  double length_penalty = 1.0;  // beam score = log-prob / length^length_penalty (paper scripts, E2E: 0.8)
  int no_repeat_ngram_size = 0; // forbid repeating an n-gram of this size; 0 = off (paper, E2E: 4)
  int num_samples = 3;          // eval examples decoded and printed at the end of training
  std::string glue_task = "auto";  // classification: the GLUE task whose metric is reported (cola: Matthews,
                                   //   mrpc/qqp: F1 and accuracy, stsb: Pearson and Spearman, others: accuracy)
  std::string meteor_jar;       // METEOR 1.5's jar (pycocoevalcap's meteor-1.5.jar; needs Java); "" = $LORA_METEOR_JAR
};

struct OutputSection {
  std::string dir = "runs/lora";  // run directory: adapter, checkpoints, the resolved recipe, logs
  int save_every = 0;           // resumable checkpoint every this many optimizer steps; 0 = only at the end
  int keep_last = 2;            // step checkpoints kept, oldest deleted first; 0 = keep all
  bool overwrite = false;       // allow a run directory that already holds a finished run
};

struct LogSection {
  int every = 10;               // print loss, lr and throughput every this many optimizer steps
  std::string progress = "auto";  // "bar", "plain" (a line per report), "none"; "auto": bar on a terminal
};

struct Recipe {
  ModelSection model;
  LoraSection lora;
  DataSection data;
  TrainSection train;
  EvalSection eval;
  OutputSection output;
  LogSection log;
  std::string source;                         // recipe file path ("" when built in code)
  std::map<std::string, std::string> origin;  // "section.key" -> where set ("r.yaml:12", "--set 'k=v'")
};

// Equality of the seven sections, field by field (recipe_differences is empty); `source` and `origin`
// are not compared.
bool operator==(const Recipe& a, const Recipe& b);
inline bool operator!=(const Recipe& a, const Recipe& b) { return !(a == b); }

// Reads and parses a recipe file, then applies `overrides` ("section.key=value", from --set).
// Missing or unreadable file, syntax, key and type errors: lora::Error (EXIT_CODE_USAGE).
Recipe recipe_load(const std::string& path, const std::vector<std::string>& overrides = {});

// Parses recipe text. `source_name` names the text in messages and its directory is the base of
// relative input paths. Overrides take a YAML scalar (train.lr=1e-4) or a list, with or without
// brackets (lora.targets=[q,v] or lora.targets=q,v); string values are taken verbatim unless quoted.
// Does not check values or required keys: that is recipe_validate's job, so that --print-config can
// show a partial recipe.
Recipe recipe_parse(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});
// As recipe_load and recipe_parse, but with key_problems the key and type problems they would throw are
// appended there (one lora::Error listing them) and the recipe holds every key that could be read, so
// that `lora validate` checks values and the other parts in the same run. A missing or unreadable file,
// an empty recipe and a YAML syntax error still throw.
Recipe recipe_load(const std::string& path, const std::vector<std::string>& overrides,
                   std::vector<Error>* key_problems);
Recipe recipe_parse(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides, std::vector<Error>* key_problems);

// Every value check (ranges, choices, lora.targets names, required model.path and data.train,
// data.format resolvable); all problems in one lora::Error (EXIT_CODE_USAGE).
void recipe_validate(const Recipe& recipe);

// The fully resolved recipe, every key, as YAML that recipe_parse reads back to an equal Recipe.
// `dest_path` is where the text will be written (e.g. "runs/lora/recipe.yaml"): relative input paths
// are written relative to its directory, so that recipe_load(dest_path) finds the same files, and output
// paths (output.dir, data.cache_dir) absolute, so that it resumes the same run from any directory. Empty =
// the text will be read as if from the current directory.
std::string recipe_to_yaml(const Recipe& recipe, const std::string& dest_path = "");

// "e2e", "jsonl", "glue" or "h5" for a data file, resolving format "auto" by extension (a .jsonl file
// says "jsonl": only its content tells generation from classification); "" when auto cannot tell.
std::string recipe_data_format(const std::string& format, const std::string& data_path);

// Names accepted in lora.targets: roles and HF module names.
const std::vector<std::string>& recipe_lora_target_names();

// The field table: every recipe key, bound to one Recipe. Parsing, printing, comparison and choice
// checks all walk this one list, so a new field needs a struct member and one line in recipe_fields.
enum class FieldKind {
  text,        // std::string
  path_in,     // std::string, an input path (relative to the recipe file)
  path_out,    // std::string, an output path (relative to the current directory)
  choice,      // std::string, one of `choices`
  integer,     // int
  number,      // double
  boolean,     // bool
  text_list,   // std::vector<std::string>
  int_list,    // std::vector<int>
};

struct RecipeField {
  const char* section;
  const char* key;
  FieldKind kind;
  void* value;                       // the member of the bound Recipe; its type follows `kind`
  std::vector<std::string> choices;  // valid values of a FieldKind::choice field
  std::string name() const { return std::string(section) + "." + key; }
  template <class T> T& as() const { return *static_cast<T*>(value); }
};

std::vector<RecipeField> recipe_fields(Recipe& recipe);

// One key whose value differs between two recipes, each value as one line of text (paths absolute and
// normalised, so two spellings of one path are not a difference; lists as "[a, b]").
struct RecipeDifference {
  std::string key;  // "section.key"
  FieldKind kind;
  std::string a, b;
};
// The keys whose values differ, in the field table's order.
std::vector<RecipeDifference> recipe_differences(const Recipe& a, const Recipe& b);
const std::vector<std::string>& recipe_section_names();  // model, lora, data, train, eval, output, log

// The candidate closest to `word` (edit distance with transpositions, or a prefix), "" when none is
// close enough: the "did you mean" of recipe messages.
std::string recipe_closest_name(const std::string& word, const std::vector<std::string>& candidates);
// The recipe key ("section.key") that `word` names outside a recipe, e.g. as a mistaken command-line
// option: a full name ("train.lr"), a key of one section ("lr"; train's before eval's when both have it),
// or another tool's name for it ("learning_rate"); '-' counts as '_'. With closest, else the nearest
// name by recipe_closest_name ("lerning_rate"). "" when none.
std::string recipe_key_for(const std::string& word, bool closest = false);
// The shortest text that reads back as the same double, with a '.' or exponent: "0.0002", "1e-08", "16.0".
std::string recipe_format_number(double value);

}  // namespace lora
