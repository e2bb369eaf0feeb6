#!/usr/bin/env bash
# Regenerates every committed test fixture from the reference implementations (one command).
# Needs: pip install torch transformers peft safetensors tokenizers sentencepiece sacrebleu rouge-score
#        pycocoevalcap scipy scikit-learn gguf; the metric fixtures also need perl with XML::Twig
#        (apt-get install libxml-twig-perl) and java for coco's PTB tokenizer. ../shared/data is used
#        for the real GPT-2 vocabulary where present.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/make_golden.py --out tests/fixtures/golden
python3 scripts/make_golden_lowp.py --golden tests/fixtures/golden
python3 scripts/make_golden_llama.py --out tests/fixtures/golden-llama
python3 scripts/make_golden_llama.py --family mistral --out tests/fixtures/golden-mistral
python3 scripts/make_golden_llama.py --family qwen2-swa --out tests/fixtures/golden-qwen2-swa
python3 scripts/make_golden_roberta.py --out tests/fixtures/golden-roberta
python3 scripts/make_tokenizer_fixtures.py ../shared/data
python3 scripts/make_generate_fixtures.py
# The official E2E scorer is a public repository (tuetschek/e2e-metrics); pass its checkout as $E2E_METRICS.
if [ -n "${E2E_METRICS:-}" ]; then
  python3 scripts/make_metric_fixtures.py --e2e-metrics "$E2E_METRICS" --out tests/fixtures/metrics
else
  echo "skipped metric fixtures: set E2E_METRICS to a checkout of the official E2E scorer"
fi
echo "fixtures regenerated under tests/fixtures/"
