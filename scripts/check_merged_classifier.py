#!/usr/bin/env python3
"""Check that transformers loads a `lora merge` of a RoBERTa adapter with a saved classification head
(PEFT modules_to_save ["classifier"]) as RobertaForSequenceClassification and reproduces PEFT's logits.

Loads MERGED with AutoModelForSequenceClassification (loading info must list no missing, unexpected or
mismatched weights), checks config.json (architectures, num_labels, id2label/label2id, problem_type),
runs the golden RoBERTa batch (tests/fixtures/golden-roberta/batch.json: padding and sentence pairs)
and compares the logits with PEFT on base + adapter and with the stored "<head>/logits". Normwise
relative error (max |diff| / max |ref|); fp32 merges should be near 1e-6.

--make-mlm-base DIR writes the golden roberta-cls encoder as transformers saves a pretrained encoder
such as roberta-base (RobertaForMaskedLM: an lm_head, no classifier, the default 2-label config), so
the merge into a base without a head can be checked too:

    python3 scripts/check_merged_classifier.py --make-mlm-base /tmp/mlm/roberta-cls
    build/lora merge --base /tmp/mlm/roberta-cls --adapter tests/fixtures/golden-roberta/adapter-cls --out /tmp/m --verify
    python3 scripts/check_merged_classifier.py --merged /tmp/m --head cls
"""
import argparse
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, RobertaForMaskedLM, RobertaForSequenceClassification

G = "tests/fixtures/golden-roberta"
LABELS = {"cls": 3, "reg": 1}


def rel(a, b):
    return (a - b).abs().max().item() / b.abs().max().item()


def make_mlm_base(out):
    cls = RobertaForSequenceClassification.from_pretrained(f"{G}/roberta-cls", dtype=torch.float32)
    cfg = cls.config.to_dict()
    for key in ("id2label", "label2id", "architectures", "problem_type"):
        cfg.pop(key, None)
    config = type(cls.config).from_dict(cfg)  # num_labels back to the default 2
    mlm = RobertaForMaskedLM(config)
    missing, unexpected = mlm.roberta.load_state_dict(cls.roberta.state_dict(), strict=False)
    assert not unexpected and all("pooler" in k for k in missing), (missing, unexpected)
    mlm.save_pretrained(out, safe_serialization=True)
    names = sorted(load_file(f"{out}/model.safetensors"))
    print(f"wrote {out}: RobertaForMaskedLM, {len(names)} tensors, lm_head: {[n for n in names if n.startswith('lm_head')]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merged")
    ap.add_argument("--head", choices=sorted(LABELS), default="cls")
    ap.add_argument("--base", help="base for PEFT's reference (default: the golden roberta-<head>)")
    ap.add_argument("--adapter", help="default: the golden adapter-<head>")
    ap.add_argument("--threshold", type=float, default=1e-5)
    ap.add_argument("--make-mlm-base", metavar="DIR")
    args = ap.parse_args()
    if args.make_mlm_base:
        make_mlm_base(args.make_mlm_base)
        return 0
    if not args.merged:
        ap.error("--merged is required")
    base_dir = args.base or f"{G}/roberta-{args.head}"
    adapter_dir = args.adapter or f"{G}/adapter-{args.head}"
    batch = json.load(open(f"{G}/batch.json"))
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])

    merged, info = AutoModelForSequenceClassification.from_pretrained(
        args.merged, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    print("model class:", type(merged).__name__)
    print("loading info:", {k: v for k, v in info.items() if v} or "clean")
    problems = [k for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
    c = merged.config
    print(f"config: architectures {c.architectures}, num_labels {c.num_labels}, id2label {c.id2label}, "
          f"label2id {c.label2id}, problem_type {c.problem_type}")
    want_problem = "regression" if LABELS[args.head] == 1 else "single_label_classification"
    if type(merged).__name__ != "RobertaForSequenceClassification" or c.architectures != ["RobertaForSequenceClassification"]:
        problems.append("architecture")
    if c.num_labels != LABELS[args.head] or c.problem_type != want_problem:
        problems.append("num_labels/problem_type")
    if {v: int(k) for k, v in c.id2label.items()} != c.label2id:
        problems.append("label2id is not id2label's inverse")

    with torch.no_grad():
        ours = merged.eval()(input_ids=ids, attention_mask=mask).logits.float()
        base = RobertaForSequenceClassification.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
        peft = PeftModel.from_pretrained(base, adapter_dir).eval()
        ref = peft(input_ids=ids, attention_mask=mask).logits
    stored = load_file(f"{G}/reference.safetensors")[f"{args.head}/logits"]
    e1, e2 = rel(ours, ref), rel(ours, stored)
    print(f"transformers on our merged dir vs PEFT base + adapter: normwise relative error {e1:.3g}")
    print(f"transformers on our merged dir vs the stored {args.head}/logits: {e2:.3g}")
    print("predictions:", ours.argmax(-1).tolist() if LABELS[args.head] > 1 else ours.squeeze(-1).tolist(),
          "PEFT:", ref.argmax(-1).tolist() if LABELS[args.head] > 1 else ref.squeeze(-1).tolist())
    ok = not problems and e1 < args.threshold and e2 < args.threshold
    print("ok" if ok else f"FAILED {problems}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
