#!/usr/bin/env bash
# The peer benchmark's standard set on a GPU node (docs/GPU.md, "4. The benchmark"): scripts/bench_gpu.py
# for GPT-2 Medium with 512-token examples, Medium with E2E-like lengths, and GPT-2 Large with 512-token
# examples, each `lora train` from a bundle made by scripts/gpu_bundle.sh against HF transformers + PEFT
# in the node's python3.
# The loader path for `lora` is the bundle's lib/ (then the node's CUDA toolkit and Python's nvidia/*
# packages), as gpu_run.sh sets it; it is passed as LORA_LD_LIBRARY_PATH and applied to `lora` alone, so
# that the bundle's libstdc++ and cudart never reach PyTorch.
#
# Usage: bench_gpu.sh [BUNDLE_DIR]     (default: this script's folder if it holds bin/lora, else ../gpu-bundle)
# Environment:
#   BENCH_OUT or OUT   where results go (bench_<shape>_<lengths>.json and .log, bench_results.json);
#                      default ./bench-logs
#   BENCH_WORK         scratch for models and data (default /tmp/lora-bench; Large needs about 4 GB)
#   BENCH_SETS         default "medium:fixed medium:e2e large:fixed"
#   BENCH_DEADLINE     epoch seconds by which everything must end (set by gpu_session.sh): a set whose
#                      estimated time no longer fits is skipped and said so; each run is cut at the deadline
#   BENCH_ARGS         extra arguments for bench_gpu.py (e.g. "--steps 50")
# Exit status: 0 if every set that ran succeeded on both sides, 1 otherwise.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -n ${1:-} ]]; then
  bundle=$(cd "$1" && pwd)
elif [[ -x $here/bin/lora ]]; then
  bundle=$here
else
  bundle=$(cd "$here/.." && pwd)/gpu-bundle
fi
bench_py=$here/bench_gpu.py
[[ -f $bench_py ]] || { echo "error: $bench_py not found (bench_gpu.sh and bench_gpu.py travel together)" >&2; exit 1; }
[[ -x $bundle/bin/lora ]] || echo "warning: no $bundle/bin/lora: only the PEFT side will run" >&2
out=${BENCH_OUT:-${OUT:-$PWD/bench-logs}}
work=${BENCH_WORK:-/tmp/lora-bench}
sets=${BENCH_SETS:-medium:fixed medium:e2e large:fixed}
deadline=${BENCH_DEADLINE:-0}
mkdir -p "$out" "$work"

python=$(command -v python3 || true)
[[ -n $python ]] || { echo "error: no python3 on PATH (the PEFT side needs torch, transformers and peft)" >&2; exit 1; }
for lib in "$here/gpu_libpath.sh" "$bundle/gpu_libpath.sh"; do
  [[ -f $lib ]] && { source "$lib"; break; }
done
declare -F lora_gpu_libpath >/dev/null || { echo "error: gpu_libpath.sh not found beside $0 or in $bundle" >&2; exit 1; }
libpath=$(lora_gpu_libpath "$bundle")
export LORA_LD_LIBRARY_PATH=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1

# Rough wall-clock estimates per set (python start-up, making and saving the fp32 model, both runs),
# used only to decide what still fits before the deadline; Large's is revised from Medium's measurement.
declare -A estimate=([medium:fixed]=150 [medium:e2e]=90 [large:fixed]=240 [large:e2e]=160)
status=0
results=()
for set in $sets; do
  shape=${set%%:*}
  lengths=${set##*:}
  now=$(date +%s)
  est=${estimate[$set]:-240}
  if ((deadline > 0)); then
    left=$((deadline - now))
    if ((left < est)); then
      echo "== bench $set skipped: ${left}s left before the deadline, about ${est}s needed" | tee -a "$out/bench_skipped.txt"
      continue
    fi
    limit=$((left - 5))
  else
    limit=1800
  fi
  echo "== bench $set ($(date -u +%T), limit ${limit}s)"
  name=bench_${shape}_${lengths}
  t0=$(date +%s)
  profile=()
  [[ $set == medium:fixed ]] && profile=(--profile-steps 10)  # where the time goes, once (cuda/profile.cuh)
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  timeout --kill-after=10 "$limit" "$python" "$bench_py" --lora-bin "$bundle/bin/lora" --work "$work" \
    --shape "$shape" --lengths "$lengths" --stage-timeout $((limit / 2)) --out "$out/$name.json" \
    "${profile[@]}" ${BENCH_ARGS:-} 2>&1 | tee "$out/$name.log"
  rc=${PIPESTATUS[0]}
  took=$(($(date +%s) - t0))
  echo "== bench $set: exit $rc after ${took}s"
  ((rc == 0)) || status=1
  [[ -f $out/$name.json ]] && results+=("$out/$name.json")
  if [[ $set == medium:fixed ]]; then  # Large has about 2.2x the weights; the fixed costs stay
    estimate[large:fixed]=$((took * 2))
    estimate[large:e2e]=$((took * 3 / 2))
  fi
done

if ((${#results[@]})); then
  "$python" "$bench_py" --summarize "${results[@]}" --out "$out/bench_results.json"
fi
exit $status
