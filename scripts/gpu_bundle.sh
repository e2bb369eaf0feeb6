#!/usr/bin/env bash
# Pack a CMake build (with the CUDA backend) into a self-contained folder that runs on a GPU node with no
# package manager: bin/ holds `lora` and the test binaries, lib/ every non-system shared library they
# load (from ldd: yaml-cpp, hdf5, openblas, sentencepiece, cudart, cublas/cublasLt, libstdc++, libgcc_s
# ...; never libc, ld-linux, libdl, libpthread, librt, libm or the driver's libcuda; utf8proc is linked
# statically and needs nothing), tests.txt the test names with their ctest labels, and gpu_run.sh to
# run them there.
#
# Usage: scripts/gpu_bundle.sh [--without-cuda-libs] [--without-sanitizer] [BUILD_DIR [BUNDLE_DIR]]
#        (defaults: build, gpu-bundle)
#   --without-cuda-libs leaves out cuBLAS/cuBLASLt, nvrtc, nvJitLink and cuDNN (libcublasLt alone is ~540 MB;
#   libcudart, small and version-exact, stays) for a
#   node that has the toolkit: gpu_run.sh then finds them under /usr/local/cuda or in Python's nvidia/
#   packages. Use it when the bundle must travel small (the device tool carries at most 64 MiB).
#   --without-sanitizer leaves out compute-sanitizer (36 MiB), for nodes that have their own (the device
#   tool's image does).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
without_cuda=0 with_sanitizer=1
while [[ ${1:-} == --* ]]; do
  case $1 in
    --without-cuda-libs) without_cuda=1 ;;
    --without-sanitizer) with_sanitizer=0 ;;
    *) echo "error: unknown option '$1' (expected --without-cuda-libs or --without-sanitizer)" >&2; exit 2 ;;
  esac
  shift
done
build=$(realpath -m "${1:-$root/build}")
bundle=$(realpath -m "${2:-$root/gpu-bundle}")

die() {
  echo "error: $1" >&2
  [[ -n ${2:-} ]] && echo "  hint: $2" >&2
  exit 1
}

[[ -x $build/lora ]] || die "no lora binary in $build" "build first: cmake -S . -B build && cmake --build build -j"
grep -q '^LORA_HAVE_CUDA:INTERNAL=ON\|CMAKE_CUDA_COMPILER:.*nvcc' "$build/CMakeCache.txt" 2>/dev/null ||
  echo "warning: $build does not look like a CUDA build (no nvcc in CMakeCache.txt)" >&2
arch=$(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null)
if [[ -n $arch && $arch != *90* ]]; then
  echo "warning: $build compiles CUDA for sm_$arch only: no sm_90 code for H100/H200 (PTX JIT at best, no bf16" \
    "tensor cores below sm_80)" >&2
  echo "  hint: cmake -S . -B $build -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build $build -j" >&2
fi
command -v ldd >/dev/null || die "ldd not found" "install libc-bin"

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"

# The test executables (tests/CMakeLists.txt); lora_tests_emu (the CPU emulation of CUDA) is for machines
# without a GPU: not packed.
binaries=("$build/lora")
for t in lora_tests lora_tests_cuda; do
  [[ -x $build/tests/$t ]] && binaries+=("$build/tests/$t")
done
for b in "${binaries[@]}"; do cp "$b" "$bundle/bin/"; done

# Libraries the node's own libc provides (and must provide: they are tied to its loader and kernel), and
# the driver's libraries, which must match the node's kernel module.
is_system_lib() {
  case $1 in
    linux-vdso.so* | ld-linux*.so* | libc.so* | libdl.so* | libpthread.so* | librt.so* | libm.so* | \
      libutil.so* | libresolv.so* | libcuda.so* | libnvidia-*.so*) return 0 ;;
  esac
  return 1
}
is_cuda_toolkit_lib() {
  case $1 in
    libcublas.so* | libcublasLt.so* | libnvrtc*.so* | libnvJitLink.so* | libcudnn*.so*) return 0 ;;
  esac
  return 1
}

missing=0
declare -A copied=()
for b in "${binaries[@]}"; do
  while read -r name arrow path _; do
    [[ $arrow == "=>" ]] || continue
    is_system_lib "$name" && continue
    ((without_cuda)) && is_cuda_toolkit_lib "$name" && continue
    if [[ $path == not ]]; then
      echo "error: $(basename "$b") needs $name, which ldd cannot find" >&2
      missing=1
      continue
    fi
    [[ -n ${copied[$name]:-} ]] && continue
    cp -L "$path" "$bundle/lib/$name"
    copied[$name]=$path
  done < <(ldd "$b")
done
((missing == 0)) || die "some libraries are missing" "set LD_LIBRARY_PATH so that ldd finds them, then rerun"

# The tests gpu_run.sh runs, read from ctest: name, label, executable (in bin/) and its arguments, one
# tab-separated line each, for the labels that run on a GPU node (cuda) or need no build tree there.
command -v ctest >/dev/null || die "ctest not found" "install cmake"
ctest --test-dir "$build" --show-only=json-v1 | python3 -c '
import json, os, sys
keep = {"cuda", "unit", "cli", "golden"}
for t in json.load(sys.stdin)["tests"]:
    labels = [v for p in t.get("properties", []) if p["name"] == "LABELS" for v in p["value"]]
    cmd = t.get("command", [])
    if not cmd or os.path.basename(cmd[0]) not in ("lora_tests", "lora_tests_cuda"):
        continue
    for label in labels:
        if label in keep:
            print("\t".join([t["name"], label, os.path.basename(cmd[0])] + cmd[1:]))
' >"$bundle/tests.txt"
[[ -s $bundle/tests.txt ]] || die "no tests found in $build" "build the tests first: cmake --build $build"

cp "$root/scripts/gpu_run.sh" "$bundle/gpu_run.sh"
chmod +x "$bundle/gpu_run.sh"
# The session driver, the loader-path helper, the peer benchmark, the loss check and the golden fixtures
# the cuda tests read.
for f in gpu_session.sh gpu_libpath.sh bench_gpu.sh bench_gpu.py loss_parity.sh; do
  [[ -f $root/scripts/$f ]] && cp "$root/scripts/$f" "$bundle/"
done
mkdir -p "$bundle/fixtures" && cp -r "$root/tests/fixtures/golden" "$bundle/fixtures/"
# The quickstart recipe and its data, for loss_parity.sh (the recipe finds its data at ../data).
mkdir -p "$bundle/configs" "$bundle/data" && cp "$root/configs/quickstart.yaml" "$bundle/configs/" &&
  cp -r "$root/data/quickstart" "$bundle/data/"
echo "$without_cuda" >"$bundle/without_cuda_libs"
# compute-sanitizer, for gpu_run.sh's memcheck pass: GPU nodes often have the CUDA runtime without the
# toolkit's tools. Taken from the toolkit here or from PyPI's nvidia-cuda-sanitizer-api wheel
# (pip install nvidia-cuda-sanitizer-api: nvidia/cu13/compute-sanitizer in site-packages); its docs,
# headers and 32-bit (x86/) parts stay behind (about 37 MB unpacked).
sanitizer=
((with_sanitizer)) && for dir in /usr/local/cuda/compute-sanitizer $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null |
  xargs -n1 printf '%s/nvidia/cu13/compute-sanitizer\n' 2>/dev/null); do
  [[ -x $dir/compute-sanitizer ]] && { sanitizer=$dir; break; }
done
if [[ -n $sanitizer ]]; then
  mkdir -p "$bundle/compute-sanitizer"
  find "$sanitizer" -maxdepth 1 -type f -exec cp {} "$bundle/compute-sanitizer/" \;
  echo "compute-sanitizer: from $sanitizer ($("$sanitizer/compute-sanitizer" --version 2>/dev/null | sed -n 's/^Version //p'))"
elif ((with_sanitizer)); then
  echo "warning: no compute-sanitizer here: the bundle's memcheck pass runs only where the node has one" >&2
  echo "  hint: pip install nvidia-cuda-sanitizer-api (PyPI; CUDA 13's tool), then bundle again" >&2
fi
# What the bundle was built from, for the figures a GPU session reports: the source commit (with
# "-dirty" for uncommitted changes), and a warning here if a source file is newer than the binary.
{
  echo "source: $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "built: $(date -u -r "$build/lora" +%FT%TZ) in $build (CUDA architectures ${arch:-unknown})"
} >"$bundle/version.txt"
newer=$(find "$root/core" "$root/cuda" "$root/cli" -newer "$build/lora" -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) 2>/dev/null | head -n 3)
[[ -z $newer ]] || echo "warning: sources newer than $build/lora (rebuild first?): $(echo $newer)" >&2

size=$(du -sm "$bundle" | cut -f1)
echo "gpu bundle: $bundle (${size} MiB; ${#binaries[@]} binaries, ${#copied[@]} libraries)"
if ((size > 64)); then
  if ((without_cuda)); then
    echo "note: over 64 MiB unpacked; carry it packed: tar -czf $build/gpu-bundle.tar.gz -C $(dirname "$bundle") $(basename "$bundle") (docs/GPU.md)" >&2
  else
    echo "note: over 64 MiB; the device tool will not carry it. Rerun with --without-cuda-libs, then tar.gz it" >&2
  fi
fi
