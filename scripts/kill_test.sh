#!/usr/bin/env bash
# Crash test of training: kills a small training run N times with SIGKILL, at random moments and on
# chosen system calls (the K-th write, fsync, rename or unlink, through strace's fault injection), resumes
# after each kill, and checks that every run that finishes wrote byte for byte the adapter of an
# uninterrupted run with the same recipe. A run that finishes before a kill lands is checked and then
# started again from nothing, until N kills have landed.
#   bash scripts/kill_test.sh 10          # CI's run
#   bash scripts/kill_test.sh 300 SEED    # a long run (record it in docs/RELIABILITY.md)
# Uses build/lora (LORA_BIN: another build) and the quickstart model and data (data/quickstart), cut to a
# 12-step run with a checkpoint every 2 steps. Work files go to build/kill_test/. Exits 1 naming the kill
# after which a resumed run differs or fails.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:?usage: scripts/kill_test.sh N [SEED]}
RANDOM=${2:-1}
lora=${LORA_BIN:-$PWD/build/lora}
[ -x "$lora" ] || bash scripts/setup.sh lora >/dev/null
command -v strace >/dev/null || {
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq strace >/dev/null
}
work=$PWD/build/kill_test
rm -rf "$work"
mkdir -p "$work"
recipe=$PWD/configs/quickstart.yaml
max_steps=12
sets=(--set train.max_steps=$max_steps --set train.batch_size=4 --set data.max_length=64
      --set output.save_every=2 --set output.keep_last=2 --set train.eval_every=4 --set eval.num_samples=0
      --set log.every=1 --set data.cache_dir="$work/cache")
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
fail() {
  echo "kill_test: FAILED: $*" >&2
  echo "  log of every start: $log" >&2
  tail -15 "$log" >&2
  exit 1
}

# The data tokenized once, then the uninterrupted run, traced to count the calls the kills aim at.
log=$work/reference.log
"$lora" prepare "$recipe" "${sets[@]}" >"$log" 2>&1 || fail "lora prepare"
t0=$SECONDS
strace -f -qq -c -o "$work/syscalls.txt" -e trace=write,fsync,rename,renameat,renameat2,unlink,unlinkat \
  "$lora" train "$recipe" "${sets[@]}" --output "$work/reference" >>"$log" 2>&1 || fail "the uninterrupted run"
ref_seconds=$((SECONDS - t0))
count_of() {  # calls of the first of a comma-separated set that the run made, summed over the set
  local n=0 c
  for c in ${1//,/ }; do n=$((n + $(awk -v s="$c" '$NF == s {print $4}' "$work/syscalls.txt" | head -1 | grep . || echo 0))); done
  echo $n
}
echo "kill_test: uninterrupted run in ${ref_seconds} s; its calls: write $(count_of write), fsync $(count_of fsync)," \
  "rename $(count_of rename,renameat,renameat2), unlink $(count_of unlink,unlinkat)"
ref=$work/reference/adapter_model.safetensors

run=$work/run
log=$work/runs.log
: >"$log"
steps_done() {  # the newest committed checkpoint's step, 0 without one
  { find "$run/checkpoints" -name COMMITTED 2>/dev/null || true; } | sed -n 's|.*/step-\([0-9]*\)/COMMITTED$|\1|p' |
    awk 'BEGIN {m = 0} $1 + 0 > m {m = $1 + 0} END {print m}'
}
command_next() {  # the next start of the killed run: resumed, or (killed before its first checkpoint)
  if [ "$(steps_done)" -gt 0 ]; then  # the same command as the first start, which lora must accept
    echo "$lora train --resume $run ${sets[*]}"
  else
    echo "$lora train $recipe ${sets[*]} --output $run"
  fi
}
check_finished() {
  cmp -s "$ref" "$run/adapter_model.safetensors" ||
    fail "after kill $landed the finished run's adapter differs from the uninterrupted run's ($run)"
  finished=$((finished + 1))
  rm -rf "$run"
}

landed=0 finished=0 starts=0
while [ "$landed" -lt "$kills" ]; do
  starts=$((starts + 1))
  cmd=$(command_next)
  case $((RANDOM % 5)) in
    0) call="" ;;
    1) call=write ;;
    2) call=fsync ;;
    3) call=rename,renameat,renameat2 ;;
    4) call=unlink,unlinkat ;;
  esac
  if [ -z "$call" ]; then
    delay=$(awk -v r=$RANDOM -v t="$ref_seconds" 'BEGIN {printf "%.2f", 0.1 + r / 32768 * (t + 0.5)}')
    what="after ${delay} s"
    eval "exec $cmd" >>"$log" 2>&1 &  # exec: $! is lora itself, which the kill must reach
    pid=$!
    sleep "$delay"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null && rc=0 || rc=$?
  else
    # K over the whole uninterrupted run's calls: a resumed start makes fewer, so a large K lets it
    # finish, which is checked, and the next start is a fresh run (kills spread over every phase).
    k=$((RANDOM % ($(count_of "$call") + 1) + 1))
    what="on ${call%%,*} call $k"
    eval "strace -f -qq -o /dev/null -e trace=${call} -e inject=${call}:signal=KILL:when=$k $cmd" >>"$log" 2>&1 && rc=0 || rc=$?
  fi
  echo "== start $starts: kill $what: exit $rc" >>"$log"
  case $rc in
    0) check_finished ;;   # finished before the kill: checked, and started again
    137) landed=$((landed + 1)); echo "kill $landed/$kills: $what, at step $(steps_done)" ;;
    *) fail "start $starts ($cmd) exited $rc" ;;
  esac
done
eval "$(command_next)" >>"$log" 2>&1 || fail "the run did not finish after the last kill"
check_finished
echo "kill_test: $kills kills landed in $starts starts; $finished finished runs, each adapter byte for byte the uninterrupted run's"
