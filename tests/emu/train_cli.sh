#!/usr/bin/env bash
# `lora train --device cuda` on the CPU emulation of CUDA (ctest lora_emu_train, label emu): a few steps of
# the quickstart recipe (batch 2 x 48 tokens: the emulation is slow) through the CUDA backend's code, in bf16, with LORA_PROFILE=1. It passes when the
# run exits 0 on the emulated device, its losses follow the CPU backend's on the same steps, the adapter is
# written, the op profile lists the model's ops, and the allocator's peak stays within the memory plan (10%).
# Usage: train_cli.sh LORA_EMU_BINARY SOURCE_DIR WORK_DIR
set -uo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*"; echo "--- output"; cat "$work/out.log"; exit 1; }
settings=(--set train.max_steps=3 --set train.batch_size=2 --set data.max_length=48 --set "data.cache_dir=$work/cache"
  --set data.eval= --set eval.num_samples=0 --set log.every=1)
LORA_PROFILE=1 "$bin" train "$src/configs/quickstart.yaml" --device cuda --output "$work/run" \
  --set train.precision=bf16 "${settings[@]}" >"$work/out.log" 2>&1
rc=$?
((rc == 0)) || fail "lora train exited $rc"
# The same steps on the CPU backend: each step's loss agrees within test_cuda_train's bf16 trajectory
# tolerance (5e-2 relative).
"$bin" train "$src/configs/quickstart.yaml" --device cpu --output "$work/run-cpu" "${settings[@]}" >"$work/cpu.log" 2>&1 ||
  fail "the CPU run exited $?"
losses() { sed -n 's/^step \([0-9]*\)\/3  loss \([0-9.]*\) .*/\2/p' "$1"; }
paste <(losses "$work/out.log") <(losses "$work/cpu.log") >"$work/losses.txt"
[[ $(wc -l <"$work/losses.txt") == 3 ]] || fail "expected 3 logged steps on each backend: $(cat "$work/losses.txt")"
awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 0.05 * $2) { print "step " NR ": cuda " $1 ", cpu " $2; bad = 1 } }
     END { exit bad }' "$work/losses.txt" || fail "losses differ from the CPU's by more than 5%"

grep -q 'CPU emulation of CUDA' "$work/out.log" || fail "the run did not say it trained on the emulated CUDA device"
grep -q '^CUDA op profile' "$work/out.log" || fail "no op profile at the end (LORA_PROFILE=1)"
for op in 'matmul ' attention_forward attention_backward layernorm_forward cross_entropy adamw_update; do
  grep -q "^  $op" "$work/out.log" || fail "the op profile has no row for $op"
done
grep -qE '^peak device memory: [1-9][0-9.]* MiB' "$work/out.log" || fail "no peak device memory line"
grep -q '"peak_memory_mib"' "$work/run/metrics.jsonl" || fail "metrics.jsonl has no peak_memory_mib record"
# The memory plan (what --dry-run prints and the start-up check compares with free memory) bounds the
# allocator's peak: within 10% above it at most.
awk -F'[:,}]' '/"peak_memory_mib"/ { for (i = 1; i < NF; i++) { if ($i ~ /memory_plan_mib/) plan = $(i + 1);
                                                            if ($i ~ /peak_memory_mib/) peak = $(i + 1) } }
     END { print "peak " peak " MiB, plan " plan " MiB"; exit !(plan > 0 && peak > 0 && peak <= 1.1 * plan) }' \
  "$work/run/metrics.jsonl" >"$work/peak.txt" || fail "peak device memory over the plan: $(cat "$work/peak.txt")"
grep -qiE 'loss[^0-9]*(nan|inf)' "$work/out.log" && fail "a loss is not finite"
[[ -n $(find "$work/run" -name adapter_model.safetensors) ]] || fail "no adapter_model.safetensors under $work/run"
echo "ok: 3 bf16 steps (batch 2) of the quickstart on the emulated CUDA backend, losses (cuda, cpu):"
cat "$work/losses.txt"
grep '^peak device memory' "$work/out.log"
echo "op profile:"
awk '/^CUDA op profile/ { on = 1 } on && n++ < 12' "$work/out.log"  # no early-closing pipe under pipefail
exit 0
