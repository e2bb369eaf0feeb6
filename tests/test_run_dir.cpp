// The pieces of the run directory's bookkeeping that need no training: SHA-256 against the standard's
// test vectors, the lock, cutting metrics.jsonl back for a resume, a failed metrics write, and JSON
// numbers beyond a double (issue 12, defect 13).
#include <doctest/doctest.h>

#include "core/base/sha256.h"
#include "core/train/run_dir.h"
#include "core/train/train_log.h"
#include "tests/test_util.h"

namespace {
namespace fs = std::filesystem;

std::string sha(const std::string& s) {
  lora::Sha256 h;
  h.update(s.data(), s.size());
  return h.hex();
}
}  // namespace

TEST_CASE("SHA-256 gives the FIPS 180-4 test vectors, in one piece or many") {
  CHECK(sha("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(sha(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  lora::Sha256 pieces;  // uneven pieces across block boundaries
  for (size_t at = 0, k = 1; at < million.size(); at += k, k = k * 7 % 131 + 1)
    pieces.update(million.data() + at, std::min(k, million.size() - at));
  CHECK(pieces.hex() == sha(million));
  const auto d = scratch_dir("sha");
  write_text(d / "f", "abc");
  CHECK(lora::sha256_file((d / "f").string()) == sha("abc"));
  fs::remove_all(d);
}

TEST_CASE("a second lock on a run directory is refused with the holder's pid and host") {
  const auto d = scratch_dir("lock");
  {
    lora::RunLock held(d.string());
    const std::string who = lora::file_read((d / ".lock").string());
    CHECK(contains(who, "pid " + std::to_string(::getpid()) + " on host "));
    lora::Error e = error_of([&] { lora::RunLock again(d.string()); });
    CHECK(contains(e.what(), "is in use by another lora process (pid " + std::to_string(::getpid())));
  }
  lora::RunLock after(d.string());  // released with its holder
  fs::remove_all(d);
}

TEST_CASE("metrics.jsonl is cut back to a resumed step: later records and a torn last line dropped") {
  const auto d = scratch_dir("metrics");
  const std::string p = (d / "metrics.jsonl").string();
  const std::string head = "{\"step\":0,\"eval_loss\":3}\n{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1.5}\n";
  write_text(p, head + "{\"step\":3,\"loss\":1.2}\n{\"peak_memory_mib\":5}\n{\"step\":4,\"lo");
  CHECK(lora::metrics_truncate(p, 2) == 3);
  CHECK(lora::file_read(p) == head);
  CHECK(lora::metrics_truncate(p, 2) == 0);  // nothing more to drop
  CHECK(lora::file_read(p) == head);
  write_text(p, head + "not json\n{\"step\":2,\"loss\":9}\n");
  CHECK(lora::metrics_truncate(p, 5) == 2);
  CHECK(lora::file_read(p) == head);
  CHECK(lora::metrics_truncate((d / "absent.jsonl").string(), 1) == 0);
  fs::remove_all(d);
}

TEST_CASE("a failed write to metrics.jsonl stops the run with the file named") {
  lora::TrainLog log("none", "/dev/full", 10, false);
  lora::Error e = error_of([&] { log.step(1, 1.0, 1e-3, 1.0, 100.0, false); });
  CHECK(contains(e.what(), "writing '/dev/full' failed: No space left on device"));
  CHECK(contains(e.hint(), "--resume"));
}

TEST_CASE("a JSON number beyond a double's range is an error naming the file, not an internal error") {
  const auto d = scratch_dir("json-range");
  write_text(d / "config.json", "{\"n_layer\": 1e999}");
  lora::Error e = error_of([&] { lora::json_read_file((d / "config.json").string()); });
  CHECK(contains(e.what(), (d / "config.json").string() + "' cannot be read as JSON: number overflow parsing '1e999'"));
  CHECK(contains(e.hint(), "1e999"));
  e = error_of([&] { lora::json_parse_strict("{\"a\": -1e999}", "model.safetensors header"); });
  CHECK(contains(e.what(), "model.safetensors header: cannot be read as JSON: number overflow"));
  fs::remove_all(d);
}
