// Backend selection: --device cuda|cpu|ref|auto (auto: CUDA when a device answers, else the fast CPU
// backend; ref: the CPU reference the tests hold every backend to). A missing
// driver makes cudaGetDeviceCount fail rather than return 0: any error counts as "no device". With auto,
// the CPU fall-back is silent on a machine without an NVIDIA driver or device (or a build without CUDA)
// and a one-line notice says why where a driver is present but no device can be used.
#include "core/ops/backend.h"

#include <cstdio>
#include <stdexcept>

#include "core/base/error.h"
#include "core/ops/cpu_kernels.h"

namespace lora {

#if defined(LORA_HAVE_CUDA)
// cuda/backend_cuda.cu: nullptr and a reason when no device is usable.
std::unique_ptr<Backend> backend_cuda_create(std::string* why_not, DType activations);
bool cuda_driver_absent();
#else
static std::unique_ptr<Backend> backend_cuda_create(std::string* why_not, DType) {
  *why_not = "this build of lora has no CUDA backend (nvcc was not found at build time)";
  return nullptr;
}
static bool cuda_driver_absent() { return true; }  // nothing to say about CUDA in a CPU-only build
#endif

void Backend::matmul_epilogue(Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b,
                              Epilogue epilogue, const Tensor& bias, Tensor& aux) {
  auto check = [](bool ok, const std::string& what) {
    if (!ok) throw std::logic_error("matmul_epilogue: " + what);
  };
  check(epilogue == Epilogue::bias || aux.shape == out.shape,
        "aux must have out's shape " + out.shape_str() + ", got " + aux.shape_str());
  check(epilogue != Epilogue::bias || !bias.empty(), "the bias epilogue needs a bias");
  check(epilogue != Epilogue::dgelu || bias.empty(), "dgelu takes no bias");
  switch (epilogue) {
    case Epilogue::bias:
      matmul(mat(out), mat(a), mat(b), trans_a, trans_b, 1.0f, 0.0f);
      bias_add(mat(out), bias);
      return;
    case Epilogue::bias_gelu:
      matmul(mat(aux), mat(a), mat(b), trans_a, trans_b, 1.0f, 0.0f);
      if (!bias.empty()) bias_add(mat(aux), bias);
      gelu_forward(out, aux, GeluKind::tanh);
      return;
    case Epilogue::dgelu:
      matmul(mat(out), mat(a), mat(b), trans_a, trans_b, 1.0f, 0.0f);
      gelu_backward(out, out, aux, GeluKind::tanh);
      return;
  }
}

std::unique_ptr<Backend> backend_create(const std::string& device, bool quiet, DType activations) {
  if (device == "cpu") return backend_cpu_fast_create();
  if (device == "ref") return backend_cpu_create();
  if (device != "cuda" && device != "auto")
    fail_usage("unknown device '" + device + "'", "use --device cpu, ref, cuda or auto");
  std::string why_not;
  auto cuda = backend_cuda_create(&why_not, activations);
  if (cuda) return cuda;
  if (device == "cuda")
    fail_runtime("--device cuda was asked for but no CUDA device is usable: " + why_not,
                 "check nvidia-smi and LD_LIBRARY_PATH, or run with --device cpu");
  if (!quiet && !cuda_driver_absent())
    std::fprintf(stderr, "notice: no CUDA device (%s); running on the CPU\n", why_not.c_str());
  return backend_cpu_fast_create();
}

bool cuda_device_available(std::string* why_not) {
  std::string reason;
  bool ok = backend_cuda_create(&reason, DType::f32) != nullptr;
  if (why_not) *why_not = reason;
  return ok;
}

}  // namespace lora
