#!/usr/bin/env python3
"""Same-precision references for the GPU tests: how far PyTorch itself lands from fp32 in bf16 and fp16.

The GPU tests (tests/test_cuda_ops.cpp, tests/test_cuda_train.cpp) hold a bf16 result to within about 1e-2
and to no worse than twice a same-precision reference. For single ops that reference is the output rounding; for a whole training
step on the golden tiny GPT-2 it is PyTorch + PEFT run in that dtype. This script loads the fixtures of
scripts/make_golden.py (gpt2-tiny, adapter, batch.json), runs the forward and backward pass in float32 and
again with the whole model (frozen weights, LoRA weights, activations) cast to bfloat16 and to float16, as a
PEFT user with torch_dtype=bfloat16 gets, and writes the normwise relative error of each low-precision
result against float32 (max |x - x32| / max |x32|, over valid positions for the logits) into
lowp_reference.json. tests/test_cuda_train.cpp reads it.

It also writes adapter-attn/: the golden adapter restricted to c_attn (its c_attn tensors unchanged, the
MLP's and c_proj's dropped), so the MLP runs without an adapter, as in the paper's E2E placement, and the
CUDA backend fuses its bias and GELU into the GEMMs. Its errors go under "grads_attn".

Run:  python3 scripts/make_golden_lowp.py --golden tests/fixtures/golden
Needs torch, transformers and peft; deterministic on the CPU.
"""
import argparse
import json
from pathlib import Path

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel


def write_attn_adapter(golden):
    """adapter-attn/: the golden adapter's c_attn tensors alone, with target_modules ["c_attn"]."""
    src, dst = golden / "adapter", golden / "adapter-attn"
    dst.mkdir(exist_ok=True)
    config = json.loads((src / "adapter_config.json").read_text())
    config["target_modules"] = ["c_attn"]
    (dst / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tensors = load_file(src / "adapter_model.safetensors")
    save_file({n: t for n, t in tensors.items() if ".attn.c_attn." in n}, dst / "adapter_model.safetensors")


def run(golden, dtype, ids, mask, labels, adapter="adapter"):
    base = GPT2LMHeadModel.from_pretrained(golden / "gpt2-tiny", torch_dtype=torch.float32,
                                           attn_implementation="eager")
    model = PeftModel.from_pretrained(base, golden / adapter, is_trainable=True).to(dtype)
    model.train()  # dropout is 0 in the fixture
    logits = model(input_ids=ids, attention_mask=mask).logits
    V = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1, :].float().reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    loss.backward()
    grads = {n.replace(".default.", "."): p.grad.detach().float().clone()
             for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach().float(), loss.item(), grads


def normwise(x, ref):
    return ((x - ref).abs().max() / ref.abs().max()).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", type=Path, default=Path("tests/fixtures/golden"))
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    batch = json.loads((args.golden / "batch.json").read_text())
    ids = torch.tensor(batch["input_ids"])
    mask = torch.tensor(batch["attention_mask"])
    labels = torch.tensor(batch["labels"])
    valid = mask.bool()

    write_attn_adapter(args.golden)
    logits32, loss32, grads32 = run(args.golden, torch.float32, ids, mask, labels)
    _, _, attn32 = run(args.golden, torch.float32, ids, mask, labels, "adapter-attn")
    out = {"version": 1,
           "what": "normwise relative error of PyTorch+PEFT in the dtype against float32 on the golden batch",
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__}}
    for name, dtype in (("bf16", torch.bfloat16), ("f16", torch.float16)):
        logits, loss, grads = run(args.golden, dtype, ids, mask, labels)
        out[name] = {
            "logits": normwise(logits[valid], logits32[valid]),
            "loss": abs(loss - loss32) / abs(loss32),
            "grads": {n: normwise(grads[n], g) for n, g in sorted(grads32.items())},
        }
        _, _, attn = run(args.golden, dtype, ids, mask, labels, "adapter-attn")
        out[name]["grads_attn"] = {n: normwise(attn[n], g) for n, g in sorted(attn32.items())}
        worst = max(out[name]["grads"].values())
        print(f"{name}: logits {out[name]['logits']:.3g}  loss {out[name]['loss']:.3g}  worst grad {worst:.3g}")
    (args.golden / "lowp_reference.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
