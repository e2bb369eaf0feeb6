#!/usr/bin/env bash
# Rebuilds data/quickstart/base-model: a random 4-layer GPT-2-architecture model (lora init) pretrained
# in full fine-tune mode on data/quickstart/pretrain.jsonl (configs/quickstart-base.yaml). About 5-10
# minutes on 2 CPU cores. Run scripts/make_quickstart_data.py first if the data is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
build/lora init --config data/quickstart/base-config.json --out build/quickstart-init \
  --tokenizer data/quickstart/model-tokenizer --seed 1
rm -rf build/quickstart-base-run
OMP_NUM_THREADS=1 build/lora train configs/quickstart-base.yaml
mkdir -p data/quickstart/base-model
cp build/quickstart-base-run/model/* data/quickstart/base-model/
echo "base model written to data/quickstart/base-model"
