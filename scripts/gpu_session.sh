#!/usr/bin/env bash
# One command for a GPU node (docs/GPU.md): the CUDA tests, the same tests under compute-sanitizer's
# memcheck (both by the bundle's gpu_run.sh), the 200-step loss check against the CPU (loss_parity.sh),
# then the peer benchmark (bench_gpu.sh: GPT-2 Medium with 512-token and E2E-like examples, then GPT-2
# Large if time is left), all inside a time budget.
# Everything is collected under $OUT (the device tool brings that folder back; elsewhere ./gpu-session-logs)
# as at most 8 files, the device tool's limit: summary.txt (what to read first), bench_results.json, the
# cuda test logs, and session-logs.tar.gz with every log and result.
#
# Usage: gpu_session.sh [BUDGET_SECONDS [BUNDLE_DIR]]
#   BUDGET_SECONDS  wall-clock budget for the whole session, default 540 (the device tool allows 600 a call)
#   BUNDLE_DIR      a bundle from scripts/gpu_bundle.sh; default this script's folder if it holds
#                   bin/lora, else ../gpu-bundle (so that `bash scripts/gpu_session.sh` works from a
#                   repository checkout beside a bundle, and `bash gpu-bundle/gpu_session.sh` inside one)
# Environment: LORA_SANITIZE=0 skips memcheck; LORA_SESSION_PARITY=0 skips the loss check;
# LORA_SESSION_BENCH=0 skips the benchmark; BENCH_SETS,
# BENCH_ARGS, BENCH_WORK pass to bench_gpu.sh; LORA_FIXTURES_DIR overrides where test_cuda_train finds
# golden/ (default: the bundle's fixtures/, else the repository's tests/fixtures/).
# Exit status: 0 if the tests passed (or skipped), the loss check passed and every benchmark set that ran
# succeeded, else 1.
set -uo pipefail

start=$(date +%s)
budget=${1:-540}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -n ${2:-} ]]; then
  bundle=$(cd "$2" && pwd)
elif [[ -x $here/bin/lora ]]; then
  bundle=$here
else
  bundle=$(cd "$here/.." && pwd)/gpu-bundle
fi
final_out=${OUT:-$PWD/gpu-session-logs}
stage=$(mktemp -d "${TMPDIR:-/tmp}/lora-gpu-session.XXXXXX")
mkdir -p "$final_out" "$stage/tests" "$stage/bench"
deadline=$((start + budget - 20))  # the last seconds pack the logs
elapsed() { echo $(($(date +%s) - start)); }

[[ -f $bundle/gpu_run.sh && -f $bundle/tests.txt ]] || {
  echo "error: $bundle is not a bundle from scripts/gpu_bundle.sh (no gpu_run.sh / tests.txt)" >&2
  echo "  hint: build one: scripts/gpu_bundle.sh --without-cuda-libs build-gpu gpu-bundle (docs/GPU.md)" >&2
  exit 1
}
if [[ -z ${LORA_FIXTURES_DIR:-} ]]; then
  for dir in "$bundle/fixtures" "$here/../tests/fixtures" "$PWD/tests/fixtures"; do
    if [[ -f $dir/golden/batch.json ]]; then
      export LORA_FIXTURES_DIR=$(cd "$dir" && pwd)
      break
    fi
  done
fi
echo "== gpu session: bundle $bundle, budget ${budget}s, fixtures ${LORA_FIXTURES_DIR:-not found}, logs $final_out"

# 0. The CPU side of the loss check (step 2) runs meanwhile, on half the cores: it needs no GPU.
parity=0
if [[ ${LORA_SESSION_PARITY:-1} != 0 ]]; then
  if [[ -f $here/loss_parity.sh && -f $here/gpu_libpath.sh ]]; then
    parity=1
    threads=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
    (
      source "$here/gpu_libpath.sh"
      export LD_LIBRARY_PATH=$(lora_gpu_libpath "$bundle")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
      OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads PARITY_STAGE=cpu WORK=$stage/parity \
        exec timeout --kill-after=10 "$((budget * 60 / 100))" nice -n 5 bash "$here/loss_parity.sh" "$bundle/bin/lora"
    ) >"$stage/parity.log" 2>&1 &
    parity_cpu_pid=$!
  else
    echo "error: loss_parity.sh or gpu_libpath.sh not found beside $0; loss check not run" | tee "$stage/parity.log"
  fi
fi

# 1. The CUDA tests, then memcheck. They get at most 45% of the budget: the benchmark needs the rest.
tests_limit=$((budget * 45 / 100))
OUT=$stage/tests timeout --kill-after=10 "$tests_limit" bash "$bundle/gpu_run.sh" cuda 2>&1 | tee "$stage/tests.log"
tests_rc=${PIPESTATUS[0]}
((tests_rc == 124 || tests_rc == 137)) && echo "== tests: cut at ${tests_limit}s (the summary below is partial)" |
  tee -a "$stage/tests.log"
echo "== tests: exit $tests_rc after $(elapsed)s"

# 2. The loss over 200 quickstart steps on CUDA (bf16) against the CPU backend's (its run started in
#    step 0); waiting for the CPU side and the CUDA run get at most 15% of the budget.
parity_rc=0
if [[ ${LORA_SESSION_PARITY:-1} != 0 ]]; then
  if ((parity)); then
    parity_limit=$((budget * 15 / 100))
    parity_end=$(($(date +%s) + parity_limit))
    while kill -0 "$parity_cpu_pid" 2>/dev/null && (($(date +%s) < parity_end)); do sleep 1; done
    if kill -0 "$parity_cpu_pid" 2>/dev/null; then
      kill -- -"$parity_cpu_pid" 2>/dev/null || kill "$parity_cpu_pid" 2>/dev/null
      echo "== loss check: the CPU run had not ended after $(elapsed)s; cut" >>"$stage/parity.log"
      parity_rc=124
    elif wait "$parity_cpu_pid"; then
      (
        source "$here/gpu_libpath.sh"
        export LD_LIBRARY_PATH=$(lora_gpu_libpath "$bundle")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        PARITY_STAGE=cuda WORK=$stage/parity exec timeout --kill-after=10 "$((parity_end - $(date +%s) + 1))" \
          bash "$here/loss_parity.sh" "$bundle/bin/lora"
      ) >>"$stage/parity.log" 2>&1
      parity_rc=$?
      ((parity_rc == 124 || parity_rc == 137)) && echo "== loss check: the CUDA run was cut" >>"$stage/parity.log"
    else
      parity_rc=$?  # the CPU run failed or was cut by its own limit; parity.log says which
    fi
    rm -rf "$stage/parity/cache"
  else
    parity_rc=1
  fi
  cat "$stage/parity.log"
  echo "== loss check: exit $parity_rc after $(elapsed)s"
fi

# 3. The benchmark, in what time is left.
bench_rc=0
if [[ ${LORA_SESSION_BENCH:-1} != 0 ]]; then
  if [[ -f $here/bench_gpu.sh ]]; then
    BENCH_OUT=$stage/bench BENCH_DEADLINE=$deadline bash "$here/bench_gpu.sh" "$bundle" 2>&1 | tee "$stage/bench.log"
    bench_rc=${PIPESTATUS[0]}
  else
    echo "error: $here/bench_gpu.sh not found; benchmark not run" | tee "$stage/bench.log"
    bench_rc=1
  fi
  echo "== benchmark: exit $bench_rc after $(elapsed)s"
fi

# 4. Collect: at most 8 files under $OUT.
{
  echo "gpu session $(date -u +%FT%TZ) on $(hostname), $(elapsed)s of ${budget}s"
  cat "$bundle/version.txt" 2>/dev/null || echo "bundle version unknown (no version.txt)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi failed"
  echo "-- tests (exit $tests_rc)"
  cat "$stage/tests/summary.txt" 2>/dev/null || echo "no test summary (gpu_run.sh cut or failed early; see tests.log)"
  echo "-- loss check against the CPU (exit $parity_rc)"
  tail -n 8 "$stage/parity.log" 2>/dev/null
  echo "-- benchmark (exit $bench_rc)"
  cat "$stage/bench/bench_skipped.txt" 2>/dev/null
  sed -n '/^== summary/,$p' "$stage/bench.log" 2>/dev/null
  for prof in "$stage"/bench/*.profile.txt; do
    [[ -f $prof ]] && { echo "-- GPU time per op, $(basename "$prof" .profile.txt)"; cat "$prof"; }
  done
} >"$stage/summary.txt"
cp "$stage/summary.txt" "$final_out/summary.txt"
[[ -f $stage/bench/bench_results.json ]] && cp "$stage/bench/bench_results.json" "$final_out/"
n=0
for log in "$stage"/tests/test_cuda_*.log; do  # the plain runs' logs; memcheck logs are in the archive
  [[ -f $log && $log != *.memcheck.log ]] || continue
  ((n++ < 5)) && cp "$log" "$final_out/"
done
tar -czf "$final_out/session-logs.tar.gz" -C "$stage" . 2>/dev/null
rm -rf "$stage"

echo "== done in $(elapsed)s; in $final_out: $(cd "$final_out" && ls | tr '\n' ' ')"
cat "$final_out/summary.txt"
((tests_rc == 0 && parity_rc == 0 && bench_rc == 0)) && exit 0
exit 1
