#!/usr/bin/env bash
# Compiler launcher of lora_cuda when the emulation is built (CMakeLists.txt): runs the compile command
# given (ccache and nvcc, with -Xptxas=-v) and keeps ptxas's resource report, registers per kernel and
# architecture, beside the object as OBJECT.ptxas, for the emulation's register check (tests/emu/cuda_emu.h).
# Everything else on stderr passes through, so the build's output is what it was without -v.
# Usage: ptxas_log.sh COMMAND... (with -o OBJECT among its arguments)
set -uo pipefail
obj=""
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
  [[ "${args[i]}" == "-o" ]] && obj=${args[i + 1]}
done
log=$(mktemp)
"$@" 2>"$log"
rc=$?
grep -v '^ptxas info\|^    [0-9]* bytes stack frame' "$log" >&2
if [[ -n "$obj" && $rc -eq 0 ]]; then
  grep '^ptxas info    : \(Compiling entry\|Used\)' "$log" >"$obj.ptxas"
fi
rm -f "$log"
exit $rc
