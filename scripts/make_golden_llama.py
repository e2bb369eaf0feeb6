#!/usr/bin/env python3
"""Golden fixtures for the LLaMA family from the reference implementation (PyTorch + transformers + PEFT).

What it builds, with fixed seeds, in float32 on the CPU:
  llama-tiny/     a tiny random LlamaForCausalLM (2 layers, hidden 32, 4 heads, 2 KV heads, intermediate 64,
                  vocab 97, rope_theta 10000, rms_norm_eps 1e-5, untied lm_head) whose RMSNorm weights are
                  perturbed away from 1, saved with save_pretrained (config.json + model.safetensors)
  adapter/        a PEFT LoRA adapter on it (r 4, alpha 8, q k v o gate up down projections,
                  init_lora_weights=False, B made non-zero), saved with save_pretrained
  reference.safetensors  base_logits, logits, loss, grad/<PEFT name> (see README.md there)
The batch is tests/fixtures/golden/batch.json (same convention; read, not rewritten).

Run:  python3 scripts/make_golden_llama.py --out tests/fixtures/golden-llama
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

import peft
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

V = 97
LORA_R, LORA_ALPHA = 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_config():
    return LlamaConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=V, max_position_embeddings=64, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, hidden_act="silu", attention_bias=False,
        mlp_bias=False, attention_dropout=0.0, bos_token_id=V - 1, eos_token_id=V - 1,
        initializer_range=0.2)


def load_base(path):
    return LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")


def build_base(out, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(make_config())
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out / "llama-tiny", safe_serialization=True)
    (out / "llama-tiny" / "generation_config.json").unlink(missing_ok=True)


def build_adapter(out, seed):
    base = load_base(out / "llama-tiny")
    torch.manual_seed(seed + 2)
    cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                     init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and p.abs().max() == 0:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out / "adapter", safe_serialization=True)
    (out / "adapter" / "README.md").unlink(missing_ok=True)


def load_batch(golden):
    j = json.loads((golden / "batch.json").read_text())
    return (torch.tensor(j["input_ids"]), torch.tensor(j["attention_mask"]), torch.tensor(j["labels"]))


def shifted_ce(logits, labels):
    return F.cross_entropy(logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/golden-llama"))
    ap.add_argument("--golden", type=Path, default=Path("tests/fixtures/golden"))
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()
    out = args.out
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for sub in ("llama-tiny", "adapter"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    build_base(out, args.seed)
    build_adapter(out, args.seed)
    ids, mask, labels = load_batch(args.golden)

    ref = {}
    with torch.no_grad():
        base = load_base(out / "llama-tiny").eval()
        ref["base_logits"] = base(input_ids=ids, attention_mask=mask).logits
    model = PeftModel.from_pretrained(load_base(out / "llama-tiny"), out / "adapter", is_trainable=True)
    model.train()
    res = model(input_ids=ids, attention_mask=mask, labels=labels)
    loss = res.loss
    ours = shifted_ce(res.logits, labels)
    if not torch.allclose(loss, ours, rtol=0, atol=1e-6):
        raise SystemExit(f"HF loss {loss.item()} differs from the shifted mean cross-entropy {ours.item()}")
    loss.backward()
    ref["logits"] = res.logits.detach()
    ref["loss"] = loss.detach().reshape(1)
    n = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert "lora_" in name, name
            ref["grad/" + name.replace(".default.", ".")] = p.grad.detach().clone()
            n += 1
    ref = {k: v.detach().to(torch.float32).contiguous() for k, v in ref.items()}
    save_file(ref, str(out / "reference.safetensors"), metadata={"lora_golden": (
        f"version=1 torch={torch.__version__} transformers={transformers.__version__} peft={peft.__version__}")})
    (out / "README.md").write_text(README.format(torch=torch.__version__, transformers=transformers.__version__,
                                                 peft=peft.__version__, n=n))
    print(f"loss {ref['loss'].item():.6f}, {n} LoRA gradients")


README = """# Golden fixtures, LLaMA family (reference implementation)

Made by `scripts/make_golden_llama.py` with PyTorch {torch}, transformers {transformers}, PEFT {peft},
float32 on the CPU, fixed seeds. Regenerate with

    python3 scripts/make_golden_llama.py --out tests/fixtures/golden-llama

- `llama-tiny/`: random LlamaForCausalLM, 2 layers, hidden 32, 4 heads, 2 KV heads (head_dim 8),
  intermediate 64, vocab 97, max_position_embeddings 64, rope_theta 10000, rms_norm_eps 1e-5, no biases,
  `tie_word_embeddings` false (separate `lm_head.weight`), initializer_range 0.2; every RMSNorm weight
  set to 1 + 0.1*N(0,1). nn.Linear weights (out, in).
- `adapter/`: PEFT LoRA r 4, alpha 8 (scale 2) on q_proj k_proj v_proj o_proj gate_proj up_proj down_proj,
  fan_in_fan_out false, init_lora_weights=False (A and B both non-zero); {n} tensors named like
  `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
- The batch is `../golden/batch.json` (B 2, T 12, lengths [12, 9], right padding, labels -100 on padding
  and the first 3 positions).
- `reference.safetensors`: `base_logits` (2,12,97) of the base model; `logits` (2,12,97) and `loss` (1)
  of base + adapter (eager attention, train mode, dropout 0); `grad/<PEFT name>` d loss / d each LoRA tensor.
"""

if __name__ == "__main__":
    main()
