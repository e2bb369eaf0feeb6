// The CPU emulation of CUDA's own checks (tests/emu/cuda_emu.h), each proved on a deliberately broken
// kernel or call sequence that the emulation before it passed: a missing __syncthreads or __syncwarp
// whose writer has the lower index (run forward, the writer always went first), blocks that depend on each
// other, a static __shared__ read before this block wrote it, static and dynamic shared memory over the
// block's limit together, a host read of a copy before the host waited for it, a free on a stream not
// ordered after the kernel using the buffer, a launch over the block's registers. Every test also runs the
// correct version, so a check that fired on everything would fail here too. Only in lora_tests_emu (ctest
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

// Every thread scales by a factor thread 0 loads into a static __shared__ variable; correct only with the
// barrier. Without it, the emulation before per-block poisoning let the readers see the value an earlier
// block (or launch) left there, which is the same factor: it passed even when the readers ran first.
template <bool kBarrier>
__global__ void scale_by_shared(const float* factor, const float* in, float* out) {
  __shared__ float scale;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (threadIdx.x == 0) scale = *factor;
  if (kBarrier) __syncthreads();
  out[i] = in[i] * scale;
}

// Sums a block's inputs in a static __shared__ accumulator that it never zeroes: correct only if shared
// memory started as zeros, as the emulation's function statics once did for a kernel's first launch.
template <bool kZero>
__global__ void block_sum(const float* in, float* out) {
  __shared__ float acc[1];
  if (kZero && threadIdx.x == 0) acc[0] = 0.0f;
  __syncthreads();
  for (int t = 0; t < int(blockDim.x); ++t) {
    if (int(threadIdx.x) == t) acc[0] += in[blockIdx.x * blockDim.x + t];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = acc[0];
}

// 32 KiB of static __shared__: with 20 KiB of dynamic shared memory over the 48 KiB a block gets unless
// cudaFuncSetAttribute raises the limit (the emulation once counted only the dynamic part).
__global__ void big_static(float* out) {
  __shared__ float big[8192];
  LORA_DYNAMIC_SHARED(float, dyn);
  big[threadIdx.x] = 1.0f;
  dyn[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = big[threadIdx.x] + dyn[threadIdx.x];
}

__global__ void fill(float* v, float x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = x;
}

__global__ void ones(float* out) { out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f; }

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

TEST_CASE("emu shared memory: static __shared__ starts as NaN in every block") {
  const int threads = 32, blocks = 2, n = threads * blocks;
  std::vector<float> host(n, 1.5f);
  const float two = 2.0f;
  DeviceBuffer in(n), out(n), factor(1);
  REQUIRE(cudaMemcpy(in.p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(factor.p, &two, sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  auto run = [&](bool barrier) {
    if (barrier) LORA_LAUNCH(scale_by_shared<true>, blocks, threads, 0, nullptr)(factor.p, in.p, out.p);
    else LORA_LAUNCH(scale_by_shared<false>, blocks, threads, 0, nullptr)(factor.p, in.p, out.p);
    REQUIRE(launch_error().empty());
    std::vector<float> got(n);
    REQUIRE(cudaMemcpy(got.data(), out.p, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    return got;
  };
  use_schedule("forward");
  for (float v : run(false)) CHECK(v == 3.0f);  // forward: thread 0 writes first, the race cannot show
  use_schedule("reverse");  // the readers first: they read the block's fresh NaN, not the last block's 2
  std::vector<float> got = run(false);
  for (int i = 1; i < n; ++i)
    if (i % threads) CHECK(std::isnan(got[i]));
  for (const char* spec : {"forward", "reverse", "seed:4", "compare:4"}) {
    CAPTURE(spec);
    use_schedule(spec);
    for (float v : run(true)) CHECK(v == 3.0f);
  }
  use_schedule("forward");

  // An accumulator never zeroed: NaN even in the first block of the kernel's first launch.
  auto sums = [&](bool zero) {
    if (zero) LORA_LAUNCH(block_sum<true>, blocks, threads, 0, nullptr)(in.p, out.p);
    else LORA_LAUNCH(block_sum<false>, blocks, threads, 0, nullptr)(in.p, out.p);
    REQUIRE(launch_error().empty());
    std::vector<float> got(blocks);
    REQUIRE(cudaMemcpy(got.data(), out.p, blocks * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    return got;
  };
  for (float v : sums(false)) CHECK(std::isnan(v));
  for (float v : sums(true)) CHECK(v == 1.5f * threads);
}

TEST_CASE("emu shared memory: static __shared__ counts with the dynamic part against the block's limit") {
  DeviceBuffer out(64);
  LORA_LAUNCH(big_static, 1, 64, 16 * 1024, nullptr)(out.p);  // 32 + 16 KiB: exactly 48, allowed
  CHECK(launch_error().empty());
  LORA_LAUNCH(big_static, 1, 64, 20 * 1024, nullptr)(out.p);  // 32 + 20 KiB
  const std::string error = launch_error();
  CHECK(error.find("big_static launched with 20480 bytes of dynamic shared memory and 32768 of static "
                   "__shared__, over the 49152 bytes a block gets without cudaFuncSetAttribute") != std::string::npos);
  // Raised: 20 KiB dynamic allowed; 196 KiB dynamic with 32 KiB static is over the 227 KiB of a block.
  REQUIRE(cudaFuncSetAttribute(big_static, cudaFuncAttributeMaxDynamicSharedMemorySize, 20 * 1024) == cudaSuccess);
  LORA_LAUNCH(big_static, 1, 64, 20 * 1024, nullptr)(out.p);
  CHECK(launch_error().empty());
  std::vector<float> got(64);
  REQUIRE(cudaMemcpy(got.data(), out.p, 64 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (float v : got) CHECK(v == 3.0f);
  CHECK(cudaFuncSetAttribute(big_static, cudaFuncAttributeMaxDynamicSharedMemorySize, 196 * 1024) ==
        cudaErrorInvalidValue);
  CHECK(launch_error().find("with 32768 bytes of static __shared__ over the 232448-byte limit") != std::string::npos);
}

TEST_CASE("emu asynchrony: a host read of a device-to-host copy before a synchronisation sees NaN") {
  const int n = 256;
  DeviceBuffer d(n);
  std::vector<float> host(n, 0.0f);
  LORA_LAUNCH(fill, 2, 128, 0, nullptr)(d.p, 7.0f, n);
  REQUIRE(launch_error().empty());
  REQUIRE(cudaMemcpyAsync(host.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost, nullptr) == cudaSuccess);
  CHECK(std::isnan(host[0]));  // not landed: the emulation before this model copied at once
  CHECK(std::isnan(host[n - 1]));
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaSuccess);
  CHECK(host[0] == 7.0f);
  CHECK(host[n - 1] == 7.0f);

  // An event covers what its stream did before it; the synchronous cudaMemcpy waits by itself.
  cudaStream_t s;
  cudaEvent_t e;
  REQUIRE(cudaStreamCreate(&s) == cudaSuccess);
  REQUIRE(cudaEventCreate(&e) == cudaSuccess);
  LORA_LAUNCH(fill, 2, 128, 0, s)(d.p, 8.0f, n);
  REQUIRE(cudaMemcpyAsync(host.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
  REQUIRE(cudaEventRecord(e, s) == cudaSuccess);
  CHECK(std::isnan(host[5]));
  REQUIRE(cudaEventSynchronize(e) == cudaSuccess);
  CHECK(host[5] == 8.0f);
  LORA_LAUNCH(fill, 2, 128, 0, s)(d.p, 9.0f, n);
  REQUIRE(cudaMemcpy(host.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(host[5] == 9.0f);
  cudaEventDestroy(e);
  cudaStreamDestroy(s);
}

TEST_CASE("emu asynchrony: a free ordered before work on another stream that uses the buffer is an error") {
  const int n = 256;
  cudaStream_t a, b;
  cudaEvent_t e;
  REQUIRE(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaEventCreate(&e) == cudaSuccess);
  auto buffer = [&] {
    void* p = nullptr;
    REQUIRE(cudaMallocAsync(&p, n * sizeof(float), a) == cudaSuccess);
    LORA_LAUNCH(fill, 2, 128, 0, a)(static_cast<float*>(p), 1.0f, n);
    REQUIRE(launch_error().empty());
    return p;
  };
  // Broken: freed on stream b while the kernel on stream a may still write it (the emulation before this
  // model freed at once, after the kernel had run, and passed).
  void* p = buffer();
  CHECK(cudaFreeAsync(p, b) == cudaErrorIllegalState);
  const std::string error = launch_error();
  CHECK(error.find("cudaFreeAsync on stream") != std::string::npos);
  CHECK(error.find("fill on stream") != std::string::npos);
  CHECK(error.find("cudaStreamWaitEvent") != std::string::npos);
  CHECK(cudaFreeAsync(p, a) == cudaSuccess);  // on the kernel's own stream: ordered after it

  // Correct: ordered by an event, or waited for by the host, or freed with cudaFree (which waits).
  p = buffer();
  REQUIRE(cudaEventRecord(e, a) == cudaSuccess);
  REQUIRE(cudaStreamWaitEvent(b, e, 0) == cudaSuccess);
  CHECK(cudaFreeAsync(p, b) == cudaSuccess);
  p = buffer();
  REQUIRE(cudaStreamSynchronize(a) == cudaSuccess);
  CHECK(cudaFreeAsync(p, b) == cudaSuccess);
  p = buffer();
  CHECK(cudaFree(p) == cudaSuccess);
  CHECK(launch_error().empty());
  cudaEventDestroy(e);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
}

TEST_CASE("emu resources: a launch over 64K registers a block is refused, as on the device") {
  CHECK_MESSAGE(lora_emu::recorded_kernels() > 0,
                "no sm_90 register report of cuda/'s kernels beside lora_cuda's objects (LORA_EMU_PTXAS_DIR): "
                "build lora_cuda with 90 among CMAKE_CUDA_ARCHITECTURES");
  DeviceBuffer out(1024);
  const void* kernel = reinterpret_cast<const void*>(&ones);
  lora_emu::set_registers(kernel, "ones", 128);
  LORA_LAUNCH(ones, 1, 1024, 0, nullptr)(out.p);  // 1024 x 128 = 131072
  cudaError_t err = cudaGetLastError();
  CHECK(err == cudaErrorLaunchOutOfResources);
  CHECK(std::string(cudaGetErrorString(err)).find("ones launched with 1024 threads a block at 128 registers each "
                                                  "(ptxas, sm_90): 131072 registers, over the 65536") != std::string::npos);
  LORA_LAUNCH(ones, 2, 512, 0, nullptr)(out.p);  // 512 x 128 = 65536: fits
  CHECK(launch_error().empty());
  lora_emu::set_registers(kernel, "ones", 63);  // allocated 8 a thread at a time: 64, 65536 for 1024
  LORA_LAUNCH(ones, 1, 1024, 0, nullptr)(out.p);
  CHECK(launch_error().empty());
  lora_emu::set_registers(kernel, "ones", 65);  // 72 a thread: 73728
  LORA_LAUNCH(ones, 1, 1024, 0, nullptr)(out.p);
  CHECK(cudaGetLastError() == cudaErrorLaunchOutOfResources);
  cudaFuncAttributes attr;
  REQUIRE(cudaFuncGetAttributes(&attr, ones) == cudaSuccess);
  CHECK(attr.numRegs == 65);
  CHECK(attr.maxThreadsPerBlock == 896);  // 65536 / (72 x 32) = 28 warps
  lora_emu::set_registers(kernel, "ones", -1);
}
