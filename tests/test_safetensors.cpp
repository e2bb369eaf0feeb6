// safetensors reader/writer and the half-precision conversions. Rounding cases are derived from the
// IEEE 754 / bfloat16 definitions (ties to even), not from our own output; bad files are built byte by
// byte and each must be rejected with a message that names the file (and the tensor where one is at fault).
#include <doctest/doctest.h>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/test_util.h"

// Everything below is private to this suite: the suites share one executable.
namespace {

using namespace lora;

namespace {

void bytes_write(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(uint8_t(n >> (8 * i)));
  return s;
}

// A file from a header text and a zero buffer of buffer_bytes.
std::string raw_file(const std::string& dir, const std::string& name, const std::string& header, size_t buffer_bytes) {
  std::string path = dir + "/" + name;
  bytes_write(path, le64(header.size()) + header + std::string(buffer_bytes, '\0'));
  return path;
}

// The message of the lora::Error that opening path throws ("" when it opens).
std::string open_error(const std::string& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}


float pow2(int e) { return std::ldexp(1.0f, e); }

}  // namespace

TEST_CASE("bf16 conversion rounds to nearest even") {
  CHECK(f32_to_bf16(1.0f) == 0x3F80);
  CHECK(f32_to_bf16(-2.0f) == 0xC000);
  CHECK(f32_to_bf16(1.0f + pow2(-7)) == 0x3F81);      // exactly representable
  CHECK(f32_to_bf16(1.0f + pow2(-8)) == 0x3F80);      // tie between 0x3F80 and 0x3F81: even wins
  CHECK(f32_to_bf16(1.0f + 3 * pow2(-8)) == 0x3F82);  // tie between 0x3F81 and 0x3F82: even wins
  CHECK(f32_to_bf16(1.0f + pow2(-8) + pow2(-20)) == 0x3F81);  // just above the tie
  CHECK(f32_to_bf16(0.1f) == 0x3DCD);                 // 0x3DCCCCCD: the low half 0xCCCD rounds up
  CHECK(f32_to_bf16(INFINITY) == 0x7F80);
  CHECK(f32_to_bf16(3.4028235e38f) == 0x7F80);        // FLT_MAX is past bf16's max + half an ulp
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  CHECK(bf16_to_f32(0x3F80) == 1.0f);
  CHECK(bf16_to_f32(0xC040) == -3.0f);
  int mismatches = 0;
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every non-NaN bf16 survives f32 and back
    float f = bf16_to_f32(uint16_t(h));
    if (!std::isnan(f) && f32_to_bf16(f) != h) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("f16 conversion follows IEEE binary16 with ties to even") {
  CHECK(f32_to_f16(1.0f) == 0x3C00);
  CHECK(f32_to_f16(-2.0f) == 0xC000);
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f32_to_f16(1.0f + pow2(-11)) == 0x3C00);      // tie: even (0x3C00) wins
  CHECK(f32_to_f16(1.0f + 3 * pow2(-11)) == 0x3C02);  // tie: even (0x3C02) wins
  CHECK(f32_to_f16(0.1f) == 0x2E66);
  CHECK(f32_to_f16(65504.0f) == 0x7BFF);              // largest finite
  CHECK(f32_to_f16(65519.0f) == 0x7BFF);              // below the midpoint to 65536
  CHECK(f32_to_f16(65520.0f) == 0x7C00);              // the midpoint rounds to even: infinity
  CHECK(f32_to_f16(1e10f) == 0x7C00);
  CHECK(f32_to_f16(pow2(-14)) == 0x0400);             // smallest normal
  CHECK(f32_to_f16(pow2(-24)) == 0x0001);             // smallest subnormal
  CHECK(f32_to_f16(pow2(-25)) == 0x0000);             // tie between 0 and 2^-24: zero is even
  CHECK(f32_to_f16(1.5f * pow2(-25)) == 0x0001);
  CHECK(f32_to_f16(3 * pow2(-25)) == 0x0002);         // tie between 1 and 2 units: 2 is even
  CHECK(f32_to_f16(pow2(-14) - pow2(-25)) == 0x0400); // rounds up into the smallest normal
  CHECK(f32_to_f16(1e-10f) == 0x0000);
  CHECK(f16_to_f32(0x3555) == doctest::Approx(0.333251953125).epsilon(1e-9));
  CHECK(f16_to_f32(0x0001) == pow2(-24));
  CHECK(std::isinf(f16_to_f32(0x7C00)));
  CHECK(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  int mismatches = 0;
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every non-NaN f16 survives f32 and back
    float f = f16_to_f32(uint16_t(h));
    if (!std::isnan(f) && f32_to_f16(f) != h) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("safetensors round trip: f32, bf16, f16, i32 and metadata") {
  std::string dir = temp_dir();
  Tensor a = tensor_host({2, 3});
  const float values[6] = {1.5f, -2.25f, 0.0078125f, 1.0f + pow2(-8), 3.0f, -0.0f};
  for (int i = 0; i < 6; ++i) a.f32()[i] = values[i];
  Tensor ids = tensor_host({4}, DType::i32);
  for (int i = 0; i < 4; ++i) ids.i32()[i] = -7 + 1000000 * i;
  Tensor scalar = tensor_host({});
  scalar.f32()[0] = 42.0f;
  Tensor empty = tensor_host({0, 5});
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "héllo"}};
  std::vector<std::pair<std::string, Tensor>> tensors = {{"w.a", a}, {"ids", ids}, {"s", scalar}, {"e", empty}};

  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    CAPTURE(dtype_name(dt));
    std::string path = dir + "/t_" + dtype_name(dt) + ".safetensors";
    safetensors_write(path, tensors, meta, dt);
    CHECK(access((path + ".tmp").c_str(), F_OK) != 0);  // the temporary file was renamed away

    SafetensorsFile f = SafetensorsFile::open(path);
    CHECK(f.metadata() == meta);
    REQUIRE(f.entries().size() == 4);
    const SafetensorsEntry* ea = f.find("w.a");
    REQUIRE(ea != nullptr);
    CHECK(ea->shape == std::vector<int64_t>{2, 3});
    CHECK(std::string(st_dtype_name(ea->dtype)) == (dt == DType::f32 ? "F32" : dt == DType::bf16 ? "BF16" : "F16"));
    Tensor back = f.to_f32(*ea);
    CHECK(back.shape == a.shape);
    for (int i = 0; i < 5; ++i) {
      // 1 + 2^-8 is exact in f32 and f16 but a tie in bf16, which rounds to even: 1.0.
      float expect = (i == 3 && dt == DType::bf16) ? 1.0f : values[i];
      CHECK(back.f32()[i] == expect);
    }
    CHECK(std::signbit(back.f32()[5]));
    const SafetensorsEntry* ei = f.find("ids");
    REQUIRE(ei != nullptr);
    CHECK(ei->dtype == StDType::I32);  // integers are never converted to the float dtype
    Tensor ib = f.to_i32(*ei);
    for (int i = 0; i < 4; ++i) CHECK(ib.i32()[i] == ids.i32()[i]);
    const SafetensorsEntry* es = f.find("s");
    REQUIRE(es != nullptr);
    CHECK(es->shape.empty());
    CHECK(f.to_f32(*es).f32()[0] == 42.0f);
    const SafetensorsEntry* ee = f.find("e");
    REQUIRE(ee != nullptr);
    CHECK(ee->numel() == 0);
    CHECK(f.find("missing") == nullptr);

    // The buffer starts 8-byte aligned, as the reference writer pads it.
    std::ifstream in(path, std::ios::binary);
    uint8_t len[8];
    in.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    CHECK((8 + n) % 8 == 0);
  }
}

TEST_CASE("safetensors writer rejects duplicate and reserved names, overwrites atomically") {
  std::string dir = temp_dir();
  std::string path = dir + "/d.safetensors";
  Tensor t = tensor_host({2});
  CHECK_THROWS_WITH_AS(safetensors_write(path, {{"x", t}, {"x", t}}, {}),
                       doctest::Contains("'x'"), Error);
  CHECK_THROWS_AS(safetensors_write(path, {{"__metadata__", t}}, {}), Error);
  CHECK(access(path.c_str(), F_OK) != 0);
  CHECK(access((path + ".tmp").c_str(), F_OK) != 0);  // an aborted write leaves nothing behind
  safetensors_write(path, {{"x", t}}, {});
  t.f32()[0] = 5.0f;
  safetensors_write(path, {{"y", t}}, {});
  SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.find("x") == nullptr);
  REQUIRE(f.find("y") != nullptr);
  CHECK(f.to_f32(*f.find("y")).f32()[0] == 5.0f);
}

TEST_CASE("safetensors reader rejects malformed files, naming the file") {
  std::string dir = temp_dir();
  auto expect_error = [&](const std::string& path, const std::string& part) {
    std::string msg = open_error(path);
    CAPTURE(msg);
    CHECK(contains(msg, path));
    CHECK(contains(msg, part));
  };
  const std::string w8 = R"("dtype":"F32","shape":[2],"data_offsets")";  // 8 bytes of F32

  SUBCASE("missing file") { expect_error(dir + "/nope.safetensors", "cannot open"); }
  SUBCASE("shorter than the length field") {
    bytes_write(dir + "/short.safetensors", "abcde");
    expect_error(dir + "/short.safetensors", "shorter than the 8-byte header length");
  }
  SUBCASE("header length larger than the file") {
    bytes_write(dir + "/big.safetensors", le64(1000) + "{}");
    expect_error(dir + "/big.safetensors", "header length 1000");
  }
  SUBCASE("header length overflow") {
    bytes_write(dir + "/ovf.safetensors", le64(0xFFFFFFFFFFFFFFFFull) + "{}");
    expect_error(dir + "/ovf.safetensors", "exceeds the limit");
  }
  SUBCASE("truncated data") {
    std::string path = dir + "/trunc.safetensors";
    Tensor t = tensor_host({16});
    safetensors_write(path, {{"w", t}}, {});
    struct stat st{};
    REQUIRE(stat(path.c_str(), &st) == 0);
    REQUIRE(truncate(path.c_str(), st.st_size - 4) == 0);
    expect_error(path, "tensor 'w'");
    expect_error(path, "past the end");
  }
  SUBCASE("overlapping offsets") {
    expect_error(raw_file(dir, "overlap.safetensors", "{\"a\":{" + w8 + ":[0,8]},\"b\":{" + w8 + ":[4,12]}}", 12),
                 "overlaps");
  }
  SUBCASE("gap between tensors") {
    expect_error(raw_file(dir, "gap.safetensors", "{\"a\":{" + w8 + ":[0,8]},\"b\":{" + w8 + ":[12,20]}}", 20),
                 "gap of 4 bytes before tensor 'b'");
  }
  SUBCASE("offsets out of bounds") {
    expect_error(raw_file(dir, "oob.safetensors", "{\"a\":{" + w8 + ":[0,8]}}", 4), "tensor 'a'");
  }
  SUBCASE("buffer not fully covered") {
    expect_error(raw_file(dir, "cover.safetensors", "{\"a\":{" + w8 + ":[0,8]}}", 12),
                 "cover 8 bytes but the data buffer has 12");
  }
  SUBCASE("byte length does not match the shape") {
    expect_error(raw_file(dir, "len.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                 "needs 12");
  }
  SUBCASE("shape product overflow") {
    std::string h = R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,8]}})";
    expect_error(raw_file(dir, "shape.safetensors", h, 8), "overflows 64 bits");
  }
  SUBCASE("byte size overflow") {
    std::string h = R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})";
    expect_error(raw_file(dir, "bytes.safetensors", h, 8), "overflows 64 bits");
  }
  SUBCASE("negative shape entry") {
    expect_error(raw_file(dir, "neg.safetensors", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
                 "non-negative");
  }
  SUBCASE("unknown dtype") {
    expect_error(raw_file(dir, "dtype.safetensors", R"({"a":{"dtype":"F13","shape":[2],"data_offsets":[0,8]}})", 8),
                 "unknown dtype 'F13'");
  }
  SUBCASE("duplicate names") {
    expect_error(raw_file(dir, "dup.safetensors", "{\"a\":{" + w8 + ":[0,8]},\"a\":{" + w8 + ":[8,16]}}", 16),
                 "duplicate key 'a'");
  }
  SUBCASE("header not an object") {
    expect_error(raw_file(dir, "array.safetensors", "[1, 2, 3]", 0), "does not start with '{'");
  }
  SUBCASE("header not valid JSON") {
    expect_error(raw_file(dir, "json.safetensors", "{\"a\": nope}", 0), "invalid JSON at byte");
  }
  SUBCASE("metadata values must be strings") {
    expect_error(raw_file(dir, "meta.safetensors", R"({"__metadata__":{"step":3}})", 0), "'step' must be a string");
  }
  SUBCASE("missing data_offsets") {
    expect_error(raw_file(dir, "keys.safetensors", R"({"a":{"dtype":"F32","shape":[2]}})", 8), "data_offsets");
  }
}

TEST_CASE("safetensors typed reads check the dtype") {
  std::string dir = temp_dir();
  std::string h = R"({"big":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                  R"("f":{"dtype":"F64","shape":[1],"data_offsets":[8,16]}})";
  std::string buf = le64(uint64_t(1) << 40);
  double d = 0.25;
  buf.append(reinterpret_cast<const char*>(&d), 8);
  std::string path = dir + "/typed.safetensors";
  bytes_write(path, le64(h.size()) + h + buf);
  SafetensorsFile f = SafetensorsFile::open(path);
  CHECK(f.to_f32(*f.find("f")).f32()[0] == 0.25f);
  CHECK_THROWS_WITH_AS(f.to_f32(*f.find("big")), doctest::Contains("'big' is I64"), Error);
  CHECK_THROWS_WITH_AS(f.to_i32(*f.find("big")), doctest::Contains("does not fit in 32 bits"), Error);
  CHECK_THROWS_WITH_AS(f.to_i32(*f.find("f")), doctest::Contains("'f' is F64"), Error);
}

}  // namespace
