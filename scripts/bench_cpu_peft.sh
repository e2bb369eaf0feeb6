#!/usr/bin/env bash
# `lora train` on the CPU against transformers + PEFT on the same machine, the same model files and the
# same batch, alternating, RUNS runs each, THREADS threads each (docs/BENCHMARKS.md, "CPU against PEFT").
# Shapes:
#   quickstart  data/quickstart/base-model (0.9M parameters), batch 16 of quickstart lines, LoRA r 16 on
#               every linear layer (c_attn c_proj c_fc);
#   gpt2-124m   a GPT-2-small-shaped model (random weights, the 50257-token vocabulary), batch 4 of E2E
#               lines (each repeated to fill max_length 128: 4 x 128 tokens a step), LoRA r 4 on c_attn.
# The batch is a data file of exactly batch_size lines, so every step of both trains on that batch (lora
# shuffles the lines within it, which moves only the summation order). Both start from one adapter
# (PEFT's init, read by lora.init_from), dropout off, AdamW with constant lr, no decay, no clipping.
# Printed per shape: tokens/s over steps 2..STEPS of each run (min and median over the runs), peak RSS
# (max over the runs) and the ratios, then the largest relative difference between the two per-step loss
# curves. The first step is left out of the timing (allocation, first touches).
#
# Usage: bash scripts/bench_cpu_peft.sh [SHAPE...]    (default: quickstart gpt2-124m; after scripts/setup.sh)
# Environment: STEPS (default 10), RUNS (3), THREADS (2), LORA_DEVICE (cpu; ref for the reference),
#   LORA_BENCH_VENV (default ~/.cache/lora-bench/venv: made and filled from PyPI with torch, transformers,
#   peft and safetensors on first use, a few GB, outside the repository; Python is the benchmark's need
#   only, never the tool's or CI's), WORK (default build/bench-peft).
# The gpt2-124m shape needs ../shared/data (the GPT-2 vocabulary and the E2E lines).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-10} runs=${RUNS:-3} threads=${THREADS:-2} device=${LORA_DEVICE:-cpu}
venv=${LORA_BENCH_VENV:-$HOME/.cache/lora-bench/venv}
work=${WORK:-build/bench-peft}
lora=$PWD/build/lora
shapes=("${@:-quickstart gpt2-124m}")
read -r -a shapes <<<"${shapes[*]}"
[[ -x $lora ]] || { echo "error: $lora not built; run scripts/setup.sh first" >&2; exit 2; }
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import torch, transformers, peft, safetensors' 2>/dev/null; then
  echo "== making $venv (torch, transformers, peft, safetensors from PyPI; once per machine)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch transformers peft safetensors
fi
py=$venv/bin/python
mkdir -p "$work"
work=$(cd "$work" && pwd)
shared=../shared/data

echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
  "load $(cut -d' ' -f1-3 /proc/loadavg); torch $("$py" -c 'import torch; print(torch.__version__)')," \
  "transformers $("$py" -c 'import transformers; print(transformers.__version__)')," \
  "peft $("$py" -c 'import peft; print(peft.__version__)')"

# setup SHAPE: writes $dir/base (model), $dir/batch.txt, $dir/init (the adapter both start from) and sets
# batch, r, alpha, targets (PEFT module names; lora reads the same names), lr, max_length.
setup() {
  dir=$work/$1
  mkdir -p "$dir"
  case $1 in
    quickstart)
      [[ -d data/quickstart/base-model ]] || bash scripts/make_quickstart_model.sh
      rm -rf "$dir/base" && cp -r data/quickstart/base-model "$dir/base"
      batch=16 r=16 alpha=32 targets=(c_attn c_proj c_fc) lr=4e-3 max_length=128
      head -n $batch data/quickstart/train.txt >"$dir/batch.txt"
      ;;
    gpt2-124m)
      [[ -f $shared/gpt2/encoder.json && -f $shared/e2e/valid.txt ]] ||
        { echo "error: gpt2-124m needs $shared/gpt2 and $shared/e2e" >&2; exit 2; }
      batch=4 r=4 alpha=32 targets=(c_attn) lr=1e-3 max_length=128
      if [[ ! -f $dir/base/model.safetensors ]]; then
        cat >"$dir/config.json" <<'JSON'
{"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257,
 "n_inner": null, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
 "bos_token_id": 50256, "eos_token_id": 50256}
JSON
        rm -rf "$dir/base"
        "$lora" init --config "$dir/config.json" --out "$dir/base" --tokenizer "$shared/gpt2" --seed 1 >/dev/null
      fi
      head -n $batch "$shared/e2e/valid.txt" | awk -F'[|][|]' '{print $1 "||" $2 " " $2 " " $2 " " $2}' >"$dir/batch.txt"
      ;;
    *) echo "error: unknown shape '$1' (quickstart or gpt2-124m)" >&2; exit 2 ;;
  esac
  rm -rf "$dir/init"
  "$py" scripts/bench_cpu_peft.py init --base "$dir/base" --out "$dir/init" --targets "${targets[@]}" --r $r \
    --alpha $alpha --seed 1
  cat >"$dir/recipe.yaml" <<YAML
model: {path: base, device: $device, hidden_dropout: 0, attention_dropout: 0}
lora: {r: $r, alpha: $alpha, targets: [$(IFS=,; echo "${targets[*]}")], dropout: 0, init_from: init}
data: {train: batch.txt, eval: "", max_length: $max_length, cache_dir: cache}
train: {batch_size: $batch, max_steps: $steps, epochs: $steps, lr: $lr, schedule: constant, warmup_steps: 0,
        weight_decay: 0, clip_grad_norm: 0}
log: {every: 1, progress: plain}
eval: {num_samples: 0}
YAML
}

# Tokens/s over steps 2..: tokens / seconds summed over those steps. lora: metrics.jsonl's tokens_per_s
# per step and elapsed_s; PEFT: its own per-step seconds.
lora_tps() { "$py" - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
# elapsed_s is cumulative; a step's tokens = its tokens_per_s * its seconds.
secs = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])]
toks = [r["tokens_per_s"] * s for r, s in zip(rows[1:], secs)]
print(sum(toks) / sum(secs))
PY
}
peft_tps() { "$py" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][1:]; print(sum(x["tokens"] for x in r)/sum(x["seconds"] for x in r))' "$1"; }
rss_mb() { awk '{printf "%.0f", $1 / 1024}' "$1"; }

for shape in "${shapes[@]}"; do
  setup "$shape"
  echo "== $shape: batch $batch, LoRA r $r on ${targets[*]}, $steps steps, $runs runs each, $threads threads, lora --device $device"
  ltps=() ptps=() lrss=() prss=()
  for ((i = 1; i <= runs; i++)); do
    rm -rf "$dir/run"
    (cd "$dir" && OPENBLAS_NUM_THREADS=$threads /usr/bin/time -f %M -o lora.rss "$lora" train recipe.yaml \
      --output run >lora.log 2>&1) || { tail -n 20 "$dir/lora.log" >&2; exit 1; }
    ltps+=("$(lora_tps "$dir/run/metrics.jsonl")") lrss+=("$(rss_mb "$dir/lora.rss")")
    OMP_NUM_THREADS=$threads /usr/bin/time -f %M -o "$dir/peft.rss" "$py" scripts/bench_cpu_peft.py train \
      --base "$dir/base" --adapter "$dir/init" --data "$dir/batch.txt" --max-length $max_length --steps $steps \
      --lr $lr --threads $threads --out "$dir/peft.jsonl" >"$dir/peft.log" 2>&1 || { tail -n 20 "$dir/peft.log" >&2; exit 1; }
    ptps+=("$(peft_tps "$dir/peft.jsonl")") prss+=("$(rss_mb "$dir/peft.rss")")
    printf '   run %d: lora %.1f tokens/s (%s MB), peft %.1f tokens/s (%s MB)\n' "$i" "${ltps[-1]}" "${lrss[-1]}" \
      "${ptps[-1]}" "${prss[-1]}"
  done
  grep -m1 '^cpu:\|^ref:' "$dir/lora.log" | sed 's/^/   /' || true
  "$py" - "$dir/run/metrics.jsonl" "$dir/peft.jsonl" "${ltps[*]}" "${ptps[*]}" "${lrss[*]}" "${prss[*]}" <<'PY'
import json, statistics, sys
lora = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r and "tokens_per_s" in r}
peft = {r["step"]: r["loss"] for r in map(json.loads, open(sys.argv[2]))}
lt, pt = [list(map(float, a.split())) for a in sys.argv[3:5]]
lr, pr = [list(map(float, a.split())) for a in sys.argv[5:7]]
print(f"   lora  tokens/s min {min(lt):.1f} median {statistics.median(lt):.1f}; peak RSS {max(lr):.0f} MB")
print(f"   peft  tokens/s min {min(pt):.1f} median {statistics.median(pt):.1f}; peak RSS {max(pr):.0f} MB")
print(f"   ratio lora/peft: tokens/s (medians) {statistics.median(lt) / statistics.median(pt):.2f}x, "
      f"peak RSS {max(lr) / max(pr):.2f}x")
steps = sorted(set(lora) & set(peft))
worst = max(abs(lora[s] - peft[s]) / abs(peft[s]) for s in steps)
print(f"   losses over {len(steps)} steps: lora {lora[steps[0]]:.6f} -> {lora[steps[-1]]:.6f}, "
      f"peft {peft[steps[0]]:.6f} -> {peft[steps[-1]]:.6f}; largest relative difference {worst:.1e}")
PY
done
