#!/usr/bin/env bash
# Run inside a bundle made by scripts/gpu_bundle.sh, on the GPU node: point the loader at the bundle's
# lib/ (then at the node's CUDA toolkit and Python's nvidia/* packages, cuDNN included, for whatever the
# bundle left out), print nvidia-smi, run the tests labelled `cuda` (exit code 77 counts as skipped), and,
# unless LORA_SANITIZE is 0, run them again under compute-sanitizer's memcheck tool (the bundle's copy, or
# the node's; the summary says NOT RUN where there is none).
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

# run_tests MODE: every test once, plainly (MODE plain) or under compute-sanitizer's memcheck (memcheck).
status=0
summary=()
declare -A plain_rc=()
run_tests() {
  local mode=$1 name bin rc result log
  for name in "${tests[@]}"; do
    bin=$here/bin/$name
    if [[ $mode == memcheck && ${plain_rc[$name]} == 77 ]]; then
      summary+=("$name under memcheck: skipped (the test skipped itself)")
      continue
    fi
    if [[ $mode == plain ]]; then
      ldd "$bin" | grep 'not found' && echo "warning: $name has unresolved libraries" >&2
      log=$logs/$name.log
      LORA_CUDA_SYNC=${LORA_CUDA_SYNC:-0} "$bin" >"$log" 2>&1
    else
      log=$logs/$name.memcheck.log
      "$sanitizer" --tool memcheck --error-exitcode 99 "$bin" >"$log" 2>&1
    fi
    rc=$?
    [[ $mode == plain ]] && plain_rc[$name]=$rc
    # Some sandboxed nodes (gVisor) run CUDA but refuse the sanitizer: its failure, not the test's.
    if [[ $mode == memcheck && $rc != 0 ]] && grep -q 'Device not supported' "$log"; then
      summary+=("$name under memcheck: NOT RUN (compute-sanitizer: \"Device not supported\" on this node)")
      continue
    fi
    case $rc in
      0) [[ $mode == plain ]] && result=passed || result=clean ;;
      77) result=skipped ;;
      *) result="FAILED (exit $rc)"; status=1 ;;
    esac
    [[ $mode == plain ]] && summary+=("$name: $result") || summary+=("$name under memcheck: $result")
    tail -n "$([[ $mode == plain ]] && echo 30 || echo 5)" "$log"
  done
}
run_tests plain

# compute-sanitizer: on PATH, in the bundle (gpu_bundle.sh copies one), in the CUDA toolkit, or from
# PyPI's nvidia-cuda-sanitizer-api in the node's python.
sanitizer=$(command -v compute-sanitizer || true)
python=$(command -v python3 || true)
for dir in "$here/compute-sanitizer" /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
  [[ -z $sanitizer && -x $dir/compute-sanitizer ]] && sanitizer=$dir/compute-sanitizer
done
if [[ -z $sanitizer && -n $python ]]; then
  sanitizer=$("$python" -c 'import site, os
for s in site.getsitepackages() + [site.getusersitepackages()]:
    p = os.path.join(s, "nvidia", "cu13", "compute-sanitizer", "compute-sanitizer")
    if os.access(p, os.X_OK):
        print(p); break' 2>/dev/null)
fi
if [[ ${LORA_SANITIZE:-1} == 0 ]]; then
  summary+=("memcheck: not run (LORA_SANITIZE=0)")
elif [[ -z $sanitizer ]]; then
  summary+=("memcheck: NOT RUN, no compute-sanitizer found (hint: pip install nvidia-cuda-sanitizer-api where the bundle is made, then bundle again)")
else
  echo "== memcheck with $sanitizer"
  run_tests memcheck
fi

echo "== summary (logs in $logs)"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
exit $status
