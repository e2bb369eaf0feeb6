// Elementwise ops and bias: cast, fill, add, scale, bias_add, bias_backward, and the deterministic
// column-reduction finish (add_partials) that the norms and bias_backward share.
// Every tensor may be f32, bf16 or f16; arithmetic is fp32. bias_backward accumulates (+=).
#include "cuda/ops.cuh"

namespace lora {
namespace cuda_ops {

static constexpr int kThreads = 256;
static constexpr int kColTile = 32;  // columns per block in column reductions
static constexpr int kRowLanes = 8;  // threads along rows per block in column reductions

static __global__ void cast_kernel(void* dst, DType dt, const void* src, DType st, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_elem(dst, dt, i, load_elem(src, st, i));
}

static __global__ void fill_kernel(void* dst, DType dt, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_elem(dst, dt, i, value);
}

static __global__ void add_kernel(void* y, DType ty, const void* a, DType ta, const void* b, DType tb,
                                  int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_elem(y, ty, i, load_elem(a, ta, i) + alpha * load_elem(b, tb, i));
}

static __global__ void scale_kernel(void* y, DType ty, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store_elem(y, ty, i, alpha * load_elem(y, ty, i));
}

// out (rows, cols, ld) += bias (cols)
static __global__ void bias_add_kernel(MatRef out, const void* bias, DType tb) {
  int64_t n = out.rows * out.cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i / out.cols, c = i % out.cols;
    int64_t o = r * out.ld + c;
    store_elem(out.data, out.dtype, o, load_elem(out.data, out.dtype, o) + load_elem(bias, tb, c));
  }
}

// partials[chunk, c] = sum over the chunk's rows of dout[r, c]. Block (kColTile, kRowLanes), grid (col tiles, chunks).
static __global__ void column_sum_partials_kernel(float* partials, MatRef dout, int64_t rows_per_chunk) {
  __shared__ float acc[kRowLanes][kColTile + 1];
  int64_t c = int64_t(blockIdx.x) * kColTile + threadIdx.x;
  int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  int64_t r1 = min(r0 + rows_per_chunk, dout.rows);
  float s = 0.0f;
  if (c < dout.cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) s += load_elem(dout.data, dout.dtype, r * dout.ld + c);
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < dout.cols) {
    for (int k = 1; k < kRowLanes; ++k) s += acc[k][threadIdx.x];
    partials[int64_t(blockIdx.y) * dout.cols + c] = s;
  }
}

static __global__ void add_partials_kernel(void* dst, DType dt, const float* partials, int chunks, int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int k = 0; k < chunks; ++k) s += partials[int64_t(k) * C + c];
    store_elem(dst, dt, c, load_elem(dst, dt, c) + s);
  }
}

static void launch_cast(cudaStream_t stream, void* dst, DType dt, const void* src, DType st, int64_t n) {
  LORA_LAUNCH(cast_kernel, grid_for(n, kThreads), kThreads, 0, stream)(dst, dt, src, st, n);
  LAUNCH_CHECK();
}

int column_chunks(int64_t rows) {
  int64_t chunks = (rows + 255) / 256;  // about 256 rows a block, at most 64 chunks to finish
  if (chunks > 64) chunks = 64;
  return int(chunks < 1 ? 1 : chunks);
}

void cast(CudaContext& ctx, void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (n == 0) return;
  if (dst_dtype == src_dtype) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * dtype_size(dst_dtype), cudaMemcpyDeviceToDevice, ctx.stream));
    return;
  }
  cuda_require(cuda_is_float(dst_dtype) && cuda_is_float(src_dtype), "cast",
               std::string("cannot convert ") + dtype_name(src_dtype) + " to " + dtype_name(dst_dtype));
  launch_cast(ctx.stream, dst, dst_dtype, src, src_dtype, n);
}

void fill(CudaContext& ctx, Tensor& t, float value) {
  cuda_require(t.device == Device::cuda, "fill", "tensor is not on the GPU");
  int64_t n = t.numel();
  if (n == 0) return;
  if (t.dtype == DType::i32) {
    cuda_require(value == 0.0f, "fill", "an i32 tensor can only be filled with 0");
    CUDA_CHECK(cudaMemsetAsync(t.data, 0, t.nbytes(), ctx.stream));
    return;
  }
  LORA_LAUNCH(fill_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(t.data, t.dtype, n, value);
  LAUNCH_CHECK();
}

void add(CudaContext& ctx, Tensor& y, const Tensor& a, const Tensor& b, float alpha) {
  int64_t n = y.numel();
  cuda_require(a.numel() == n && b.numel() == n, "add",
               "numel differs: y " + y.shape_str() + ", a " + a.shape_str() + ", b " + b.shape_str());
  cuda_require(cuda_is_float(y.dtype) && cuda_is_float(a.dtype) && cuda_is_float(b.dtype), "add", "float tensors only");
  if (n == 0) return;
  LORA_LAUNCH(add_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(y.data, y.dtype, a.data, a.dtype, b.data, b.dtype,
                                                                   n, alpha);
  LAUNCH_CHECK();
}

void scale(CudaContext& ctx, Tensor& y, float alpha) {
  cuda_require(cuda_is_float(y.dtype), "scale", "float tensors only");
  int64_t n = y.numel();
  if (n == 0) return;
  LORA_LAUNCH(scale_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(y.data, y.dtype, n, alpha);
  LAUNCH_CHECK();
}

void bias_add(CudaContext& ctx, const MatRef& out, const Tensor& bias) {
  cuda_require(bias.numel() == out.cols, "bias_add",
               "bias " + bias.shape_str() + " does not match " + std::to_string(out.cols) + " columns");
  cuda_require(cuda_is_float(out.dtype) && cuda_is_float(bias.dtype), "bias_add", "float tensors only");
  int64_t n = out.rows * out.cols;
  if (n == 0) return;
  LORA_LAUNCH(bias_add_kernel, grid_for(n, kThreads), kThreads, 0, ctx.stream)(out, bias.data, bias.dtype);
  LAUNCH_CHECK();
}

void add_partials(CudaContext& ctx, void* dst, DType dst_dtype, const float* partials, int chunks, int64_t C) {
  LORA_LAUNCH(add_partials_kernel, grid_for(C, kThreads), kThreads, 0, ctx.stream)(dst, dst_dtype, partials, chunks, C);
  LAUNCH_CHECK();
}

void bias_backward(CudaContext& ctx, Tensor& dbias, const MatRef& dout) {
  if (dbias.empty()) return;
  cuda_require(dbias.numel() == dout.cols, "bias_backward",
               "dbias " + dbias.shape_str() + " does not match " + std::to_string(dout.cols) + " columns");
  cuda_require(cuda_is_float(dout.dtype) && cuda_is_float(dbias.dtype), "bias_backward", "float tensors only");
  if (dout.cols == 0 || dout.rows == 0) return;
  int chunks = column_chunks(dout.rows);
  int64_t rows_per_chunk = (dout.rows + chunks - 1) / chunks;
  ScratchBuffer partials(size_t(chunks) * dout.cols * sizeof(float), ctx.stream);
  dim3 grid(unsigned((dout.cols + kColTile - 1) / kColTile), unsigned(chunks));
  LORA_LAUNCH(column_sum_partials_kernel, grid, dim3(kColTile, kRowLanes), 0, ctx.stream)(partials.f32(), dout, rows_per_chunk);
  LAUNCH_CHECK();
  add_partials(ctx, dbias.data, dbias.dtype, partials.f32(), chunks, dout.cols);
}

}  // namespace cuda_ops
}  // namespace lora
