#!/usr/bin/env bash
# Run inside a bundle made by scripts/gpu_bundle.sh, on the GPU node: point the loader at the bundle's
# lib/ (then at the node's CUDA toolkit and Python's nvidia/* packages, cuDNN included, for whatever the
# bundle left out), print nvidia-smi, run the tests labelled `cuda` (exit code 77 counts as skipped), and,
# if compute-sanitizer is there and LORA_SANITIZE is not 0, run them again under its memcheck tool.
# Logs go to $OUT when it is set (the device tool brings that folder back), else to ./gpu-logs.
#
# Usage: gpu_run.sh [LABEL]   (default cuda; "all" runs every test binary)
# Exit status: 0 if every test passed or skipped, 1 otherwise.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
label=${1:-cuda}
logs=${OUT:-$here/gpu-logs}
mkdir -p "$logs"

# The loader path: the bundle's lib/, the node's CUDA toolkit, Python's nvidia/* packages (gpu_libpath.sh).
[[ -f $here/gpu_libpath.sh ]] || { echo "error: $here/gpu_libpath.sh not found (gpu_bundle.sh copies it)" >&2; exit 1; }
source "$here/gpu_libpath.sh"
libpath=$(lora_gpu_libpath "$here")
export LD_LIBRARY_PATH=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

{
  echo "== $(date -u +%FT%TZ) on $(hostname)"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  nvidia-smi 2>&1 || echo "nvidia-smi failed"
} | tee "$logs/gpu_env.log"

tests=()
while IFS=$'\t' read -r name tlabel; do
  [[ $label == all || $tlabel == "$label" ]] && tests+=("$name")
done <"$here/tests.txt"
((${#tests[@]})) || { echo "no tests labelled $label in $here/tests.txt"; exit 1; }

status=0
summary=()
for name in "${tests[@]}"; do
  bin=$here/bin/$name
  ldd "$bin" | grep 'not found' && echo "warning: $name has unresolved libraries" >&2
  LORA_CUDA_SYNC=${LORA_CUDA_SYNC:-0} "$bin" >"$logs/$name.log" 2>&1
  rc=$?
  case $rc in
    0) result=passed ;;
    77) result=skipped ;;
    *) result="FAILED (exit $rc)"; status=1 ;;
  esac
  summary+=("$name: $result")
  tail -n 30 "$logs/$name.log"
done

if [[ ${LORA_SANITIZE:-1} != 0 ]] && command -v compute-sanitizer >/dev/null; then
  for name in "${tests[@]}"; do
    compute-sanitizer --tool memcheck --error-exitcode 99 "$here/bin/$name" >"$logs/$name.memcheck.log" 2>&1
    rc=$?
    case $rc in
      0) result=clean ;;
      77) result=skipped ;;
      *) result="FAILED (exit $rc)"; status=1 ;;
    esac
    summary+=("$name under memcheck: $result")
    tail -n 5 "$logs/$name.memcheck.log"
  done
fi

echo "== summary (logs in $logs)"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
exit $status
