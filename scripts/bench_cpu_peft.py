#!/usr/bin/env python3
"""The transformers + PEFT side of scripts/bench_cpu_peft.sh: LoRA training on the CPU, laid out as
`lora train` lays it out, on the same model files and the same batch, timed per step.

    python3 bench_cpu_peft.py init  --base B --out ADAPTER --targets c_attn [c_proj c_fc] --r 4 --alpha 32 --seed 1
    python3 bench_cpu_peft.py train --base B --adapter ADAPTER --data FILE --max-length 128 --steps 20 \
        --lr 1e-3 --threads 2 --out METRICS.jsonl

`init` writes PEFT's initial adapter (A random, B zero), which `lora train` also starts from
(lora.init_from), so the two runs start from the same weights. `train` reads every line of FILE
(`meaning representation||text`) as one batch, as lora does with batch_size = the number of lines:
prompt = MR + EOS (no loss), completion = " " + text + EOS (learned), cut to max_length, right padding;
the loss is the mean cross-entropy over completion tokens; AdamW without weight decay, constant lr, no
clipping, dropout off. Each step's loss and wall time go to METRICS.jsonl, one JSON object a line.
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2LMHeadModel, GPT2TokenizerFast


def load_base(path):
    base = GPT2LMHeadModel.from_pretrained(path, torch_dtype=torch.float32)
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(base.config, name, 0.0)
    for m in base.modules():  # the dropout modules were built from the config's values
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return base


def cmd_init(args):
    torch.manual_seed(args.seed)
    cfg = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=args.targets,
                     fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(load_base(args.base), cfg)
    model.save_pretrained(args.out)


def batch(args, tok):
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    rows, labels = [], []
    for line in open(args.data, encoding="utf-8"):
        line = line.strip()
        if not line:
            continue
        mr, text = [s.strip() for s in line.split("||", 1)]
        prompt = tok.encode(mr) + [eos]
        ids = (prompt + tok.encode(" " + text) + [eos])[: args.max_length]
        rows.append(ids)
        labels.append([-100] * len(prompt) + ids[len(prompt):])
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), eos, dtype=torch.long)
    lab = torch.full((len(rows), T), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(l)] = torch.tensor(l)
        mask[i, : len(r)] = 1
    return ids, lab, mask, sum(len(r) for r in rows)


def cmd_train(args):
    torch.set_num_threads(args.threads)
    tok = GPT2TokenizerFast.from_pretrained(args.base)
    model = PeftModel.from_pretrained(load_base(args.base), args.adapter, is_trainable=True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids, lab, mask, tokens = batch(args, tok)
    with open(args.out, "w") as out:
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = lab[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                     ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            out.write(json.dumps({"step": step, "loss": loss.item(), "seconds": dt, "tokens": tokens}) + "\n")
            out.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--base", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--targets", nargs="+", required=True)
    i.add_argument("--r", type=int, required=True)
    i.add_argument("--alpha", type=float, required=True)
    i.add_argument("--seed", type=int, default=1)
    t = sub.add_parser("train")
    t.add_argument("--base", required=True)
    t.add_argument("--adapter", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--out", required=True)
    args = ap.parse_args()
    cmd_init(args) if args.cmd == "init" else cmd_train(args)


if __name__ == "__main__":
    main()
