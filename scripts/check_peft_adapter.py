#!/usr/bin/env python3
"""Checks that HuggingFace PEFT loads an adapter written by `lora train` unchanged and computes the same
held-out loss as `lora eval`.

    python3 scripts/check_peft_adapter.py --base data/quickstart/base-model --adapter runs/quickstart \
        --data data/quickstart/valid.txt [--lora-eval-json runs/quickstart/eval-eval/eval.json]

It loads the base with transformers (GPT2LMHeadModel), the adapter with peft.PeftModel.from_pretrained,
tokenizes the E2E file with the base's tokenizer using lora's template (prompt = MR + EOS, no loss;
completion = " " + text + EOS, learned) and prints the mean loss over completion tokens. With
--lora-eval-json it compares with the "loss" that `lora eval --no-generate` wrote (relative 1e-4).
Needs torch, transformers and peft (pip).
"""
import argparse
import json
import sys

import torch
from peft import PeftModel
from transformers import GPT2LMHeadModel, GPT2TokenizerFast


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--lora-eval-json", default=None)
    args = ap.parse_args()

    tok = GPT2TokenizerFast.from_pretrained(args.base)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    base = GPT2LMHeadModel.from_pretrained(args.base, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, args.adapter)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for line in open(args.data, encoding="utf-8"):
            line = line.strip()
            if not line:
                continue
            mr, text = [s.strip() for s in line.split("||", 1)]
            prompt = tok.encode(mr) + [eos]
            completion = tok.encode(" " + text) + [eos]
            ids = torch.tensor([prompt + completion])
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            logits = model(input_ids=ids).logits[0, :-1]
            target = labels[0, 1:]
            loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
            total += loss.item()
            count += int((target != -100).sum())
    peft_loss = total / count
    print(f"PEFT loaded {args.adapter}: held-out loss {peft_loss:.6f} over {count} tokens")
    if args.lora_eval_json:
        ours = json.load(open(args.lora_eval_json))["loss"]
        rel = abs(ours - peft_loss) / peft_loss
        print(f"lora eval loss {ours:.6f}: relative difference {rel:.2e}")
        if rel > 1e-4:
            print("MISMATCH", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
