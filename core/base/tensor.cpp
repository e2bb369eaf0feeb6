// Tensor and MatRef helpers (see tensor.h).
#include "core/base/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/base/error.h"

namespace lora {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::i32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::i32: return "i32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::cpu ? "cpu" : "cuda"; }

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Tensor::shape_str() const {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ")";
  return os.str();
}

float* Tensor::f32() const {
  if (dtype != DType::f32) throw std::logic_error(std::string("tensor is ") + dtype_name(dtype) + ", not f32");
  return static_cast<float*>(data);
}

int32_t* Tensor::i32() const {
  if (dtype != DType::i32) throw std::logic_error(std::string("tensor is ") + dtype_name(dtype) + ", not i32");
  return static_cast<int32_t*>(data);
}

Tensor Tensor::view(std::vector<int64_t> new_shape) const {
  Tensor t = *this;
  t.shape = std::move(new_shape);
  if (t.numel() != numel())
    throw std::logic_error("view " + t.shape_str() + " does not match numel of " + shape_str());
  return t;
}

Tensor Tensor::rows(int64_t start, int64_t count) const {
  if (shape.empty() || start < 0 || count < 0 || start + count > shape[0])
    throw std::logic_error("rows out of range for " + shape_str());
  Tensor t = *this;
  int64_t row = shape[0] ? numel() / shape[0] : 0;
  t.data = static_cast<char*>(data) + size_t(start * row) * dtype_size(dtype);
  t.shape[0] = count;
  return t;
}

Tensor tensor_host(std::vector<int64_t> shape, DType dtype) {
  Tensor t;
  t.dtype = dtype;
  t.device = Device::cpu;
  t.shape = std::move(shape);
  size_t bytes = t.nbytes();
  void* p = std::calloc(bytes ? bytes : 1, 1);
  if (!p) fail_runtime("out of host memory allocating a tensor of " + std::to_string(bytes) + " bytes");
  t.owner = std::shared_ptr<void>(p, std::free);
  t.data = p;
  return t;
}

float* MatRef::f32() const {
  if (dtype != DType::f32) throw std::logic_error(std::string("matrix is ") + dtype_name(dtype) + ", not f32");
  return static_cast<float*>(data);
}

MatRef mat(const Tensor& t) {
  MatRef m;
  m.data = t.data;
  m.dtype = t.dtype;
  m.cols = t.shape.empty() ? 1 : t.shape.back();
  m.rows = m.cols ? t.numel() / m.cols : 0;
  m.ld = m.cols;
  return m;
}

MatRef mat_cols(const Tensor& t, int64_t col0, int64_t ncols) {
  MatRef m = mat(t);
  if (col0 < 0 || ncols < 0 || col0 + ncols > m.cols)
    throw std::logic_error("column block out of range for " + t.shape_str());
  m.data = static_cast<char*>(t.data) + size_t(col0) * dtype_size(t.dtype);
  m.cols = ncols;
  return m;
}

}  // namespace lora
