// A CPU emulation of the CUDA execution model, so that the kernels of cuda/ run and are tested against
// the CPU backend on machines without a GPU (CI). It is test infrastructure, not a product backend: it
// is slow and checks what it can.
//
// How it runs a launch: the blocks of the grid one after another (in the order below); inside a block,
// every thread as a fiber (its own stack) on the calling OS thread, switched only where a thread must
// wait for others: __syncthreads (all live threads of the block) and the warp shuffles and __syncwarp
// (all live lanes of the warp). Between two such points a thread runs alone, start to end. Threads that
// have returned no longer count at a barrier, as on the hardware since Volta. A barrier that can never
// complete (a __syncthreads reached by only part of a block) is reported as an error.
//
// The order (LORA_EMU_SCHEDULE, read at the first launch; lora_emu::set_schedule for tests):
//   forward      threads, lanes and blocks in index order (the default, and once the only order: a
//                reader always ran after a writer of lower index, so a missing barrier passed whenever
//                the writer had the lower index);
//   reverse      all three in reverse index order;
//   seed[:N]     the blocks of each launch in a random permutation, and the threads a new random order
//                every time the block's threads are resumed (after each barrier or warp operation),
//                drawn from N and the launch's number; without N a random seed, printed to stderr;
//   compare[:N]  the test mode: every launch runs forward, reversed and seeded from the same device
//                memory, and a launch whose results differ in any bit fails (cudaErrorLaunchFailure,
//                naming the kernel, the order, the first differing byte and the schedule that shows it).
//                It compares the buffers the launch's arguments point into (also through a table of
//                pointers in a buffer of at most 64 KiB that an argument points to) and keeps the forward
//                run's result. The kernels of cuda/ use no atomics, so every one must be deterministic.
// tests/CMakeLists.txt runs the emu tier seeded, the bf16/f16 repeats reversed and compare in `slow`.
//
// What it checks beyond running the code: launch limits (threads per block, grid dimensions, shared
// memory: static __shared__ and dynamic together over 48 KiB unless cudaFuncSetAttribute raised the
// dynamic part's limit, 227 KiB at most, static over 48 KiB never), registers (below), copies whose
// direction does not match where the pointers were allocated, frees of unknown pointers. Device memory
// from cudaMalloc, and shared memory, static and dynamic, at the start of every block, begin as NaN bytes
// (0xFF), so reading what was never written shows up, as does a value left by an earlier block.
//
// Registers: the build keeps ptxas's report for sm_90 beside each object of lora_cuda
// (tests/emu/ptxas_log.sh, -Xptxas=-v); a launch whose warps need more than the block's 65536 registers
// (per thread as reported, given to a warp 256 at a time) fails with cudaErrorLaunchOutOfResources, as
// on the device. A kernel without a report (one only the emulation compiles, or a build without sm_90)
// is not checked; __launch_bounds__ acts only through the count ptxas reports.
//
// Asynchrony, in a simple model: every launch, copy and cuBLASLt call runs when it is called, but stays
// pending, naming the allocations its arguments point into, until the host waits for it
// (cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, a synchronous cudaMemcpy, cudaFree).
// Streams are ordered as on the device: in issue order, by cudaEventRecord/cudaStreamWaitEvent, and the
// legacy default stream with every blocking stream. A device-to-host cudaMemcpyAsync fills its destination
// with NaN bytes and lands only when the host waits for it, so a host read without that wait shows
// (stricter than the device for pageable memory, where the call returns after the copy). A cudaFreeAsync
// of a buffer that pending work on another stream uses, not ordered before the free, fails with
// cudaErrorIllegalState naming that work. Not modelled: a host buffer changed or freed while a copy
// from it is pending (the copy reads it at the call), and buffers reached only through device memory.
//
// What it does not model: the memory model (one block runs at a time, a thread runs alone between its
// barriers and warp operations, so a race inside such a stretch of code does not show), timing, tensor
// cores (a fragment's products are exact f32 sums), the fast-math intrinsics (__expf, __logf, rsqrtf,
// __fdividef are exact), atomics (cuda/ has none), out-of-bounds accesses (build with
// -fsanitize=address for those), a static __shared__ declared in a device function rather than the
// kernel (neither poisoned nor counted), more than one device.
//
// cuda/common.cuh includes this file when LORA_CUDA_EMU is defined; tests/emu/cuda_emu.cpp implements
// the runtime functions and tests/emu/cublaslt_emu.cpp the cuBLASLt ones that cuda/ calls.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// A static __shared__ variable is a function-local static of the kernel: one block runs at a time, and
// every block starts it as NaN bytes (tests/emu/cuda_emu.cpp finds it in the symbol table).
#undef __shared__
#define __shared__ static

namespace lora_emu {

struct Coords {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
// The coordinates of the thread now running.
const Coords& coords();

// Runs `body` once per thread of every block of the grid. `kernel` identifies the function for the
// shared-memory attribute set by cudaFuncSetAttribute; `name` is for messages; `args` are the launch's
// argument values, whose pointers name the device buffers it uses.
void run_grid(const void* kernel, const char* name, dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream,
              void (*body)(void*), void* arg, const void* args, size_t args_bytes);
// Records work done at once on `stream` (a cuBLASLt matmul) as pending for the asynchrony checks, naming
// the pointers it uses.
void record_work(cudaStream_t stream, const char* what, const std::vector<const void*>& named);
// For tests: the kernel's registers per thread as if ptxas had reported them; the number of kernels whose
// sm_90 registers the build recorded.
void set_registers(const void* kernel, const char* name, int registers);
size_t recorded_kernels();
// Sets the schedule as LORA_EMU_SCHEDULE would (for tests); false, with *why, for a spec it does not take.
bool set_schedule(const char* spec, std::string* why);
void* dynamic_shared();
void syncthreads();
uint64_t warp_exchange(uint64_t bits, int src_lane);
int lane_id();

template <typename... P>
struct Launch {
  void (*fn)(P...);
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  const char* name;

  template <typename... A>
  void operator()(A&&... a) const {
    struct Bound {
      void (*fn)(P...);
      std::tuple<std::decay_t<P>...> args;
    } bound{fn, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)};
    run_grid(reinterpret_cast<const void*>(fn), name, grid, block, smem, stream,
             [](void* p) {
               auto* b = static_cast<Bound*>(p);
               std::apply(b->fn, b->args);  // copies the arguments for each thread, as a launch does
             },
             &bound, &bound.args, sizeof(bound.args));
  }
};

template <typename... P>
Launch<P...> make_launch(void (*fn)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                         const char* name) {
  return Launch<P...>{fn, grid, block, smem, stream, name};
}

template <typename T>
T shuffle(T v, int src_lane) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(bits, src_lane);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

}  // namespace lora_emu

#define LORA_LAUNCH(kernel, grid, block, smem, stream) \
  ::lora_emu::make_launch(kernel, dim3(grid), dim3(block), size_t(smem), (stream), #kernel)
#define LORA_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::lora_emu::dynamic_shared())

#define threadIdx (::lora_emu::coords().thread)
#define blockIdx (::lora_emu::coords().block)
#define blockDim (::lora_emu::coords().block_dim)
#define gridDim (::lora_emu::coords().grid_dim)

inline void __syncthreads() { ::lora_emu::syncthreads(); }

// Full-mask warp shuffles (the only kind cuda/ uses): every live lane of the warp takes part.
template <typename T>
T __shfl_sync(unsigned /*mask*/, T v, int src_lane, int width = 32) {
  int lane = ::lora_emu::lane_id();
  return ::lora_emu::shuffle(v, (lane / width) * width + (src_lane % width));
}
template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) {
  int lane = ::lora_emu::lane_id();
  int src = lane ^ lane_mask;
  if (src / width != lane / width) src = lane;  // outside the lane's segment: its own value, as CUDA does
  return ::lora_emu::shuffle(v, src);
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }

// The device-side min and max overloads CUDA declares globally.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// The function-pointer forms that cuda_runtime.h declares for nvcc only.
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <typename... P>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, void (*kernel)(P...)) {
  return cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(kernel));
}

// __syncwarp: the live lanes of the warp meet (a shuffle's barrier without the exchange).
inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) { ::lora_emu::warp_exchange(0, ::lora_emu::lane_id()); }

// Warp matrix multiply-accumulate (mma.h's nvcuda::wmma), m16n16k16 only. A fragment's distribution over
// the lanes is unspecified in CUDA, so code may only load, store, fill and multiply fragments; here every
// lane holds the whole tile, which gives exactly those semantics (each lane computes the full product in
// f32, the tensor cores' accumulation type, and every lane stores the same values). Code that reads what
// other lanes stored needs __syncwarp between, as on the hardware.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation has m16n16k16 only");
  static constexpr int num_elements = 256;
  T x[256];  // (16, 16): row-major for matrix_a and accumulator, (k, n) row-major for matrix_b
};

inline float wmma_float(float v) { return v; }
inline float wmma_float(__half v) { return __half2float(v); }
inline float wmma_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same<Layout, row_major>::value || std::is_same<Layout, col_major>::value, "a or b");
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      f.x[i * 16 + j] = std::is_same<Layout, row_major>::value ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i];
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t layout) {
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      f.x[i * 16 + j] = layout == mem_row_major ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i];
}

// A store is collective: no lane writes before every lane has loaded what it reads (each lane here reads
// the whole tile, so an in-place update would otherwise be applied once per lane).
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  __syncwarp();
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) (layout == mem_row_major ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i]) = f.x[i * 16 + j];
}

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, T v) {
  for (auto& e : f.x) e = v;
}

template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float acc = c.x[i * 16 + j];
      for (int k = 0; k < 16; ++k) acc += wmma_float(a.x[i * 16 + k]) * wmma_float(b.x[k * 16 + j]);
      out[i * 16 + j] = acc;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda
