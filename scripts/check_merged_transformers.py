#!/usr/bin/env python3
"""Check that transformers loads a `lora merge` output and reproduces PEFT's results.

Loads MERGED with AutoModelForCausalLM (which fails loudly on missing or unexpected weights here), runs
the golden batch (tests/fixtures/golden/batch.json) and compares its logits with PEFT on base + adapter
and with the stored "merged_logits" (PEFT's merge_and_unload). Normwise relative error over valid
positions; fp32 merges should be near 1e-6.

    build/lora merge --base tests/fixtures/golden/gpt2-tiny --adapter tests/fixtures/golden/adapter --out /tmp/m
    python3 scripts/check_merged_transformers.py --merged /tmp/m
"""
import argparse
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

G = "tests/fixtures/golden"


def rel(a, b, mask):
    d = (a - b).abs()[mask.bool()].max().item()
    return d / b.abs()[mask.bool()].max().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merged", required=True)
    ap.add_argument("--base", default=f"{G}/gpt2-tiny")
    ap.add_argument("--adapter", default=f"{G}/adapter")
    ap.add_argument("--threshold", type=float, default=1e-5)
    args = ap.parse_args()
    batch = json.load(open(f"{G}/batch.json"))
    ids = torch.tensor(batch["input_ids"])
    mask = torch.tensor(batch["attention_mask"])
    merged, info = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32, output_loading_info=True)
    print("loading info:", {k: v for k, v in info.items() if v})
    bad = [k for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
    with torch.no_grad():
        ours = merged.eval()(input_ids=ids, attention_mask=mask).logits.float()
        base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
        peft = PeftModel.from_pretrained(base, args.adapter).eval()
        ref = peft(input_ids=ids, attention_mask=mask).logits
    stored = load_file(f"{G}/reference.safetensors")["merged_logits"]
    e1, e2 = rel(ours, ref, mask), rel(ours, stored, mask)
    print(f"transformers on our merged dir vs PEFT base + adapter: normwise relative error {e1:.3g}")
    print(f"transformers on our merged dir vs PEFT merge_and_unload (merged_logits): {e2:.3g}")
    ok = not bad and e1 < args.threshold and e2 < args.threshold
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
