#!/usr/bin/env python3
"""Reference token ids from HF transformers' `generate` for tests/test_generate.cpp.

Loads the golden tiny GPT-2 (tests/fixtures/golden/gpt2-tiny) alone and with the PEFT adapter
(tests/fixtures/golden/adapter), and runs `model.generate(do_sample=False)` on a few prompts of different
lengths, one prompt at a time (batch of 1: no padding), for greedy and beam-search settings. The EOS id
of each model is a token its own greedy continuations actually produce, so stopping at EOS is exercised.
Writes tests/fixtures/generate/generate.json:

  {"format": "lora-generate-fixture", "version": 1, "versions": {...},
   "prompts": [[ids], ...],
   "cases": [{"name", "adapter" (bool), "num_beams", "max_new_tokens", "length_penalty",
              "no_repeat_ngram_size", "eos_token_id" (-1: none), "pad_token_id",
              "outputs": [[generated ids, EOS included when generation stopped on it], ...]}]}

Run from the repository root:  python3 scripts/make_generate_fixtures.py
"""
import argparse
import collections
import json
from pathlib import Path

import peft
import torch
import transformers
from peft import PeftModel
from transformers import GPT2LMHeadModel

GOLDEN = Path("tests/fixtures/golden")
PAD_ID = 0
# Different lengths (1 to 13 tokens), ids in the tiny vocabulary [0, 97). 13 + 24 new tokens < 64 positions.
PROMPTS = [
    [5, 17, 42],
    [88, 3, 61, 20, 9, 73, 14],
    [33],
    [12, 12, 40, 7, 95, 0, 58, 26, 71, 3, 44, 19, 60],
    [64, 29, 8, 50, 81],
    [2, 77, 31, 31, 90, 15, 6, 47, 23],
]


def load(adapter):
    model = GPT2LMHeadModel.from_pretrained(GOLDEN / "gpt2-tiny", torch_dtype=torch.float32, attn_implementation="eager")
    if adapter:
        model = PeftModel.from_pretrained(model, GOLDEN / "adapter")
    model.eval()
    return model


def run(model, prompt, num_beams, max_new, length_penalty, no_repeat, eos):
    # generation_config's eos (96, from config.json) would apply when none is passed: set it explicitly.
    model.generation_config.eos_token_id = None if eos < 0 else eos
    model.generation_config.pad_token_id = PAD_ID
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             num_beams=num_beams, num_return_sequences=1, max_new_tokens=max_new,
                             length_penalty=length_penalty, no_repeat_ngram_size=no_repeat,
                             early_stopping=False, eos_token_id=None if eos < 0 else eos,
                             pad_token_id=PAD_ID)
    return out[0, len(prompt):].tolist()


def pick_eos(outputs):
    # A token that some greedy continuations produce, but none in their first 3 tokens (an EOS that is
    # likely at once makes beam search stop at length 1), in as close to half of them as possible, so
    # that some prompts stop on it and others run to max_new_tokens. Ties: the smallest id.
    early = set(t for o in outputs for t in o[:3])
    seen = collections.Counter()
    for o in outputs:
        seen.update(set(o[3:]) - early)
    n = len(outputs)
    return min(seen, key=lambda tok: (abs(seen[tok] - n / 2), tok))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/generate")
    args = ap.parse_args()
    torch.manual_seed(0)
    models = {False: load(False), True: load(True)}
    eos = {a: pick_eos([run(m, p, 1, 20, 1.0, 0, -1) for p in PROMPTS]) for a, m in models.items()}
    settings = [
        # name, adapter, beams, max_new, length_penalty, no_repeat, eos
        ("greedy base", False, 1, 20, 1.0, 0, -1),
        ("greedy adapter eos", True, 1, 20, 1.0, 0, eos[True]),
        ("greedy adapter no-repeat 3", True, 1, 24, 1.0, 3, -1),
        ("beam 4 lp 0.8 no-repeat 4 adapter eos", True, 4, 20, 0.8, 4, eos[True]),
        ("beam 4 lp 0.8 no-repeat 4 base eos", False, 4, 20, 0.8, 4, eos[False]),
        ("beam 3 lp 1.0 base eos", False, 3, 20, 1.0, 0, eos[False]),
        ("beam 3 lp 1.0 adapter", True, 3, 16, 1.0, 0, -1),
        ("beam 5 lp 2.0 no-repeat 2 adapter eos", True, 5, 24, 2.0, 2, eos[True]),
    ]
    cases = []
    for name, adapter, beams, max_new, lp, nr, e in settings:
        outs = [run(models[adapter], p, beams, max_new, lp, nr, e) for p in PROMPTS]
        stopped = sum(1 for o in outs if e >= 0 and o and o[-1] == e)
        print(f"{name}: eos {e}, {stopped}/{len(outs)} stopped on EOS, lengths {[len(o) for o in outs]}")
        cases.append(dict(name=name, adapter=adapter, num_beams=beams, max_new_tokens=max_new, length_penalty=lp,
                          no_repeat_ngram_size=nr, eos_token_id=e, pad_token_id=PAD_ID, outputs=outs))
    doc = dict(format="lora-generate-fixture", version=1,
               versions=dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__),
               prompts=PROMPTS, cases=cases)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "generate.json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {out / 'generate.json'}")


if __name__ == "__main__":
    main()
