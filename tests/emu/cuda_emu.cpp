// The CPU emulation's runtime (tests/emu/cuda_emu.h says what it models and what it checks): the fiber
// scheduler that runs a grid, and the CUDA runtime functions that cuda/ and its tests call. Device memory
// is host memory; every allocation is recorded so that copies and frees can be checked.
// _setjmp/_longjmp switch between stacks on purpose; glibc's fortified longjmp would refuse a jump to a
// lower stack, so the fortified variant is kept out of this file.
#undef _FORTIFY_SOURCE
#include "tests/emu/cuda_emu.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace lora_emu {
namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr size_t kMaxSmem = 227 * 1024;  // H100's opt-in limit per block
constexpr size_t kDeviceBytes = size_t(80) << 30;

enum class Wait { none, block, warp, done };

// A thread of the block. Its fiber is started once (makecontext) and then loops: run the kernel body for
// one block, park as done, run it again for the next block. Switches use _setjmp/_longjmp, which save
// and restore registers only; swapcontext would also save and restore the signal mask with a system call
// on every switch (rt_sigprocmask), which was about half of the emulation's time.
struct Fiber {
  ucontext_t start;  // used once, to enter fiber_main on the fiber's own stack
  jmp_buf resume;    // where the fiber continues when switched to
  bool started = false;
  std::unique_ptr<char[]> stack;
  Coords coords;
  int linear = 0;  // thread index in the block
  Wait wait = Wait::none;
};

// The order the scheduler runs things in (LORA_EMU_SCHEDULE, cuda_emu.h): threads between barriers,
// lanes between warp operations and the blocks of a launch.
enum class Order { forward, reverse, seed };
struct Schedule {
  Order order = Order::forward;
  uint64_t seed = 0;     // Order::seed, and the third run of compare
  bool compare = false;  // every launch three times, forward, reverse and seeded, results required equal
  bool parsed = false;
};
Schedule g_schedule;
uint64_t g_launches = 0;  // launches so far: with the seed, the seeded order of each launch

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

bool parse_schedule(const char* spec, Schedule* out, std::string* why) {
  Schedule s;
  s.parsed = true;
  std::string text = spec ? spec : "";
  std::string kind = text.substr(0, text.find(':'));
  const bool has_seed = text.find(':') != std::string::npos;
  if (text.empty() || text == "forward") return *out = s, true;
  if (text == "reverse") return s.order = Order::reverse, *out = s, true;
  if (kind == "seed" || kind == "compare") {
    s.order = kind == "seed" ? Order::seed : Order::forward;
    s.compare = kind == "compare";
    if (has_seed) {
      const std::string digits = text.substr(text.find(':') + 1);
      char* end = nullptr;
      s.seed = std::strtoull(digits.c_str(), &end, 10);
      if (digits.empty() || *end != '\0' || digits[0] == '-') {
        *why = "the seed in '" + text + "' is not a non-negative integer";
        return false;
      }
    } else {
      std::random_device rd;
      s.seed = uint64_t(rd()) << 32 | rd();
      std::fprintf(stderr, "lora_emu: LORA_EMU_SCHEDULE=%s:%llu (set that to run the same orders again)\n",
                   kind.c_str(), (unsigned long long)s.seed);
    }
    return *out = s, true;
  }
  *why = "'" + text + "' is not a schedule: expected forward, reverse, seed, seed:N, compare or compare:N";
  return false;
}

const Schedule& schedule() {
  if (!g_schedule.parsed) {
    std::string why;
    if (!parse_schedule(std::getenv("LORA_EMU_SCHEDULE"), &g_schedule, &why)) {
      std::fprintf(stderr, "lora_emu: LORA_EMU_SCHEDULE: %s\n", why.c_str());
      std::exit(2);
    }
  }
  return g_schedule;
}

struct BlockRun {
  std::vector<std::unique_ptr<Fiber>>* fibers = nullptr;
  int live = 0;
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  jmp_buf scheduler;  // where the scheduler continues when a fiber parks
  Fiber* current = nullptr;
  std::vector<uint64_t> lanes;  // one slot per thread: the value offered to a shuffle
  std::vector<int> order;       // the threads in the order the scheduler switches to them
};

BlockRun g_run;
std::vector<std::unique_ptr<Fiber>> g_fibers;  // reused across blocks and launches; never moved once started
std::vector<unsigned char> g_dynamic;
std::map<const void*, int> g_smem_attr;  // kernel -> max dynamic shared memory allowed
cudaError_t g_last_error = cudaSuccess;
std::string g_fault;  // why the last launch failed, for the message
Coords g_host_coords{};

std::mutex g_mem_mutex;
std::map<uintptr_t, size_t> g_allocs;  // device allocations: start -> bytes
size_t g_allocated = 0;

// Parks the running fiber and continues the scheduler; returns when the scheduler switches back.
void park(Fiber* f) {
  if (_setjmp(f->resume) == 0) _longjmp(g_run.scheduler, 1);
}

// Switches from the scheduler to f (its first switch enters fiber_main); returns when f parks.
void switch_to(Fiber* f) {
  g_run.current = f;
  if (_setjmp(g_run.scheduler) != 0) return;
  if (!f->started) {
    f->started = true;
    setcontext(&f->start);
  }
  _longjmp(f->resume, 1);
}

void fiber_main() {
  for (;;) {
    g_run.body(g_run.arg);
    Fiber* f = g_run.current;
    f->wait = Wait::done;
    --g_run.live;
    park(f);  // resumed for the same thread of a later block, or never
  }
}

void yield(Wait w) {
  Fiber* f = g_run.current;
  f->wait = w;
  park(f);
}

int warp_of(const Fiber& f) { return f.linear / 32; }

// Releases the threads of every barrier whose live members all arrived. Returns whether any were.
bool release_barriers(std::vector<std::unique_ptr<Fiber>>& fibers, int nthreads) {
  bool released = false;
  int waiting_block = 0;
  for (int i = 0; i < nthreads; ++i) waiting_block += fibers[i]->wait == Wait::block;
  if (waiting_block > 0 && waiting_block == g_run.live) {
    for (int i = 0; i < nthreads; ++i)
      if (fibers[i]->wait == Wait::block) fibers[i]->wait = Wait::none;
    return true;
  }
  for (int w0 = 0; w0 < nthreads; w0 += 32) {
    int w1 = std::min(nthreads, w0 + 32), live = 0, waiting = 0;
    for (int i = w0; i < w1; ++i) {
      live += fibers[i]->wait != Wait::done;
      waiting += fibers[i]->wait == Wait::warp;
    }
    if (waiting > 0 && waiting == live) {
      for (int i = w0; i < w1; ++i) fibers[i]->wait = Wait::none;
      released = true;
    }
  }
  return released;
}

std::string dims(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

// A kernel's static __shared__ variables. `__shared__` is `static` here, so they are the kernel's
// function-local statics, found once per kernel in the executable's symbol table by their mangled names
// (a local static of the function _Z<encoding> is _ZZ<encoding>E<name>), so that every block can start
// them as NaN bytes and a launch can count them against the block's shared memory. A static __shared__
// in a device function the kernel calls is neither poisoned nor counted (cuda/ declares none).
struct Region {
  unsigned char* p;
  size_t bytes;
};
// What the launch checks know of a kernel: its static __shared__ variables and its registers.
struct KernelInfo {
  std::vector<Region> vars;  // static __shared__
  size_t bytes = 0;          // their total
  int registers = -1;        // per thread on sm_90 as ptxas reported them; -1: no report
};

struct Symbols {
  bool loaded = false;
  std::string why;  // why the table could not be read, for the one warning
  std::unordered_map<uintptr_t, std::string> functions;  // run-time address -> mangled name
  std::vector<std::pair<std::string, Region>> locals;    // writable _ZZ objects: mangled name, storage
};

// Reads the symbol table (.symtab) of the file that holds `code` (the test executable, or lora_emu).
Symbols read_symbols(const void* code) {
  Symbols t;
  t.loaded = true;
  Dl_info info{};
  if (!dladdr(code, &info) || !info.dli_fname) return t.why = "dladdr found no file for the kernel", t;
  const int fd = open(info.dli_fname[0] ? info.dli_fname : "/proc/self/exe", O_RDONLY);
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0) return t.why = std::string("cannot open ") + info.dli_fname, t;
  void* map = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return t.why = std::string("cannot map ") + info.dli_fname, t;
  const auto* base = static_cast<const unsigned char*>(map);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
  const uintptr_t bias = eh->e_type == ET_DYN ? uintptr_t(info.dli_fbase) : 0;
  for (int i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_SYMTAB) continue;
    const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
    const char* names = reinterpret_cast<const char*>(base + sh[sh[i].sh_link].sh_offset);
    for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k) {
      const Elf64_Sym& sym = syms[k];
      const char* name = names + sym.st_name;
      if (ELF64_ST_TYPE(sym.st_info) == STT_FUNC && sym.st_value) {
        t.functions.emplace(bias + sym.st_value, name);
      } else if (ELF64_ST_TYPE(sym.st_info) == STT_OBJECT && std::strncmp(name, "_ZZ", 3) == 0 &&
                 sym.st_shndx < eh->e_shnum && (sh[sym.st_shndx].sh_flags & SHF_WRITE)) {
        // writable only: __func__ and string literals of a kernel are read-only statics too
        t.locals.push_back({name, Region{reinterpret_cast<unsigned char*>(bias + sym.st_value), size_t(sym.st_size)}});
      }
    }
  }
  munmap(map, size_t(st.st_size));
  if (t.functions.empty()) t.why = std::string("no symbol table in ") + info.dli_fname + " (stripped?)";
  return t;
}

std::map<const void*, KernelInfo> g_kernels;  // kernel -> its static __shared__ variables and registers

// Registers per thread on sm_90, by the kernel's name as nvcc mangles it, from the ptxas reports the
// build keeps beside lora_cuda's objects (tests/emu/ptxas_log.sh, LORA_EMU_PTXAS_DIR).
std::unordered_map<std::string, int> g_registers;
bool g_registers_loaded = false;

void load_registers() {
  g_registers_loaded = true;
#ifdef LORA_EMU_PTXAS_DIR
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(LORA_EMU_PTXAS_DIR, ec)) {
    if (entry.path().extension() != ".ptxas") continue;
    std::ifstream in(entry.path());
    std::string line, kernel;
    while (std::getline(in, line)) {
      // "Compiling entry function 'NAME' for 'sm_90'", then "Used N registers, ..."
      const size_t q = line.find("Compiling entry function '");
      if (q != std::string::npos) {
        const size_t start = q + 26, end = line.find('\'', start);
        kernel = line.find("for 'sm_90'") != std::string::npos ? line.substr(start, end - start) : "";
      } else if (!kernel.empty() && line.find("Used ") != std::string::npos) {
        g_registers[kernel] = std::atoi(line.c_str() + line.find("Used ") + 5);
        kernel.clear();
      }
    }
  }
#endif
}

// GCC marks a function of internal linkage with an L before its name (_ZN4lora8cuda_opsL6kernelE...);
// nvcc names the device function without it.
std::string nvcc_name(const std::string& gcc) {
  std::string out = gcc;
  size_t i = out.compare(0, 3, "_ZN") == 0 ? 3 : out.compare(0, 2, "_Z") == 0 ? 2 : std::string::npos;
  while (i < out.size()) {
    if (out[i] == 'L' && i + 1 < out.size() && std::isdigit(static_cast<unsigned char>(out[i + 1]))) {
      out.erase(i, 1);
    } else if (std::isdigit(static_cast<unsigned char>(out[i]))) {
      size_t len = 0;
      while (i < out.size() && std::isdigit(static_cast<unsigned char>(out[i]))) len = len * 10 + size_t(out[i++] - '0');
      i += len;
    } else {
      break;  // past the nested name: template arguments or the parameter types
    }
  }
  return out;
}

KernelInfo& kernel_info(const void* kernel, const char* name) {
  auto it = g_kernels.find(kernel);
  if (it != g_kernels.end()) return it->second;
  static Symbols symbols;
  if (!symbols.loaded) symbols = read_symbols(kernel);
  KernelInfo found;
  auto fn = symbols.functions.find(uintptr_t(kernel));
  if (fn == symbols.functions.end() || fn->second.compare(0, 2, "_Z") != 0) {
    if (fn == symbols.functions.end())
      std::fprintf(stderr, "lora_emu: %s: no symbol for the kernel (%s); its static __shared__ memory is neither "
                   "poisoned nor counted\n", name, symbols.why.empty() ? "not in the symbol table" : symbols.why.c_str());
  } else {
    if (!g_registers_loaded) load_registers();
    auto regs = g_registers.find(nvcc_name(fn->second));
    if (regs != g_registers.end()) found.registers = regs->second;
    const std::string prefix = "_ZZ" + fn->second.substr(2) + "E";
    for (const auto& local : symbols.locals)
      if (local.first.compare(0, prefix.size(), prefix) == 0) {
        found.vars.push_back(local.second);
        found.bytes += local.second.bytes;
      }
  }
  return g_kernels.emplace(kernel, std::move(found)).first->second;
}

bool check_launch(const void* kernel, const char* name, dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  const KernelInfo& info = kernel_info(kernel, name);
  const size_t fixed = info.bytes;
  // Registers are given to a warp in units of 256 (8 a thread); a block's warps share 64K.
  const uint64_t regs = info.registers < 0 ? 0 : (threads + 31) / 32 * ((uint64_t(info.registers) * 32 + 255) / 256 * 256);
  std::string why;
  if (threads == 0 || uint64_t(grid.x) * grid.y * grid.z == 0) why = "an empty grid or block";
  else if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) why = "more than 1024 threads a block";
  else if (grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) why = "a grid dimension over its limit";
  else if (regs > 65536) {
    g_fault = std::string(name) + " launched with " + std::to_string(threads) + " threads a block at " +
              std::to_string(info.registers) + " registers each (ptxas, sm_90): " + std::to_string(regs) +
              " registers, over the 65536 of a block (fewer threads a block, or __launch_bounds__ to make ptxas "
              "use fewer registers)";
    g_last_error = cudaErrorLaunchOutOfResources;
    return false;
  } else if (fixed > kDefaultSmem)
    why = std::to_string(fixed) + " bytes of static __shared__ memory, over the " + std::to_string(kDefaultSmem) +
          " a kernel may declare (ptxas refuses it; use dynamic shared memory)";
  else {
    // As on the device: static and dynamic together within 48 KiB, unless cudaFuncSetAttribute raised
    // the dynamic part's limit; within 227 KiB in any case.
    auto it = g_smem_attr.find(kernel);
    const bool raised = it != g_smem_attr.end();
    const size_t allowed = raised ? size_t(it->second) : kDefaultSmem - fixed;
    if (smem > allowed || fixed + smem > kMaxSmem)
      why = std::to_string(smem) + " bytes of dynamic shared memory and " + std::to_string(fixed) +
            " of static __shared__, over the " + (raised ? std::to_string(allowed) : std::to_string(kDefaultSmem)) +
            (raised ? " dynamic bytes cudaFuncSetAttribute allowed" : " bytes a block gets without cudaFuncSetAttribute") +
            (fixed + smem > kMaxSmem ? " and the " + std::to_string(kMaxSmem) + " a block can have" : "") +
            " (raise the dynamic limit with cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, "
            "bytes))";
  }
  if (why.empty()) return true;
  g_fault = std::string(name) + " launched with " + why + ": grid " + dims(grid) + ", block " + dims(block);
  g_last_error = cudaErrorInvalidConfiguration;
  return false;
}

// Runs one block to its end: every live thread in g_run.order until it parks, then the barriers whose
// threads all arrived are released, again and again. Order::seed draws a new order for every round.
void run_block(uint3 bidx, dim3 grid, dim3 block, size_t smem, const KernelInfo& fixed, Order order, uint64_t& rng,
               const char* name) {
  const int nthreads = int(block.x * block.y * block.z);
  for (int i = 0; i < nthreads; ++i) {
    Fiber& f = *g_fibers[i];
    f.linear = i;
    f.coords.thread = make_uint3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
    f.coords.block = bidx;
    f.coords.block_dim = block;
    f.coords.grid_dim = grid;
    f.wait = Wait::none;
  }
  // NaN bytes at every block start, static and dynamic: nothing survives from an earlier block
  std::memset(g_dynamic.data(), 0xFF, smem);
  for (const Region& v : fixed.vars) std::memset(v.p, 0xFF, v.bytes);
  g_run.live = nthreads;
  while (g_run.live > 0) {
    if (order == Order::seed)
      for (int i = nthreads - 1; i > 0; --i) std::swap(g_run.order[i], g_run.order[splitmix(rng) % uint64_t(i + 1)]);
    bool ran = false;
    for (int i : g_run.order) {
      if (g_fibers[i]->wait != Wait::none) continue;
      switch_to(g_fibers[i].get());
      ran = true;
    }
    g_run.current = nullptr;
    if (g_run.live == 0) break;
    if (!release_barriers(g_fibers, nthreads) && !ran) {
      std::fprintf(stderr,
                   "lora_emu: %s, block (%u, %u, %u): a barrier that can never complete (__syncthreads or a "
                   "shuffle reached by only some threads)\n",
                   name, bidx.x, bidx.y, bidx.z);
      std::abort();
    }
  }
}

// Runs every block of the grid in the order given: index order, reversed, or a permutation drawn from rng.
void run_blocks(dim3 grid, dim3 block, size_t smem, const KernelInfo& fixed, Order order, uint64_t seed,
                const char* name) {
  uint64_t rng = seed;
  const int nthreads = int(block.x * block.y * block.z);
  g_run.order.resize(nthreads);
  for (int i = 0; i < nthreads; ++i) g_run.order[i] = order == Order::reverse ? nthreads - 1 - i : i;
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  // A permutation of the block indices: Fisher-Yates up to 2^24 blocks, beyond that i -> (a i + b) mod n
  // with a odd and coprime to n (a permutation too, cheaper to hold).
  std::vector<uint32_t> perm;
  uint64_t a = 1, b = 0;
  if (order == Order::seed) {
    if (nblocks <= (uint64_t(1) << 24)) {
      perm.resize(nblocks);
      for (uint64_t i = 0; i < nblocks; ++i) perm[i] = uint32_t(i);
      for (uint64_t i = nblocks - 1; i > 0; --i) std::swap(perm[i], perm[splitmix(rng) % (i + 1)]);
    } else {
      auto gcd = [](uint64_t x, uint64_t y) { while (y) { uint64_t t = x % y; x = y; y = t; } return x; };
      do a = splitmix(rng) % nblocks | 1; while (gcd(a, nblocks) != 1);
      b = splitmix(rng) % nblocks;
    }
  }
  for (uint64_t k = 0; k < nblocks; ++k) {
    uint64_t l = k;
    if (order == Order::reverse) l = nblocks - 1 - k;
    else if (order == Order::seed) l = perm.empty() ? (a * k + b) % nblocks : perm[k];
    const uint3 bidx = make_uint3(unsigned(l % grid.x), unsigned(l / grid.x % grid.y), unsigned(l / grid.x / grid.y));
    run_block(bidx, grid, block, smem, fixed, order, rng, name);
  }
}

// The allocation holding p, if any.
bool find_alloc(uintptr_t p, Region* out) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  auto it = g_allocs.upper_bound(p);
  if (it == g_allocs.begin()) return false;
  --it;
  if (p < it->first || p >= it->first + it->second) return false;
  *out = Region{reinterpret_cast<unsigned char*>(it->first), it->second};
  return true;
}

// The device allocations a launch can reach: those its argument bytes point into (a pointer argument, or
// one inside a struct argument), and those that small ones of them point into (a table of pointers).
std::vector<Region> named_regions(const void* args, size_t bytes) {
  std::vector<Region> found;
  auto scan = [&](const unsigned char* at, size_t n) {
    for (size_t off = 0; off + sizeof(uintptr_t) <= n; off += sizeof(uintptr_t)) {
      uintptr_t v;
      std::memcpy(&v, at + off, sizeof(v));
      Region r;
      if (!find_alloc(v, &r)) continue;
      bool known = false;
      for (const Region& k : found) known |= k.p == r.p;
      if (!known) found.push_back(r);
    }
  };
  scan(static_cast<const unsigned char*>(args), bytes);
  for (size_t i = 0, direct = found.size(); i < direct; ++i)
    if (found[i].bytes <= 64 * 1024) scan(found[i].p, found[i].bytes);
  return found;
}

using Snapshot = std::vector<std::vector<unsigned char>>;

Snapshot take(const std::vector<Region>& regions) {
  Snapshot s;
  for (const Region& r : regions) s.emplace_back(r.p, r.p + r.bytes);
  return s;
}

void restore(const std::vector<Region>& regions, const Snapshot& s) {
  for (size_t i = 0; i < regions.size(); ++i) std::memcpy(regions[i].p, s[i].data(), regions[i].bytes);
}

// The first difference between the regions now and `want` (the forward run's result), described; empty
// when they are the same bit for bit.
std::string first_difference(const std::vector<Region>& regions, const Snapshot& want) {
  for (size_t i = 0; i < regions.size(); ++i) {
    const Region& r = regions[i];
    if (std::memcmp(r.p, want[i].data(), r.bytes) == 0) continue;
    size_t off = 0;
    while (r.p[off] == want[i][off]) ++off;
    off &= ~size_t(3);
    std::string what = "byte " + std::to_string(off) + " of a " + std::to_string(r.bytes) + "-byte buffer";
    if (off + 4 <= r.bytes) {
      float got, was;
      std::memcpy(&got, r.p + off, 4);
      std::memcpy(&was, want[i].data() + off, 4);
      what += " (as f32: " + std::to_string(was) + " forward, " + std::to_string(got) + " here)";
    }
    return what;
  }
  return "";
}

// The asynchrony model (cuda_emu.h). Each stream numbers its work; a stream's clock holds, for every
// stream, the last piece of work its next one is ordered after (vector clocks: cudaStreamWaitEvent joins
// an event's clock, the legacy default stream joins every blocking stream's and they its); g_host_done
// holds what the host has waited for. Work runs at once, but a launch stays pending, naming the
// allocations its arguments point into, until the host waits for it; a copy to the host lands only then.
struct StreamState {
  int id = 0;
  bool blocking = true;  // ordered with the legacy default stream
  uint64_t seq = 0;
  std::vector<uint64_t> clock;
};
struct PendingWork {
  int stream;
  uint64_t seq;
  std::string what;
  std::vector<uintptr_t> allocs;  // start of each allocation it names
};
struct HostCopy {  // a device-to-host cudaMemcpyAsync not yet waited for
  int stream;
  uint64_t seq;
  void* dst;
  std::vector<unsigned char> data;
};

std::vector<std::unique_ptr<StreamState>> g_streams;  // id -> stream; 0 is the legacy default stream
std::vector<uint64_t> g_host_done;
std::vector<PendingWork> g_pending;
std::vector<HostCopy> g_host_copies;

StreamState& stream_state(cudaStream_t h) {
  if (g_streams.empty()) g_streams.push_back(std::make_unique<StreamState>());
  // nullptr, cudaStreamLegacy (1) and cudaStreamPerThread (2): the legacy default stream
  if (uintptr_t(h) <= 2) return *g_streams[0];
  return *reinterpret_cast<StreamState*>(h);
}

void join(std::vector<uint64_t>& into, const std::vector<uint64_t>& from) {
  if (into.size() < from.size()) into.resize(from.size(), 0);
  for (size_t i = 0; i < from.size(); ++i) into[i] = std::max(into[i], from[i]);
}

uint64_t at(const std::vector<uint64_t>& clock, int id) { return size_t(id) < clock.size() ? clock[id] : 0; }

// Orders the next work of s as CUDA does and returns s: the legacy stream after every blocking stream's
// work so far, a blocking stream after the legacy stream's.
StreamState& ordered(cudaStream_t h) {
  StreamState& s = stream_state(h);
  if (s.id == 0) {
    for (auto& other : g_streams)
      if (other && other->blocking && other->id != 0) join(s.clock, other->clock);
  } else if (s.blocking) {
    join(s.clock, g_streams[0]->clock);
  }
  return s;
}

// Enqueues one piece of work on the stream; `named` are the pointers it uses (those into device
// allocations stay pending until the host waits for it). Returns its number.
uint64_t enqueue(cudaStream_t h, const std::string& what, const std::vector<const void*>& named) {
  StreamState& s = ordered(h);
  ++s.seq;
  if (s.clock.size() <= size_t(s.id)) s.clock.resize(s.id + 1, 0);
  s.clock[s.id] = s.seq;
  PendingWork w{s.id, s.seq, what, {}};
  for (const void* p : named) {
    Region r;
    if (find_alloc(uintptr_t(p), &r) && std::find(w.allocs.begin(), w.allocs.end(), uintptr_t(r.p)) == w.allocs.end())
      w.allocs.push_back(uintptr_t(r.p));
  }
  if (!w.allocs.empty()) g_pending.push_back(std::move(w));
  return s.seq;
}

// The host has waited for everything `clock` covers: copies to the host land, launches stop pending.
void host_waits(const std::vector<uint64_t>& clock) {
  join(g_host_done, clock);
  for (auto it = g_host_copies.begin(); it != g_host_copies.end();) {
    if (it->seq > at(g_host_done, it->stream)) {
      ++it;
      continue;
    }
    std::memcpy(it->dst, it->data.data(), it->data.size());
    it = g_host_copies.erase(it);
  }
  g_pending.erase(std::remove_if(g_pending.begin(), g_pending.end(),
                                 [](const PendingWork& w) { return w.seq <= at(g_host_done, w.stream); }),
                  g_pending.end());
}

void device_waits() {
  std::vector<uint64_t> all;
  for (auto& s : g_streams)
    if (s) join(all, s->clock);
  host_waits(all);
}

// A freed allocation is no longer named by pending work (its address may come back from a later malloc).
void forget_uses(const void* p) {
  for (PendingWork& w : g_pending) w.allocs.erase(std::remove(w.allocs.begin(), w.allocs.end(), uintptr_t(p)), w.allocs.end());
}

// Work on another stream, not waited for by the host nor ordered before `s`'s next work, that names the
// allocation starting at `start`; null if none.
const PendingWork* unordered_use(const StreamState& s, uintptr_t start) {
  for (const PendingWork& w : g_pending)
    if (w.stream != s.id && w.seq > at(g_host_done, w.stream) && w.seq > at(s.clock, w.stream) &&
        std::find(w.allocs.begin(), w.allocs.end(), start) != w.allocs.end())
      return &w;
  return nullptr;
}

}  // namespace

const Coords& coords() { return g_run.current ? g_run.current->coords : g_host_coords; }

void* dynamic_shared() { return g_dynamic.data(); }

int lane_id() { return g_run.current->linear % 32; }

void syncthreads() { yield(Wait::block); }

uint64_t warp_exchange(uint64_t bits, int src_lane) {
  Fiber* f = g_run.current;
  const int base = warp_of(*f) * 32;
  g_run.lanes[f->linear] = bits;
  yield(Wait::warp);  // every live lane has offered its value
  const int src = base + src_lane;
  if (src >= int(g_run.lanes.size()) || (*g_run.fibers)[src]->wait == Wait::done) {
    std::fprintf(stderr, "lora_emu: shuffle reads lane %d, which has exited or does not exist\n", src_lane);
    std::abort();
  }
  uint64_t out = g_run.lanes[src];
  yield(Wait::warp);  // every lane has read before any offers again
  return out;
}

void set_registers(const void* kernel, const char* name, int registers) {
  g_kernels.erase(kernel);
  kernel_info(kernel, name).registers = registers;
}

size_t recorded_kernels() {
  if (!g_registers_loaded) load_registers();
  return g_registers.size();
}

void record_work(cudaStream_t stream, const char* what, const std::vector<const void*>& named) {
  enqueue(stream, what, named);
}

bool set_schedule(const char* spec, std::string* why) {
  std::string ignored;
  return parse_schedule(spec, &g_schedule, why ? why : &ignored);
}

void run_grid(const void* kernel, const char* name, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
              void (*body)(void*), void* arg, const void* args, size_t args_bytes) {
  if (!check_launch(kernel, name, grid, block, smem)) return;
  {
    std::vector<const void*> named;  // the buffers the arguments point into, pending until a sync
    for (size_t off = 0; off + sizeof(void*) <= args_bytes; off += sizeof(void*)) {
      const void* v;
      std::memcpy(&v, static_cast<const unsigned char*>(args) + off, sizeof(v));
      named.push_back(v);
    }
    enqueue(stream, name, named);
  }
  const Schedule& sched = schedule();
  const KernelInfo& fixed = kernel_info(kernel, name);
  const int nthreads = int(block.x * block.y * block.z);
  while (int(g_fibers.size()) < nthreads) {
    auto f = std::make_unique<Fiber>();
    f->stack.reset(new char[kStackBytes]);
    getcontext(&f->start);
    f->start.uc_stack.ss_sp = f->stack.get();
    f->start.uc_stack.ss_size = kStackBytes;
    f->start.uc_link = nullptr;
    makecontext(&f->start, fiber_main, 0);
    g_fibers.push_back(std::move(f));
  }
  if (g_dynamic.size() < smem + 16) g_dynamic.resize(smem + 16);
  g_run.fibers = &g_fibers;
  g_run.body = body;
  g_run.arg = arg;
  g_run.lanes.assign(nthreads, 0);
  uint64_t mix = sched.seed ^ (g_launches++ * 0xD1B54A32D192ED03ull);
  const uint64_t launch_seed = splitmix(mix);
  if (!sched.compare) {
    run_blocks(grid, block, smem, fixed, sched.order, launch_seed, name);
    return;
  }
  // The test mode: the same launch from the same memory under three schedules; any difference is a race
  // (the kernels of cuda/ use no atomics, so each is deterministic). The forward run's result is kept.
  const std::vector<Region> regions = named_regions(args, args_bytes);
  const Snapshot before = take(regions);
  run_blocks(grid, block, smem, fixed, Order::forward, launch_seed, name);
  const Snapshot forward = take(regions);
  for (Order other : {Order::reverse, Order::seed}) {
    restore(regions, before);
    run_blocks(grid, block, smem, fixed, other, launch_seed, name);
    const std::string diff = first_difference(regions, forward);
    if (!diff.empty()) {
      g_fault = std::string(name) + " gives different results in forward and " +
                (other == Order::reverse ? "reverse" : "seeded") + " order of its threads and blocks: " + diff +
                "; a race (a missing __syncthreads or __syncwarp, or blocks that depend on each other); rerun with "
                "LORA_EMU_SCHEDULE=" +
                (other == Order::reverse ? std::string("reverse") : "seed:" + std::to_string(sched.seed)) +
                " to see it";
      g_last_error = cudaErrorLaunchFailure;
      break;
    }
  }
  restore(regions, forward);
}

// Device allocations, for the checks of copies and frees.
bool is_device(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  auto it = g_allocs.upper_bound(uintptr_t(p));
  if (it == g_allocs.begin()) return false;
  --it;
  return uintptr_t(p) >= it->first && uintptr_t(p) + bytes <= it->first + it->second;
}

}  // namespace lora_emu

using namespace lora_emu;

namespace {

cudaError_t fail(cudaError_t err, const std::string& why) {
  g_fault = why;
  g_last_error = err;
  return err;
}

cudaError_t device_alloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue, "null pointer to cudaMalloc");
  void* mem = std::malloc(bytes ? bytes : 1);
  if (!mem) return fail(cudaErrorMemoryAllocation, "host malloc failed");
  std::memset(mem, 0xFF, bytes);  // NaN bytes: reading memory never written shows up
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  g_allocs[uintptr_t(mem)] = bytes ? bytes : 1;
  g_allocated += bytes;
  *p = mem;
  return cudaSuccess;
}

std::map<uintptr_t, size_t> g_pool;  // cudaMallocAsync's live allocations
size_t g_pool_used = 0, g_pool_high = 0;

void pool_release(void* p) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  auto it = g_pool.find(uintptr_t(p));
  if (it == g_pool.end()) return;
  g_pool_used -= it->second;
  g_pool.erase(it);
}

cudaError_t device_free(void* p) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  auto it = g_allocs.find(uintptr_t(p));
  if (it == g_allocs.end()) return fail(cudaErrorInvalidValue, "free of a pointer cudaMalloc did not return");
  g_allocated -= it->second;
  g_allocs.erase(it);
  std::free(p);
  return cudaSuccess;
}

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "the emulation has one device, 0");
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "the emulation has one device, 0");
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "CPU emulation of CUDA (tests/emu)");
  prop->totalGlobalMem = kDeviceBytes;
  prop->sharedMemPerBlock = kDefaultSmem;
  prop->sharedMemPerBlockOptin = kMaxSmem;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->multiProcessorCount = 132;
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "the emulation has one device, 0");
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    default: return fail(cudaErrorInvalidValue, "device attribute " + std::to_string(int(attr)) + " is not emulated");
  }
}
cudaError_t cudaDeviceSynchronize(void) {
  device_waits();
  return cudaSuccess;
}

// Streams: every one is a StreamState (the asynchrony model's clocks); a created stream is blocking
// (ordered with the legacy default stream) unless made with cudaStreamNonBlocking.
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  stream_state(nullptr);
  auto s = std::make_unique<StreamState>();
  s->id = int(g_streams.size());
  s->blocking = !(flags & cudaStreamNonBlocking);
  *stream = reinterpret_cast<cudaStream_t>(s.get());
  g_streams.push_back(std::move(s));
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }
// A destroyed stream's work still completes; its state is kept for the clocks that name it.
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }

// Events: everything has run when a call returns, so an event records the host's clock, and the
// recording stream's clock for the asynchrony model.
struct EmuEvent {
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
  std::vector<uint64_t> clock;
};
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = reinterpret_cast<cudaEvent_t>(new EmuEvent);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<EmuEvent*>(event);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  auto* e = reinterpret_cast<EmuEvent*>(event);
  e->at = std::chrono::steady_clock::now();
  e->recorded = true;
  e->clock = ordered(stream).clock;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  join(stream_state(stream).clock, reinterpret_cast<EmuEvent*>(event)->clock);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  auto* e = reinterpret_cast<EmuEvent*>(event);
  if (!e->recorded) return fail(cudaErrorInvalidResourceHandle, "event never recorded");
  host_waits(e->clock);
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  auto* a = reinterpret_cast<EmuEvent*>(start);
  auto* b = reinterpret_cast<EmuEvent*>(end);
  if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle, "event never recorded");
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  host_waits(ordered(stream).clock);
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
  cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last_error; }
const char* cudaGetErrorString(cudaError_t err) {
  static thread_local std::string text;
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: text = "out of memory"; break;
    case cudaErrorInvalidValue: text = "invalid argument"; break;
    case cudaErrorInvalidConfiguration: text = "invalid configuration argument"; break;
    case cudaErrorInvalidDevice: text = "invalid device ordinal"; break;
    case cudaErrorLaunchFailure: text = "unspecified launch failure"; break;
    case cudaErrorIllegalState: text = "operation not permitted in the current state"; break;
    case cudaErrorLaunchOutOfResources: text = "too many resources requested for launch"; break;
    default: text = "emulated CUDA error " + std::to_string(int(err)); break;
  }
  if (!g_fault.empty()) text += " (" + g_fault + ")";
  return text.c_str();
}
const char* cudaGetErrorName(cudaError_t err) { return cudaGetErrorString(err); }

cudaError_t cudaMalloc(void** p, size_t bytes) { return device_alloc(p, bytes); }
// Stream-ordered allocations come from the device's default pool: its bytes in use and their high-water
// mark are kept for cudaMemPoolGetAttribute.
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) {
  cudaError_t err = device_alloc(p, bytes);
  if (err != cudaSuccess) return err;
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  g_pool[uintptr_t(*p)] = bytes;
  g_pool_used += bytes;
  g_pool_high = std::max(g_pool_high, g_pool_used);
  return cudaSuccess;
}
// cudaFree waits for the whole device first, as on the hardware, so it cannot free under running work;
// cudaFreeAsync is ordered on its stream only, so work on another stream that the free is not ordered
// after (cudaEventRecord there, cudaStreamWaitEvent here) and the host did not wait for may still use it.
cudaError_t cudaFree(void* p) {
  device_waits();
  forget_uses(p);
  pool_release(p);
  return device_free(p);
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream) {
  StreamState& s = ordered(stream);
  if (const PendingWork* w = p ? unordered_use(s, uintptr_t(p)) : nullptr)
    return fail(cudaErrorIllegalState,
                "cudaFreeAsync on stream " + std::to_string(s.id) + " of a buffer that " + w->what + " on stream " +
                    std::to_string(w->stream) + " may still use: nothing orders the free after it (synchronise, or "
                    "cudaEventRecord on stream " + std::to_string(w->stream) + " and cudaStreamWaitEvent on stream " +
                    std::to_string(s.id) + " before the free)");
  enqueue(stream, "cudaFreeAsync", {});
  forget_uses(p);
  pool_release(p);
  return device_free(p);
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  *total = kDeviceBytes;
  *free_bytes = kDeviceBytes - std::min(kDeviceBytes, g_allocated);
  return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  static int dummy;
  *pool = reinterpret_cast<cudaMemPool_t>(&dummy);
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr attr, void* value) {
  std::lock_guard<std::mutex> lock(g_mem_mutex);
  uint64_t v = 0;
  switch (attr) {
    case cudaMemPoolAttrUsedMemCurrent: case cudaMemPoolAttrReservedMemCurrent: v = g_pool_used; break;
    case cudaMemPoolAttrUsedMemHigh: case cudaMemPoolAttrReservedMemHigh: v = g_pool_high; break;
    default: return fail(cudaErrorInvalidValue, "cudaMemPoolGetAttribute: attribute not emulated");
  }
  std::memcpy(value, &v, sizeof(v));
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = is_device(dst, bytes), src_dev = is_device(src, bytes);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !src_dev; break;
    case cudaMemcpyDeviceToHost: ok = !dst_dev && src_dev; break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    default: break;
  }
  if (!ok)
    return fail(cudaErrorInvalidValue, "cudaMemcpy of " + std::to_string(bytes) + " bytes whose kind (" +
                                           std::to_string(int(kind)) + ") does not match its pointers (dst " +
                                           (dst_dev ? "device" : "host") + ", src " + (src_dev ? "device" : "host") +
                                           ", or a range past an allocation's end)");
  const uint64_t seq = enqueue(stream, "cudaMemcpyAsync", {dst, src});
  if (kind == cudaMemcpyDeviceToHost) {
    // Lands when the host waits for it; until then the host sees NaN bytes. Stricter than the device
    // for pageable host memory, where the call returns once the copy is done: code must not rely on it.
    const auto* from = static_cast<const unsigned char*>(src);
    g_host_copies.push_back(HostCopy{stream_state(stream).id, seq, dst, std::vector<unsigned char>(from, from + bytes)});
    std::memset(dst, 0xFF, bytes);
  } else {
    std::memmove(dst, src, bytes);
  }
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
  if (err == cudaSuccess) cudaStreamSynchronize(nullptr);
  return err;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && !is_device(p, bytes)) return fail(cudaErrorInvalidValue, "cudaMemset outside device allocations");
  std::memset(p, value, bytes);
  enqueue(stream, "cudaMemsetAsync", {p});
  return cudaSuccess;
}

// The kernel's static shared memory and, where ptxas reported them, its registers and the threads a block
// they allow.
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  const KernelInfo& info = kernel_info(func, "cudaFuncGetAttributes's kernel");
  std::memset(attr, 0, sizeof(*attr));
  attr->maxThreadsPerBlock = 1024;
  if (info.registers > 0)
    attr->maxThreadsPerBlock = int(std::min<uint64_t>(1024, 65536 / ((uint64_t(info.registers) * 32 + 255) / 256 * 256) * 32));
  attr->numRegs = std::max(info.registers, 0);
  attr->sharedSizeBytes = info.bytes;
  attr->maxDynamicSharedSizeBytes = int(kDefaultSmem - std::min(kDefaultSmem, info.bytes));
  auto raised = g_smem_attr.find(func);
  if (raised != g_smem_attr.end()) attr->maxDynamicSharedSizeBytes = raised->second;
  attr->ptxVersion = attr->binaryVersion = 90;
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    const size_t fixed = kernel_info(func, "cudaFuncSetAttribute's kernel").bytes;
    if (value < 0 || size_t(value) + fixed > kMaxSmem)
      return fail(cudaErrorInvalidValue, "dynamic shared memory " + std::to_string(value) + " with " +
                                             std::to_string(fixed) + " bytes of static __shared__ over the " +
                                             std::to_string(kMaxSmem) + "-byte limit of a block");
    g_smem_attr[func] = value;
  }
  return cudaSuccess;
}

}  // extern "C"
