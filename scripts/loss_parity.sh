#!/usr/bin/env bash
# The GPU target "the loss over 200 steps within 1% of the CPU backend's (same data, same seed, dropout
# off)": trains a recipe (default the quickstart: 0.9M parameters, LoRA dropout 0) for STEPS steps on the
# CPU backend and on CUDA from the same seed, the model's own dropout off, logging every step, then
# compares the two loss curves read from metrics.jsonl. It passes when the mean loss over all steps and
# over the last quarter of them agree within TOL relative; it also prints the largest single-step
# difference (bf16 rounding moves single steps more than the means).
#
# Usage: loss_parity.sh LORA_BIN [RECIPE [STEPS [TOL]]]
#   RECIPE  default configs/quickstart.yaml beside this script's repository or bundle
#   STEPS   default 200;  TOL  default 0.01
# Environment: PRECISION (CUDA's train.precision, default bf16), WORK (folder for both runs, default a
# new temporary one), CUDA_DEVICE (the --device of the second run, default cuda), PARITY_STAGE: all
# (default), cpu (only the CPU run, into WORK) or cuda (only the CUDA run and the comparison, against the
# CPU run a `cpu` stage left in the same WORK): gpu_session.sh runs the CPU side while the GPU tests run.
# Exit status: 0 within TOL, 1 outside it or a run failed, 2 bad usage.
set -uo pipefail
bin=${1:?usage: loss_parity.sh LORA_BIN [RECIPE [STEPS [TOL]]]}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
recipe=${2:-}
if [[ -z $recipe ]]; then
  for r in "$here/../configs/quickstart.yaml" "$here/configs/quickstart.yaml"; do
    [[ -f $r ]] && recipe=$r && break
  done
fi
steps=${3:-200} tol=${4:-0.01}
[[ -x $bin ]] || { echo "error: $bin is not an executable lora binary" >&2; exit 2; }
[[ -f $recipe ]] || { echo "error: recipe '${recipe:-configs/quickstart.yaml}' not found" >&2; exit 2; }
stage=${PARITY_STAGE:-all}
[[ $stage == all || $stage == cpu || $stage == cuda ]] ||
  { echo "error: PARITY_STAGE='$stage'; expected all, cpu or cuda" >&2; exit 2; }
[[ $stage != cuda || -n ${WORK:-} ]] ||
  { echo "error: PARITY_STAGE=cuda compares with the CPU run in WORK; set WORK to the cpu stage's folder" >&2; exit 2; }
work=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/lora-parity.XXXXXX")}
mkdir -p "$work"
settings=(--set "train.max_steps=$steps" --set log.every=1 --set log.progress=plain --set data.eval=
  --set eval.num_samples=0 --set model.hidden_dropout=0 --set model.attention_dropout=0
  --set "data.cache_dir=$work/cache")

run() {  # run NAME DEVICE [extra args]
  local name=$1 device=$2
  shift 2
  local t0=$SECONDS
  if ! "$bin" train "$recipe" --device "$device" --output "$work/$name" "${settings[@]}" "$@" >"$work/$name.log" 2>&1; then
    echo "error: the $name run failed; the end of $work/$name.log:" >&2
    tail -n 20 "$work/$name.log" >&2
    exit 1
  fi
  echo "$name: $steps steps in $((SECONDS - t0)) s ($(grep -m1 '^training on' "$work/$name.log"))"
}
if [[ $stage != cuda ]]; then
  run cpu cpu
  [[ $stage == cpu ]] && exit 0
elif [[ ! -s $work/cpu/metrics.jsonl ]]; then
  echo "error: no CPU run in $work (no cpu/metrics.jsonl): run PARITY_STAGE=cpu with the same WORK first" >&2
  exit 1
fi
run cuda "${CUDA_DEVICE:-cuda}" --set "train.precision=${PRECISION:-bf16}"

# Each step's loss from metrics.jsonl, one per line.
losses() { sed -n 's/.*"loss":\([-0-9.eE+]*\).*"step":\([0-9]*\).*/\2 \1/p' "$1/metrics.jsonl"; }
paste -d' ' <(losses "$work/cpu") <(losses "$work/cuda") >"$work/losses.txt"  # step cpu step cuda
awk -v steps="$steps" -v tol="$tol" '
  $1 != $3 { printf "error: step %s of the CPU run beside step %s of the CUDA run\n", $1, $3; exit 1 }
  { n++; c[n] = $2; g[n] = $4; d = $4 - $2; if (d < 0) d = -d
    if ($2 != 0 && d / $2 > worst) { worst = d / $2; at = $1 } }
  END {
    if (n != steps) { printf "error: %d steps logged on both, expected %d\n", n, steps; exit 1 }
    q = int(n * 3 / 4)
    for (i = 1; i <= n; i++) { ca += c[i]; ga += g[i]; if (i > q) { cl += c[i]; gl += g[i] } }
    all = (ga - ca) / ca; last = (gl - cl) / cl
    printf "mean loss over %d steps: cpu %.5f, cuda %.5f, relative %+.4f\n", n, ca / n, ga / n, all
    printf "mean loss over the last %d: cpu %.5f, cuda %.5f, relative %+.4f\n", n - q, cl / (n - q), gl / (n - q), last
    printf "largest single-step difference: %.4f relative, at step %d\n", worst, at
    ok = (all < 0 ? -all : all) <= tol && (last < 0 ? -last : last) <= tol
    printf "%s: the means agree within %g\n", ok ? "PASS" : "FAIL", tol
    exit !ok
  }' "$work/losses.txt"
