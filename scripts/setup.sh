#!/usr/bin/env bash
# Installs what lora needs on Debian 12 (as root, or with sudo), then configures and builds.
#   bash scripts/setup.sh            # install missing packages and build into build/
# Skips apt-get when every package is already installed. The CUDA backend is built when nvcc is found
# (PATH or /usr/local/cuda/bin); without it the build is CPU-only.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libyaml-cpp-dev libcli11-dev libsentencepiece-dev libhdf5-dev
          doctest-dev nlohmann-json3-dev libopenblas-dev libutf8proc-dev python3)
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

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "setup: built build/lora"
