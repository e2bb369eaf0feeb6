#!/usr/bin/env bash
# Installs what lora needs on Debian 12 (as root, or with sudo), configures, builds, and puts lora on PATH.
#   bash scripts/setup.sh                  # install missing packages, build build/lora, install it into
#                                          # /usr/local/bin (cmake --install; sudo when not root)
#   bash scripts/setup.sh --prefix DIR     # the same, installing into DIR/bin (e.g. --prefix ~/.local)
#   bash scripts/setup.sh --no-install     # build build/lora only
#   bash scripts/setup.sh TARGET...        # build those targets, install nothing (scripts/test.sh: all, or
#                                          # lora and lora_tests for --quick); with --prefix, install too
#   bash scripts/setup.sh --deps-only      # install missing packages only (scripts/test_sanitized.sh)
# Skips apt-get when every package is already installed. The CUDA backend is built when nvcc is found
# (PATH or /usr/local/cuda/bin); without it the build is CPU-only. ccache, when installed, caches
# compilations across builds and clones. After a rebuild, run it again to refresh the installed lora.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=""
install=auto
deps_only=0
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || { echo "setup: --prefix needs a directory, e.g. --prefix ~/.local" >&2; exit 2; }
              prefix=$2; install=yes; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; install=yes; shift ;;
    --no-install) install=no; shift ;;
    --deps-only) deps_only=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "setup: unknown option '$1' (options: --prefix DIR, --no-install, --deps-only, then build targets)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
# Named targets are a developer's or test.sh's build: no install unless --prefix asks for one.
if [ "$install" = auto ]; then
  if [ ${#targets[@]} -eq 0 ]; then install=yes; else install=no; fi
fi
[ ${#targets[@]} -gt 0 ] || targets=(lora)

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

[ "$deps_only" = 1 ] && exit 0

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
jobs=$(nproc)
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
t0=$SECONDS
cmake --build build -j"$jobs" --target "${targets[@]}"
echo "setup: built ${targets[*]} in build/ ($((SECONDS - t0)) s)"

if [ "$install" = yes ]; then
  [[ " ${targets[*]} " == *" lora "* || " ${targets[*]} " == *" all "* ]] || cmake --build build -j"$jobs" --target lora
  prefix=${prefix:-/usr/local}
  SUDO=""
  mkdir -p "$prefix" 2>/dev/null || true
  if [ ! -w "$prefix" ] || { [ -d "$prefix/bin" ] && [ ! -w "$prefix/bin" ]; }; then
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
      SUDO="sudo"
    else
      echo "setup: cannot write to $prefix; build/lora is built. Install it where you can write:" >&2
      echo "  bash scripts/setup.sh --prefix ~/.local" >&2
      exit 1
    fi
  fi
  $SUDO cmake --install build --prefix "$prefix" >/dev/null
  bin=$(cd "$prefix/bin" && pwd)
  echo "setup: installed $bin/lora"
  if [ "$(command -v lora 2>/dev/null)" != "$bin/lora" ]; then
    echo "setup: $bin is not first on PATH, so \`lora\` will not run this build; add it, for this shell and the next:"
    echo "  export PATH=\"$bin:\$PATH\"; echo 'export PATH=\"$bin:\$PATH\"' >> ~/.bashrc"
  fi
else
  echo "setup: build/lora is not installed; \`bash scripts/setup.sh\` (or --prefix DIR) puts lora on PATH"
fi
