#!/usr/bin/env python3
"""Checks that transformers + PEFT load a RoBERTa classification adapter written by `lora train` and agree
with `lora eval`: the same mean loss and the same predictions on the eval split.

  python3 scripts/check_peft_classifier.py --base BASE_DIR --adapter RUN_DIR --data dev.jsonl \
      [--tokenizer TOK_DIR] [--eval-dir RUN_DIR/eval-eval]

BASE_DIR: the recipe's model.path (config.json + model.safetensors, as `lora init` or save_pretrained
writes it); RUN_DIR: the adapter (adapter_config.json + adapter_model.safetensors with the head saved as
modules_to_save); data: the JSONL records `lora eval` scored (sentence1/sentence2 or sentence, label);
eval-dir: where `lora eval` wrote eval.json and predictions.txt. Exits 1 on a disagreement.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import RobertaForSequenceClassification, RobertaTokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--adapter", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--eval-dir", type=Path)
    args = ap.parse_args()
    tok_dir = args.tokenizer or args.base
    eval_dir = args.eval_dir or args.adapter / "eval-eval"
    base = RobertaForSequenceClassification.from_pretrained(args.base, dtype=torch.float32, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, args.adapter).eval()
    tok = RobertaTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"))
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    first = [r.get("sentence1", r.get("sentence")) for r in rows]
    second = [r["sentence2"] for r in rows] if "sentence2" in rows[0] else None
    enc = tok(first, second, padding=True, return_tensors="pt")
    labels = torch.tensor([r["label"] for r in rows])
    with torch.no_grad():
        logits = model(**enc).logits
    regression = logits.shape[-1] == 1
    if regression:
        loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float()).item()
        preds = logits.squeeze(-1).tolist()
    else:
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        preds = logits.argmax(-1).tolist()
    ours = json.loads((eval_dir / "eval.json").read_text())
    our_preds = [float(x) for x in (eval_dir / "predictions.txt").read_text().split()]
    rel = abs(loss - ours["loss"]) / max(abs(ours["loss"]), 1e-12)
    same = sum(abs(p - q) <= (1e-4 * max(1.0, abs(p)) if regression else 0) for p, q in zip(preds, our_preds))
    print(f"PEFT loss {loss:.8g}, lora eval loss {ours['loss']:.8g}, relative difference {rel:.2e}")
    print(f"predictions equal on {same} of {len(rows)} examples")
    ok = rel < 1e-4 and same == len(rows) and len(our_preds) == len(rows)
    print("ok" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
