#!/usr/bin/env bash
# The sanitizer tier (run by hand; not in CI yet, until its cold cost beside scripts/test.sh is measured):
# builds with clang under AddressSanitizer and UndefinedBehaviorSanitizer in build-san/ (CPU only),
# then runs the unit and cli suites there and every libFuzzer harness of tests/fuzz/ for
# LORA_FUZZ_SECONDS seconds each (default 60) from its seed corpus.
# The two slowest cli suites (test_cli, test_init_from: 5 of the tier's 8 minutes under ASan) are left to
# the plain build; `bash scripts/test_sanitized.sh -E NONE` runs them too.
#   bash scripts/test_sanitized.sh              # all of it
#   bash scripts/test_sanitized.sh -R fuzz_gguf # any arguments go to ctest
# Any sanitizer report fails the test that hit it (the build aborts on the first report). For hours of
# fuzzing use scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --deps-only
if ! command -v clang++ >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "test_sanitized: installing clang"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang >/dev/null
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build-san -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DLORA_CUDA=OFF -DLORA_SANITIZE=address,undefined -DLORA_FUZZ=ON \
  -DLORA_FUZZ_SECONDS="${LORA_FUZZ_SECONDS:-60}" "${launcher[@]}" >/dev/null
t0=$SECONDS
cmake --build build-san -j"$(nproc)" --target lora lora_tests \
  $(cd tests/fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//')
echo "test_sanitized: built in $((SECONDS - t0)) s"
export ASAN_OPTIONS="abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"
cd build-san
exclude=(-E '^(test_cli|test_init_from)$')
[[ " $* " == *" -E "* ]] && exclude=()
ctest --output-on-failure --timeout 1200 -j"$(nproc)" -L '^(unit|cli|fuzz)$' "${exclude[@]}" "$@"
