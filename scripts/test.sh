#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test through ctest (README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd build
ctest --output-on-failure --timeout 1200 -j"$(nproc)"
