// Tensor: a typed, shaped, contiguous buffer on one device, shared by reference counting.
// MatRef: a row-major matrix view into a tensor (rows x cols, consecutive rows `ld` elements apart),
// which lets ops read and write column blocks in place, e.g. q and v inside GPT-2's fused qkv.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lora {

enum class DType { f32, bf16, f16, i32 };
enum class Device { cpu, cuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* device_name(Device device);

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  std::vector<int64_t> shape;
  std::shared_ptr<void> owner;  // keeps the allocation alive; empty for borrowed views

  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  int ndim() const { return int(shape.size()); }
  bool empty() const { return data == nullptr; }
  std::string shape_str() const;  // "(2, 3, 4)"

  float* f32() const;      // checked: dtype must be f32
  int32_t* i32() const;    // checked: dtype must be i32
  Tensor view(std::vector<int64_t> new_shape) const;  // same data, numel must match
  Tensor rows(int64_t start, int64_t count) const;    // slice of the first dimension
};

// A host (CPU) tensor, zero-filled.
Tensor tensor_host(std::vector<int64_t> shape, DType dtype = DType::f32);

struct MatRef {
  void* data = nullptr;
  DType dtype = DType::f32;
  int64_t rows = 0, cols = 0, ld = 0;
  float* f32() const;  // checked: dtype must be f32
};

// The tensor as a matrix (numel / last dim, last dim).
MatRef mat(const Tensor& t);
// Columns [col0, col0 + ncols) of mat(t).
MatRef mat_cols(const Tensor& t, int64_t col0, int64_t ncols);

}  // namespace lora
