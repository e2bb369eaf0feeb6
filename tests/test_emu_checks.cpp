// The CPU emulation of CUDA's own checks (tests/emu/cuda_emu.h), each proved on a deliberately broken
// kernel that the emulation before it passed: a missing barrier whose writer has the lower thread index
// (run forward, the writer always went first), blocks that depend on each other. Every test also runs the
// correct kernel, so a check that fires on everything would fail here too. Only in lora_tests_emu (ctest
// test_emu_checks, label emu): the kernels below are compiled against the emulation, never by nvcc.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda/common.cuh"

namespace {

// Thread t reads what thread t - 1 wrote to shared memory; correct only with the barrier.
template <bool kBarrier>
__global__ void shift_left(const float* in, float* out) {
  LORA_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * blockDim.x + t];
  if (kBarrier) __syncthreads();
  out[blockIdx.x * blockDim.x + t] = t > 0 ? s[t - 1] : 0.0f;
}

// Lane l reads what lane l - 1 of its warp wrote; correct only with __syncwarp.
template <bool kBarrier>
__global__ void warp_shift(const float* in, float* out) {
  LORA_DYNAMIC_SHARED(float, s);
  const int t = threadIdx.x;
  s[t] = in[t];
  if (kBarrier) __syncwarp();
  out[t] = t % 32 > 0 ? s[t - 1] : 0.0f;
}

// Block b adds one to what block b - 1 wrote: a dependency between blocks of one launch, which no barrier
// can order. Correct only as one block of one thread walking the whole array (kSerial).
template <bool kSerial>
__global__ void chain(float* v, int n) {
  if (kSerial) {
    for (int i = 1; i < n; ++i) v[i] = v[i - 1] + 1.0f;
  } else if (blockIdx.x > 0) {
    v[blockIdx.x] = v[blockIdx.x - 1] + 1.0f;
  }
}

struct DeviceBuffer {
  float* p = nullptr;
  explicit DeviceBuffer(size_t n) { REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)) == cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
};

void use_schedule(const char* spec) {
  std::string why;
  REQUIRE_MESSAGE(lora_emu::set_schedule(spec, &why), why);
}

// The launch's error as a message; empty when it succeeded.
std::string launch_error() {
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

// Runs shift_left<kBarrier> on 2 blocks of 64 threads and returns the output.
template <bool kBarrier>
std::vector<float> run_shift(std::string* error) {
  const int threads = 64, blocks = 2, n = threads * blocks;
  std::vector<float> host(n);
  for (int i = 0; i < n; ++i) host[i] = float(i + 1);
  DeviceBuffer in(n), out(n);
  REQUIRE(cudaMemcpy(in.p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  LORA_LAUNCH(shift_left<kBarrier>, blocks, threads, threads * sizeof(float), nullptr)(in.p, out.p);
  *error = launch_error();
  REQUIRE(cudaMemcpy(host.data(), out.p, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  return host;
}

bool shift_correct(const std::vector<float>& out, int threads) {
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] != (i % threads == 0 ? 0.0f : float(i))) return false;
  return true;
}

}  // namespace

TEST_CASE("emu schedule: a missing __syncthreads with the writer at the lower index is caught") {
  std::string error;
  use_schedule("forward");  // the order of the emulation before schedules: the race cannot show
  CHECK(shift_correct(run_shift<false>(&error), 64));
  CHECK(error.empty());

  use_schedule("reverse");  // the reader runs first and reads the NaN bytes shared memory starts as
  std::vector<float> out = run_shift<false>(&error);
  CHECK_FALSE(shift_correct(out, 64));
  CHECK(std::isnan(out[1]));

  use_schedule("compare:5");  // the test mode names the kernel and the race
  run_shift<false>(&error);
  CHECK(error.find("shift_left<kBarrier>") != std::string::npos);
  CHECK(error.find("forward and reverse order") != std::string::npos);
  CHECK(error.find("a race") != std::string::npos);

  for (const char* spec : {"forward", "reverse", "seed:3", "compare:5"}) {
    CAPTURE(spec);
    use_schedule(spec);
    CHECK(shift_correct(run_shift<true>(&error), 64));
    CHECK(error.empty());
  }
  use_schedule("forward");
}

TEST_CASE("emu schedule: a missing __syncwarp is caught in seeded order") {
  const int n = 64;
  std::vector<float> host(n);
  for (int i = 0; i < n; ++i) host[i] = float(i + 1);
  DeviceBuffer in(n), out(n);
  REQUIRE(cudaMemcpy(in.p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  auto run = [&](bool barrier) {
    if (barrier) LORA_LAUNCH(warp_shift<true>, 1, n, n * sizeof(float), nullptr)(in.p, out.p);
    else LORA_LAUNCH(warp_shift<false>, 1, n, n * sizeof(float), nullptr)(in.p, out.p);
    std::string error = launch_error();
    std::vector<float> got(n);
    REQUIRE(cudaMemcpy(got.data(), out.p, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    bool ok = true;
    for (int i = 0; i < n; ++i) ok &= got[i] == (i % 32 == 0 ? 0.0f : float(i));
    return std::make_pair(ok, error);
  };
  use_schedule("forward");
  CHECK(run(false).first);
  use_schedule("seed:11");  // 64 threads shuffled: some reader runs before its writer
  CHECK_FALSE(run(false).first);
  use_schedule("compare:11");
  CHECK(run(false).second.find("warp_shift<false>") != std::string::npos);
  for (const char* spec : {"reverse", "seed:11", "compare:11"}) {
    CAPTURE(spec);
    use_schedule(spec);
    auto r = run(true);
    CHECK(r.first);
    CHECK(r.second.empty());
  }
  use_schedule("forward");
}

TEST_CASE("emu schedule: blocks of one launch that depend on each other are caught") {
  const int n = 256;
  DeviceBuffer v(n);
  auto run = [&](bool serial) {
    std::vector<float> zero(n, 0.0f);
    REQUIRE(cudaMemcpy(v.p, zero.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    if (serial) LORA_LAUNCH(chain<true>, 1, 1, 0, nullptr)(v.p, n);
    else LORA_LAUNCH(chain<false>, n, 1, 0, nullptr)(v.p, n);
    std::string error = launch_error();
    std::vector<float> got(n);
    REQUIRE(cudaMemcpy(got.data(), v.p, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    bool ok = true;
    for (int i = 0; i < n; ++i) ok &= got[i] == float(i);
    return std::make_pair(ok, error);
  };
  use_schedule("forward");
  CHECK(run(false).first);
  use_schedule("reverse");
  CHECK_FALSE(run(false).first);
  use_schedule("seed:2");
  CHECK_FALSE(run(false).first);
  use_schedule("compare:2");
  auto broken = run(false);
  CHECK(broken.first);  // compare keeps the forward run's result, and reports the difference
  CHECK(broken.second.find("chain<false>") != std::string::npos);
  for (const char* spec : {"reverse", "seed:2", "compare:2"}) {
    CAPTURE(spec);
    use_schedule(spec);
    auto r = run(true);
    CHECK(r.first);
    CHECK(r.second.empty());
  }
  use_schedule("forward");
}

TEST_CASE("emu schedule: a spec it does not take is refused, naming it") {
  std::string why;
  CHECK_FALSE(lora_emu::set_schedule("backwards", &why));
  CHECK(why.find("'backwards' is not a schedule") != std::string::npos);
  CHECK_FALSE(lora_emu::set_schedule("seed:x1", &why));
  CHECK(why.find("not a non-negative integer") != std::string::npos);
  CHECK(lora_emu::set_schedule("seed:0", &why));
  use_schedule("forward");
}
