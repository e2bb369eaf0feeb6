#!/usr/bin/env bash
# Long fuzzing runs: each libFuzzer harness of tests/fuzz/ (built by scripts/test_sanitized.sh in
# build-san/, under ASan and UBSan) for SECONDS seconds, as many at once as there are cores, each from
# its seed corpus plus the corpus earlier runs grew (build-san/fuzz/NAME/corpus, kept between runs).
#   bash scripts/fuzz.sh 3600                     # every harness for an hour each
#   bash scripts/fuzz.sh 600 fuzz_gguf fuzz_recipe
# Prints one line per harness: CPU seconds, executions, corpus size, and FOUND with the input's path for
# any crash, sanitizer report, hang or memory blow-up (the input is kept in build-san/fuzz/NAME/); exits 1
# if any was found. Record long runs in docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [HARNESS...]}
shift
harnesses=("$@")
[ ${#harnesses[@]} -eq 0 ] && mapfile -t harnesses < <(cd tests/fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//')
if [ ! -x "build-san/tests/fuzz/${harnesses[0]}" ]; then
  LORA_FUZZ_SECONDS=1 bash scripts/test_sanitized.sh -L fuzz >/dev/null
fi
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"

run_one() {
  local name=$1 dir=build-san/fuzz/$1
  mkdir -p "$dir/corpus"
  ( cd "$dir" && "../../tests/fuzz/$name" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
      -print_final_stats=1 corpus "../../../tests/fuzz/corpus/${name#fuzz_}" >log.txt 2>&1 ) && rc=0 || rc=$?
  local execs corpus found
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log.txt" | grep -o '[0-9]*$' || echo ?)
  corpus=$(ls "$dir/corpus" | wc -l)
  found=$(ls "$dir" | grep -E '^(crash|timeout|oom|leak)-' | head -1 || true)
  local cpu
  cpu=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$dir/log.txt" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo ?)
  if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
    echo "$name: FOUND after ${cpu}s, ${execs} execs: $dir/${found:-log.txt} (log: $dir/log.txt)"
    return 1
  fi
  echo "$name: ${cpu} s, ${execs} execs, corpus ${corpus} inputs, nothing found"
}

failed=0
for name in "${harnesses[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n || failed=1; done
  run_one "$name" &
done
wait_all() { while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done; }
wait_all
exit $failed
