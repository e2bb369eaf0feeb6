#!/usr/bin/env bash
# Installs what lora needs on Debian 12 (as root, or with sudo), then configures and builds.
#   bash scripts/setup.sh                  # install missing packages, build build/lora
#   bash scripts/setup.sh TARGET...        # the same, building those targets (scripts/test.sh: all, or
#                                          # lora and lora_tests for --quick)
#   bash scripts/setup.sh --deps-only      # install missing packages only (scripts/test_sanitized.sh)
# Skips apt-get when every package is already installed. The CUDA backend is built when nvcc is found
# (PATH or /usr/local/cuda/bin); without it the build is CPU-only. ccache, when installed, caches
# compilations across builds and clones.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libyaml-cpp-dev libcli11-dev libsentencepiece-dev libhdf5-dev
          doctest-dev nlohmann-json3-dev libopenblas-dev libutf8proc-dev python3 ccache)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ "${1:-}" = --deps-only ] && exit 0

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
jobs=$(nproc)
targets=("${@:-lora}")
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
t0=$SECONDS
cmake --build build -j"$jobs" --target "${targets[@]}"
echo "setup: built ${targets[*]} in build/ ($((SECONDS - t0)) s)"
