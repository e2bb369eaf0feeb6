// Datasets: a text source (E2E lines or JSONL) is tokenized once into an HDF5 file, which the trainer
// opens, validates and streams shuffled, length-bucketed, dynamically padded batches from. The file's
// tables and attributes are listed below.
//
// Sources and the tokenization template (fixed; recorded as the `template` attribute of the file):
//   e2e    one example a line, `meaning representation||reference text`; the line is trimmed, split at
//          the one "||", both sides trimmed. Following the reference scripts (microsoft/LoRA
//          examples/NLG, gpt2_encode.py with --add_bos --add_eos, where bos == eos == <|endoftext|>):
//            prompt     = encode(mr) + [eos]             (no loss; eos separates it from the text)
//            completion = encode(" " + text) + [eos]     (loss, eos learned)
//   jsonl  one JSON object a line: {"prompt": str, "completion": str} gives
//            prompt = encode(prompt) (no loss), completion = encode(completion) + [eos]
//          (no separator is added: put any space or separator in the strings themselves), or
//          {"text": str}: every token carries loss, tokens = encode(text) + [eos].
//          An optional numeric "label" is stored in `labels`; other keys are ignored.
//   glue   sentence classification and regression (core/data/dataset_glue.cpp): JSONL objects or a TSV
//          file with a header row (GLUE's own files), one or two text fields and a label, tokenized as
//          RoBERTa's tokenizer lays them out: <s> A </s> or <s> A </s></s> B </s> (every token carries
//          no LM loss: prompt length 0; the label is the target). Fields (DatasetOptions) default to
//          the GLUE tasks' names found in the first record; string labels map through label_names.
//          Pairs longer than max_length lose tokens from the longer text first (HF's longest_first).
//   [bos]  e2e and jsonl examples begin with the tokenizer's BOS where HF's tokenizer(text) puts one
//          (Tokenizer::bos_id: LLaMA 3's <|begin_of_text|>), counted in the prompt (no loss), so that
//          the prompt's ids are tokenizer(prompt)'s; GPT-2, Qwen2 and SentencePiece models have none.
// Blank lines are skipped. A malformed line (no "||", bad JSON, missing or non-string field, empty
// completion) is an error naming the file and the 1-based line. Examples longer than max_length are
// cut to their first max_length tokens (the prompt is kept whole, the completion loses its tail, EOS
// included); an example whose prompt alone has max_length tokens or more is dropped. Both are counted.
//
// The HDF5 file (format_version 1, magic "lora-dataset"):
//   tokens (int32, N_tokens, chunked + deflate), offsets (int64, n+1), prompt_lengths (int32, n),
//   labels (float32, n, NaN for generation), source_lines (int64, n, 1-based),
//   prompt_text_bytes / prompt_text_offsets and completion_text_bytes / completion_text_offsets
//   (uint8 blob + int64 n+1 offsets: for E2E the meaning representation and the reference, which
//   evaluation groups by meaning representation);
//   attributes magic, format_version, format, template, source_path, source_hash ("fnv1a64:<hex>"),
//   tokenizer_fingerprint, vocab_size, eos_id, max_length, n_truncated, n_dropped, n_examples, n_tokens.
// Files are written to "<path>.tmp.<pid>", fsynced, then renamed, so a crash never leaves a half file.
//
// The labels table already existed in format_version 1 (NaN for generation data), so classification
// data did not change the layout.
//
// Batches: targets[b,t] = tokens[b,t+1] when position t+1 is a completion token, else -100
// (DATASET_IGNORE_INDEX); padding is EOS, to the batch's longest example only.
#pragma once
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "core/base/tensor.h"
#include "core/text/tokenizer.h"

namespace lora {

constexpr int DATASET_FORMAT_VERSION = 1;
constexpr const char* DATASET_MAGIC = "lora-dataset";
constexpr int32_t DATASET_IGNORE_INDEX = -100;

// How classification records are read (format glue; the recipe's data.text_fields, data.label_field,
// data.label_names). Empty = detected from the first record's field names (GLUE's column names).
struct DatasetOptions {
  std::vector<std::string> text_fields;  // one or two fields; in a TSV without a header, column numbers
  std::string label_field;               // the label's field or column
  std::vector<std::string> label_names;  // string labels -> their index; empty: numbers, or GLUE's NLI names
};

// The attributes of a tokenized dataset file.
struct DatasetInfo {
  std::string path;                   // the HDF5 file (empty before it is written)
  std::string format;                 // "e2e" or "jsonl"
  std::string template_name;          // the tokenization template, e.g. "e2e-v1"
  std::string source_path;            // the text source as given to dataset_prepare
  std::string source_hash;            // "fnv1a64:<16 hex digits>" of the source's bytes
  std::string tokenizer_fingerprint;  // Tokenizer::fingerprint() of the tokenizer used
  int64_t vocab_size = 0;             // the tokenizer's vocabulary size
  int64_t eos_id = 0;                 // appended to every completion, used for padding
  int64_t max_length = 0;             // examples were cut to at most this many tokens
  int64_t n_truncated = 0;            // examples cut to max_length
  int64_t n_dropped = 0;              // examples dropped: their prompt alone filled max_length
  int64_t n_examples = 0;             // examples in the file
  int64_t n_tokens = 0;               // ids in the file, all examples together
};

// Everything a tokenized dataset holds, in memory. n = prompt_lengths.size().
struct DatasetTables {
  std::vector<int32_t> tokens;                // (N_tokens) every example's ids, concatenated
  std::vector<int64_t> offsets;               // (n+1) example i is tokens[offsets[i], offsets[i+1])
  std::vector<int32_t> prompt_lengths;        // (n) leading tokens that carry no loss
  std::vector<float> labels;                  // (n) NaN where the example has no label
  std::vector<int64_t> source_lines;          // (n) 1-based line of the example in the source
  std::vector<std::string> prompt_texts;      // (n) E2E: meaning representation; JSONL: prompt
  std::vector<std::string> completion_texts;  // (n) E2E: reference text; JSONL: completion or text
};

// FNV-1a 64-bit hash of bytes, as 16 lowercase hex digits.
std::string hash_fnv1a64_hex(const std::string& bytes);

// "e2e", "jsonl" or "glue" for format "auto" (by extension: .txt -> e2e, .tsv -> glue, .jsonl/.json ->
// jsonl unless its first record has none of prompt/completion/text but a label or GLUE's text fields,
// then glue; otherwise by the first non-blank line), or the format itself if it is one of those three.
std::string dataset_format_resolve(const std::string& source_path, const std::string& format);

// The tokenization template of a resolved format, as stored in the file (for glue it names the fields,
// so that a cached file made with other fields is rebuilt).
std::string dataset_template_name(const std::string& format, const DatasetOptions& options = {});
// "fnv1a64:<hex>" of the source file's bytes; errors if it cannot be read.
std::string dataset_source_hash(const std::string& source_path);

// The ids an example's prompt has in a dataset of `format` ("e2e" or "jsonl"): the tokenizer's BOS if it
// has one, the prompt, and for e2e the EOS that ends a meaning representation. A model trained on such data
// continues from exactly these ids (`lora eval`'s and `lora generate`'s prompts).
std::vector<int32_t> dataset_prompt_ids(const std::string& format, const std::string& prompt, const Tokenizer& tok);

// Parses and tokenizes a source into tables (no file written). info gets everything but path.
DatasetTables dataset_tokenize(const std::string& source_path, const std::string& format,
                               const Tokenizer& tok, int max_length, DatasetInfo* info,
                               const DatasetOptions& options = {});
// The glue format's parsing and tokenization (core/data/dataset_glue.cpp), called by dataset_tokenize.
DatasetTables dataset_tokenize_glue(const std::string& source_path, const std::string& bytes, const Tokenizer& tok,
                                    int max_length, const DatasetOptions& options, int64_t* n_truncated);

// Writes tables + info to path crash-safely (path.tmp.<pid>, fsync, rename). info.path is ignored.
void dataset_h5_write(const std::string& path, const DatasetTables& tables, const DatasetInfo& info);
// Reads only the attributes of a dataset file; validates magic and format_version.
DatasetInfo dataset_h5_read_info(const std::string& path);

struct DatasetPrepareResult {
  std::string path;          // the HDF5 file to open
  bool reused = false;       // true: an existing cache file matched and nothing was tokenized
  std::string stale_reason;  // non-empty when a file at path existed but was rebuilt, and why
  DatasetInfo info;          // counts included (truncated, dropped, examples, tokens)
};

// Tokenizes source_path into cache_dir (created if missing; empty = the source's directory) unless a
// file for the same source bytes, format, tokenizer fingerprint and max_length is already there. The
// file name is "<source stem>.<format>.<source hash>.<fingerprint hash>.L<max_length>.h5". Prints
// nothing; the caller logs "reusing tokenized cache ..." from the result. A source that is itself a
// dataset file (HDF5) is returned as is, reused, after checking its tokenizer fingerprint.
DatasetPrepareResult dataset_prepare(const std::string& source_path, const std::string& format,
                                     const Tokenizer& tok, int max_length, const std::string& cache_dir,
                                     const DatasetOptions& options = {});

// A read-only view of one example's token ids.
struct TokenSpan {
  const int32_t* data = nullptr;
  int64_t size = 0;
  const int32_t* begin() const { return data; }
  const int32_t* end() const { return data + size; }
  int32_t operator[](int64_t i) const { return data[i]; }
};

// A tokenized dataset, fully loaded and validated. Read-only after open; safe to share across threads.
class Dataset {
 public:
  // Opens an HDF5 dataset file and checks magic, version, table shapes, offsets (start at 0, never
  // decrease, end at the token count), prompt lengths, and that every id lies in [0, vocab_size).
  static Dataset open(const std::string& h5_path, int vocab_size);
  // Wraps tables built in memory (tests, tools); same validation as open.
  static Dataset from_tables(DatasetTables tables, DatasetInfo info, int vocab_size);

  size_t size() const { return tables_.prompt_lengths.size(); }
  int64_t n_tokens() const { return int64_t(tables_.tokens.size()); }
  TokenSpan tokens(size_t i) const;
  int64_t length(size_t i) const { return tables_.offsets.at(i + 1) - tables_.offsets.at(i); }
  int32_t prompt_length(size_t i) const { return tables_.prompt_lengths.at(i); }
  float label(size_t i) const { return tables_.labels.at(i); }
  int64_t source_line(size_t i) const { return tables_.source_lines.at(i); }
  const std::string& prompt_text(size_t i) const { return tables_.prompt_texts.at(i); }
  const std::string& completion_text(size_t i) const { return tables_.completion_texts.at(i); }
  int32_t eos_id() const { return int32_t(info_.eos_id); }
  const DatasetInfo& info() const { return info_; }
  const DatasetTables& tables() const { return tables_; }

 private:
  DatasetTables tables_;
  DatasetInfo info_;
};

// Where a stream stands: batch `cursor` (0-based) of epoch `epoch` (0-based) is the next one.
struct StreamPosition {
  int64_t epoch = 0;
  int64_t cursor = 0;
  bool operator==(const StreamPosition& o) const { return epoch == o.epoch && cursor == o.cursor; }
};

struct Batch {
  int B = 0, T = 0;
  Tensor tokens;   // host i32 (B,T), padded with eos
  Tensor targets;  // host i32 (B,T), next token where it is a completion token, else -100
  Tensor lengths;  // host i32 (B), unpadded lengths
  Tensor labels;   // host f32 (B), the examples' labels (NaN for generation data)
  int64_t n_loss_tokens = 0;          // targets that are not -100
  std::vector<int64_t> example_ids;   // (B) indices into the Dataset
  StreamPosition position;            // where this batch stood in the stream
};

// Builds one batch from the given examples: T = the longest of them.
Batch batch_build(const Dataset& data, const std::vector<int64_t>& example_ids);

// The batches of one epoch, as example ids. shuffle: the examples are permuted by an mt19937_64
// seeded with mix(seed, epoch) (a Fisher-Yates shuffle with a rejection-sampled index, so the order is
// the same on every platform), cut into windows of bucket_batches * batch_size examples, each window
// stably sorted by length and cut into batches, and the batch order permuted by the same generator.
// Only the last window can leave a partial batch, so every epoch has ceil(n / batch_size) batches.
// Without shuffle: consecutive examples in file order.
std::vector<std::vector<int64_t>> dataset_epoch_plan(const Dataset& data, int batch_size, uint64_t seed,
                                                     int64_t epoch, bool shuffle, int bucket_batches = 64);

struct BatchStreamOptions {
  int batch_size = 8;          // examples a batch (the last batch of an epoch may have fewer)
  uint64_t seed = 0;           // shuffle seed
  StreamPosition start;        // resume here (position() of a previous stream)
  bool shuffle = true;         // false: file order, one pass, next() returns false at the end
  int bucket_batches = 64;     // length-bucketing window, in batches
  int prefetch = 3;            // batches prepared ahead by the prefetch thread
};

// Streams batches from a prefetch thread. With shuffle, next() always returns a batch and moves to
// the next epoch by itself; the batches depend only on the dataset, the options and the position,
// never on thread timing. An exception in the thread is rethrown by next().
class BatchStream {
 public:
  BatchStream(std::shared_ptr<const Dataset> data, const BatchStreamOptions& options);
  ~BatchStream();
  BatchStream(const BatchStream&) = delete;
  BatchStream& operator=(const BatchStream&) = delete;

  bool next(Batch& out);
  StreamPosition position() const { return position_; }  // of the batch next() returns next
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

 private:
  struct State;
  void produce(StreamPosition start);

  std::shared_ptr<const Dataset> data_;
  BatchStreamOptions options_;
  int64_t batches_per_epoch_ = 0;
  StreamPosition position_;
  std::unique_ptr<State> state_;
};

}  // namespace lora
