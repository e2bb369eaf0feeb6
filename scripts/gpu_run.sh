#!/usr/bin/env bash
# Run inside a bundle made by scripts/gpu_bundle.sh, on the GPU node: point the loader at the bundle's
# lib/ (then at the node's CUDA toolkit and Python's nvidia/* packages, cuDNN included, for whatever the
# bundle left out), print nvidia-smi, run the tests labelled `cuda` (exit code 77 counts as skipped), and,
# unless LORA_SANITIZE is 0, run the shared-memory ops of test_cuda_ops under compute-sanitizer's
# racecheck and every test under its memcheck (the node's compute-sanitizer, else the bundle's; the summary
# says NOT RUN where there is none).
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

# tests.txt (gpu_bundle.sh): name, label, executable in bin/, its arguments; tab-separated.
tests=()
declare -A exe_of=() args_of=()
while IFS=$'\t' read -r name tlabel exe args; do
  [[ $label == all || $tlabel == "$label" ]] || continue
  tests+=("$name")
  exe_of[$name]=$exe
  args_of[$name]=$args
done <"$here/tests.txt"
((${#tests[@]})) || { echo "no tests labelled $label in $here/tests.txt"; exit 1; }

# run_one TOOL NAME [ARGS...]: test NAME once, plainly (TOOL plain) or under compute-sanitizer's TOOL
# (memcheck, racecheck), with the test's ARGS; adds its line to the summary.
status=0
summary=()
declare -A plain_rc=()
run_one() {
  local tool=$1 name=$2 rc result log label
  shift 2
  local bin=$here/bin/${exe_of[$name]}
  local -a suite_args
  read -r -a suite_args <<<"${args_of[$name]}"
  set -- "${suite_args[@]}" "$@"
  if [[ $tool == plain ]]; then
    label=$name
    log=$logs/$name.log
    ldd "$bin" | grep 'not found' && echo "warning: $name has unresolved libraries" >&2
    LORA_CUDA_SYNC=${LORA_CUDA_SYNC:-0} "$bin" "$@" >"$log" 2>&1
    rc=$?
    plain_rc[$name]=$rc
  else
    label="$name under $tool${*:+ ($*)}"
    log=$logs/$name.$tool.log
    if [[ ${plain_rc[$name]:-} == 77 ]]; then
      summary+=("$label: skipped (the test skipped itself)")
      return
    fi
    "$sanitizer" --tool "$tool" --error-exitcode 99 "$bin" "$@" >"$log" 2>&1
    rc=$?
    # Some sandboxed nodes (gVisor) run CUDA but refuse the sanitizer: its failure, not the test's.
    if ((rc != 0)) && grep -q 'Device not supported' "$log"; then
      summary+=("$label: NOT RUN (compute-sanitizer: \"Device not supported\" on this node)")
      return
    fi
  fi
  case $rc in
    0) [[ $tool == plain ]] && result=passed || result=clean ;;
    77) result=skipped ;;
    *) result="FAILED (exit $rc)"; status=1 ;;
  esac
  summary+=("$label: $result")
  tail -n "$([[ $tool == plain ]] && echo 30 || echo 5)" "$log"
}
for name in "${tests[@]}"; do run_one plain "$name"; done

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
  summary+=("racecheck, memcheck: not run (LORA_SANITIZE=0)")
elif [[ -z $sanitizer ]]; then
  summary+=("racecheck, memcheck: NOT RUN, no compute-sanitizer found (hint: pip install nvidia-cuda-sanitizer-api where the bundle is made, then bundle again)")
else
  # racecheck first: shared-memory races are what the CPU emulation cannot show (it runs a block's
  # threads one at a time). Only the ops whose kernels share memory or shuffle within warps.
  if [[ " ${tests[*]} " == *" test_cuda_ops "* ]]; then
    echo "== racecheck with $sanitizer"
    run_one racecheck test_cuda_ops "-tc=*attention*,*layernorm*,*cross_entropy*,*sum_squares*,*embedding*"
  fi
  echo "== memcheck with $sanitizer"
  for name in "${tests[@]}"; do run_one memcheck "$name"; done
fi

echo "== summary (logs in $logs)"
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
exit $status
