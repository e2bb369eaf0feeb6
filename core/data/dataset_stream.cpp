// Batches from a Dataset: the per-epoch plan (seeded shuffle, length bucketing, shuffled batch order),
// batch assembly with dynamic padding and shifted targets, and BatchStream, which builds batches on a
// prefetch thread into a bounded queue. The plan is a pure function of (dataset, batch size, seed,
// epoch), so the batches never depend on thread timing and a stream resumes exactly from a position.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "core/base/error.h"
#include "core/base/splitmix.h"
#include "core/data/dataset.h"

namespace lora {

namespace {

// The generator of one epoch: mt19937_64 seeded with SplitMix64(SplitMix64(seed) ^ epoch) (rng_mix).
std::mt19937_64 epoch_rng(uint64_t seed, int64_t epoch) {
  return std::mt19937_64(rng_mix(rng_mix(seed) ^ uint64_t(epoch)));
}

// Uniform in [0, n), n > 0, without modulo bias: draws below 2^64 mod n are rejected. Written out
// because std::uniform_int_distribution differs between standard libraries.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  uint64_t threshold = (0 - n) % n;
  for (;;) {
    uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

template <typename T>
void shuffle_seeded(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(uniform_below(rng, i))]);
}

StreamPosition position_after(const StreamPosition& p, int64_t batches_per_epoch, bool wrap) {
  if (wrap && p.cursor + 1 >= batches_per_epoch) return {p.epoch + 1, 0};
  return {p.epoch, p.cursor + 1};
}

}  // namespace

std::vector<std::vector<int64_t>> dataset_epoch_plan(const Dataset& data, int batch_size, uint64_t seed,
                                                     int64_t epoch, bool shuffle, int bucket_batches) {
  if (batch_size < 1) fail_usage("batch size must be at least 1, found " + std::to_string(batch_size));
  if (bucket_batches < 1) fail_usage("bucket_batches must be at least 1, found " + std::to_string(bucket_batches));
  const int64_t n = int64_t(data.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  std::vector<std::vector<int64_t>> batches;
  auto cut = [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; b += batch_size)
      batches.emplace_back(order.begin() + b, order.begin() + std::min<int64_t>(b + batch_size, end));
  };
  if (!shuffle) {
    cut(0, n);
    return batches;
  }
  std::mt19937_64 rng = epoch_rng(seed, epoch);
  shuffle_seeded(order, rng);
  const int64_t window = int64_t(bucket_batches) * batch_size;
  for (int64_t w = 0; w < n; w += window) {
    int64_t end = std::min(w + window, n);
    std::stable_sort(order.begin() + w, order.begin() + end,
                     [&](int64_t a, int64_t b) { return data.length(size_t(a)) < data.length(size_t(b)); });
    cut(w, end);
  }
  shuffle_seeded(batches, rng);
  return batches;
}

Batch batch_build(const Dataset& data, const std::vector<int64_t>& example_ids) {
  Batch out;
  out.B = int(example_ids.size());
  for (int64_t id : example_ids) out.T = std::max<int>(out.T, int(data.length(size_t(id))));
  out.tokens = tensor_host({out.B, out.T}, DType::i32);
  out.targets = tensor_host({out.B, out.T}, DType::i32);
  out.lengths = tensor_host({out.B}, DType::i32);
  out.labels = tensor_host({out.B}, DType::f32);
  out.example_ids = example_ids;
  int32_t* tokens = out.tokens.i32();    // (B,T)
  int32_t* targets = out.targets.i32();  // (B,T)
  std::fill(tokens, tokens + out.tokens.numel(), data.eos_id());
  std::fill(targets, targets + out.targets.numel(), DATASET_IGNORE_INDEX);
  for (int b = 0; b < out.B; ++b) {
    TokenSpan ids = data.tokens(size_t(example_ids[size_t(b)]));
    int64_t prompt = data.prompt_length(size_t(example_ids[size_t(b)]));
    int32_t* row = tokens + int64_t(b) * out.T;
    int32_t* target_row = targets + int64_t(b) * out.T;
    std::copy(ids.begin(), ids.end(), row);
    out.lengths.i32()[b] = int32_t(ids.size);
    out.labels.f32()[b] = data.label(size_t(example_ids[size_t(b)]));
    // Position t predicts token t+1; only completion tokens (index >= prompt length) are learned.
    for (int64_t t = std::max<int64_t>(prompt - 1, 0); t + 1 < ids.size; ++t) {
      target_row[t] = ids[t + 1];
      ++out.n_loss_tokens;
    }
  }
  return out;
}

struct BatchStream::State {
  std::mutex mutex;
  std::condition_variable ready;  // a batch, the end, or an error is there for the consumer
  std::condition_variable space;  // the queue has room, or the stream is stopping
  std::deque<Batch> queue;
  bool stop = false;
  bool done = false;
  std::exception_ptr error;
  std::thread worker;
};

BatchStream::BatchStream(std::shared_ptr<const Dataset> data, const BatchStreamOptions& options)
    : data_(std::move(data)), options_(options), state_(std::make_unique<State>()) {
  if (!data_) throw std::logic_error("BatchStream needs a dataset");
  if (options_.batch_size < 1)
    fail_usage("train.batch_size must be at least 1, found " + std::to_string(options_.batch_size));
  if (options_.bucket_batches < 1 || options_.prefetch < 1)
    fail_usage("bucket_batches and prefetch must be at least 1");
  const int64_t n = int64_t(data_->size());
  batches_per_epoch_ = (n + options_.batch_size - 1) / options_.batch_size;
  const StreamPosition& s = options_.start;
  if (s.epoch < 0 || s.cursor < 0 || s.cursor > batches_per_epoch_)
    fail_usage("cannot resume the data stream at epoch " + std::to_string(s.epoch) + ", batch " +
                   std::to_string(s.cursor) + ": an epoch of '" + data_->info().path + "' has " +
                   std::to_string(batches_per_epoch_) + " batches of " + std::to_string(options_.batch_size),
               "resume with the same dataset and train.batch_size as the checkpoint was made with");
  position_ = s;
  if (options_.shuffle && position_.cursor == batches_per_epoch_) position_ = {position_.epoch + 1, 0};
  state_->worker = std::thread([this, start = position_] { produce(start); });
}

BatchStream::~BatchStream() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
  }
  state_->space.notify_all();
  if (state_->worker.joinable()) state_->worker.join();
}

void BatchStream::produce(StreamPosition start) {
  State& st = *state_;
  try {
    StreamPosition pos = start;
    std::vector<std::vector<int64_t>> plan = dataset_epoch_plan(*data_, options_.batch_size, options_.seed,
                                                                pos.epoch, options_.shuffle, options_.bucket_batches);
    for (;;) {
      if (pos.cursor >= batches_per_epoch_) {
        if (!options_.shuffle) break;
        pos = {pos.epoch + 1, 0};
        plan = dataset_epoch_plan(*data_, options_.batch_size, options_.seed, pos.epoch, true,
                                  options_.bucket_batches);
      }
      Batch batch = batch_build(*data_, plan[size_t(pos.cursor)]);
      batch.position = pos;
      {
        std::unique_lock<std::mutex> lock(st.mutex);
        st.space.wait(lock, [&] { return st.stop || int(st.queue.size()) < options_.prefetch; });
        if (st.stop) return;
        st.queue.push_back(std::move(batch));
      }
      st.ready.notify_one();
      ++pos.cursor;
    }
    std::lock_guard<std::mutex> lock(st.mutex);
    st.done = true;
  } catch (...) {
    std::lock_guard<std::mutex> lock(st.mutex);
    st.error = std::current_exception();
  }
  st.ready.notify_one();
}

bool BatchStream::next(Batch& out) {
  State& st = *state_;
  std::unique_lock<std::mutex> lock(st.mutex);
  st.ready.wait(lock, [&] { return !st.queue.empty() || st.error || st.done; });
  if (st.queue.empty()) {
    if (st.error) std::rethrow_exception(st.error);
    return false;
  }
  out = std::move(st.queue.front());
  st.queue.pop_front();
  position_ = position_after(out.position, batches_per_epoch_, options_.shuffle);
  lock.unlock();
  st.space.notify_one();
  return true;
}

}  // namespace lora
