#!/usr/bin/env bash
# Prints the loader path for a bundle made by scripts/gpu_bundle.sh on a GPU node without a package
# manager: the bundle's lib/, then the node's CUDA toolkit, then the nvidia/* packages of the node's
# python3 (PyTorch's wheels bring cuDNN, cuBLAS and the CUDA runtime there) for whatever the bundle left
# out (gpu_bundle.sh --without-cuda-libs). Nothing is exported: callers decide whom the path applies to
# (gpu_run.sh sets LD_LIBRARY_PATH for the tests; bench_gpu.sh hands it to `lora` alone, never to PyTorch).
#
# Usage: gpu_libpath.sh BUNDLE_DIR      (also `source`able: defines lora_gpu_libpath BUNDLE_DIR)
lora_gpu_libpath() {
  local path=$1/lib dir site pkg python
  for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $dir ]] && path+=:$dir
  done
  python=$(command -v python3 || true)
  if [[ -n $python ]]; then
    while IFS= read -r site; do
      for pkg in cudnn cublas cuda_runtime cu13 cuda_nvrtc nvjitlink; do
        for dir in "$site"/nvidia/$pkg/lib "$site"/nvidia/$pkg/lib64; do
          [[ -d $dir ]] && path+=:$dir
        done
      done
    done < <("$python" -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
  fi
  echo "$path"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  [[ -n ${1:-} ]] || { echo "usage: gpu_libpath.sh BUNDLE_DIR" >&2; exit 2; }
  lora_gpu_libpath "$(cd "$1" && pwd)"
fi
