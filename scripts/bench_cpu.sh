#!/usr/bin/env bash
# CPU throughput of `lora train` on two models, printed as tokens/s (the figures in docs/BENCHMARKS.md):
#   1. the quickstart (configs/quickstart.yaml, 0.9M-parameter base, LoRA on q v o up down);
#   2. a GPT-2-small-shaped (124M) model with random weights, batch 1, sequences cut to 128 tokens,
#      LoRA r=4 on q and v, on E2E lines (needs ../shared/data for the GPT-2 vocabulary and the data).
# Usage: bash scripts/bench_cpu.sh [steps]     (run after scripts/setup.sh; writes into build/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20}
lora=build/lora
work=build/bench
rm -rf "$work" && mkdir -p "$work"

echo "== quickstart, $steps steps"
$lora train configs/quickstart.yaml --set train.max_steps="$steps" --set data.eval= --set log.every="$steps" \
  --set log.progress=plain --output "$work/quickstart" 2>&1 | grep -E "^step $steps/"

shared=../shared/data
if [ ! -f "$shared/gpt2/encoder.json" ] || [ ! -f "$shared/e2e/valid.txt" ]; then
  echo "== gpt2-124M: skipped (no $shared/gpt2 or $shared/e2e)"
  exit 0
fi
cat > "$work/gpt2-124m.json" <<'JSON'
{"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257,
 "n_inner": null, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
 "bos_token_id": 50256, "eos_token_id": 50256}
JSON
$lora init --config "$work/gpt2-124m.json" --out "$work/gpt2-124m" --tokenizer "$shared/gpt2" --seed 1 >/dev/null
# Each example is an E2E line repeated four times, so that every one fills its 128 tokens: 1 x 128 a step.
head -n 200 "$shared/e2e/valid.txt" | awk -F'[|][|]' '{print $1 "||" $2 " " $2 " " $2 " " $2}' > "$work/long.txt"
cat > "$work/gpt2-124m.yaml" <<YAML
model: {path: gpt2-124m, device: cpu}
lora: {r: 4, alpha: 32, targets: [q, v]}
data: {train: long.txt, max_length: 128, cache_dir: $work/cache}
train: {batch_size: 1, max_steps: $steps, lr: 2e-4}
log: {every: $steps, progress: plain}
eval: {num_samples: 0}
YAML
echo "== gpt2-124M (random weights), batch 1 x 128 tokens, LoRA r=4 on q,v, $steps steps"
$lora train "$work/gpt2-124m.yaml" --output "$work/gpt2-run" 2>&1 | grep -E "^step $steps/|memory plan"
