#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test through ctest (README's second command).
#   bash scripts/test.sh            # every tier: unit, golden, cli, emu, slow (and cuda, skipped without a GPU)
#   bash scripts/test.sh --quick    # unit, golden and cli only: what to run on every change
# Any other arguments go to ctest (e.g. -R test_recipe, or -L emu).
# For the METEOR tests it also fetches METEOR 1.5's jar where Java is present but the jar is not: PyPI's
# pycocoevalcap wheel (~100 MB, seconds on a good connection) unpacked into build/pycocoevalcap, for the
# tests only (scripts/setup.sh and the build do not need it). Without network the METEOR tests report
# themselves skipped. LORA_METEOR_JAR set beforehand, or a pycocoevalcap python3 can import, is used as is.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
args=()
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    *) args+=("$a") ;;
  esac
done
if ((quick)); then
  bash scripts/setup.sh lora lora_tests
else
  bash scripts/setup.sh all
fi

meteor_jar_fetch() {
  command -v java >/dev/null || { echo "test: no java: the METEOR tests will be skipped"; return 0; }
  [ -n "${LORA_METEOR_JAR:-}" ] && return 0
  python3 -c "import pycocoevalcap.meteor" 2>/dev/null && return 0
  local target=build/pycocoevalcap jar=build/pycocoevalcap/pycocoevalcap/meteor/meteor-1.5.jar
  if [ ! -f "$jar" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      local sudo=""
      [ "$(id -u)" -ne 0 ] && sudo="sudo"
      echo "test: installing python3-pip to fetch METEOR's jar"
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null 2>&1 ||
        echo "test: could not install python3-pip"
    fi
    echo "test: fetching METEOR 1.5's jar (pip install --no-deps --target $target pycocoevalcap)"
    local t0=$SECONDS
    # --target installs into that folder only (Debian's pip allows it despite PEP 668).
    timeout 300 python3 -m pip install --quiet --disable-pip-version-check --no-deps --timeout 30 --retries 1 \
      --target "$target" pycocoevalcap >/dev/null 2>&1 || true
    [ -f "$jar" ] && echo "test: fetched in $((SECONDS - t0)) s"
  fi
  if [ -f "$jar" ]; then
    export LORA_METEOR_JAR="$PWD/$jar"
  else
    rm -rf "$target"
    echo "test: could not fetch pycocoevalcap (no network?): the METEOR tests will be skipped"
  fi
}
((quick)) || meteor_jar_fetch

cd build
if ((quick)); then
  ctest --output-on-failure --timeout 1200 -j"$(nproc)" -L '^(unit|golden|cli)$' "${args[@]}"
else
  ctest --output-on-failure --timeout 1200 -j"$(nproc)" "${args[@]}"
fi
