#!/usr/bin/env python3
"""Golden fixtures from the reference implementation (PyTorch + transformers + PEFT).

What it builds, with fixed seeds, in float32 on the CPU:
  gpt2-tiny/      a tiny random GPT-2 (2 layers, 2 heads, C=32, T<=64, V=97, tied embeddings) whose
                  LayerNorm weights/biases and linear biases are perturbed away from 1/0, saved with
                  save_pretrained (config.json + model.safetensors)
  adapter/        a PEFT LoRA adapter on it (r=4, alpha=8, c_attn/c_proj/c_fc, fan_in_fan_out, A and B
                  both non-zero), saved with save_pretrained (adapter_config.json + adapter_model.safetensors)
  adapter-rslora/ the same A and B tensors with use_rslora=True (scale alpha/sqrt(r) instead of alpha/r)
  merged/         gpt2-tiny with `adapter` folded in by PEFT's merge_and_unload, saved with save_pretrained
  batch.json      a fixed right-padded batch (B=2, T=12) with attention mask and HF-convention labels
  reference.safetensors  logits, losses and LoRA gradients of the reference (see README.md there)
  trajectory.json 10 AdamW steps over the LoRA parameters on that batch: the loss before each update
  README.md       what each file holds, conventions, library versions, how to regenerate

Every reference number is computed from models re-loaded from the files written here, so the fixtures
describe exactly what the C++ side reads.

Run:  python3 scripts/make_golden.py --out tests/fixtures/golden
Needs torch, transformers and peft (versions are recorded in the README it writes).
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
from transformers import GPT2Config, GPT2LMHeadModel

B, T, V = 2, 12, 97
LENGTHS = [12, 9]        # example 1 is right-padded at positions 9..11
PROMPT_LEN = 3           # first 3 positions of each example carry no loss (labels -100)
PAD_ID = 0               # id written at padded positions (they are masked and ignored)
LORA_R, LORA_ALPHA = 4, 8
TARGETS = ["c_attn", "c_proj", "c_fc"]
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
STEPS = 10


def make_config():
    return GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=V, n_inner=None,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=V - 1, eos_token_id=V - 1,
        # 10x GPT-2's 0.02, so logits (~N(0,1)) and attention scores are far from uniform and a wrong
        # scale or mask shows up well above fp32 noise
        initializer_range=0.2)


def load_base(path):
    # eager attention: the plain softmax(QK^T/sqrt(HS) + mask) V that our CPU backend mirrors
    return GPT2LMHeadModel.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")


def build_base(out, seed):
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(make_config())
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):  # LayerNorm and Conv1D biases, zero after the default init
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out / "gpt2-tiny", safe_serialization=True)


def build_adapters(out, seed):
    base = load_base(out / "gpt2-tiny")
    torch.manual_seed(seed + 2)
    cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS, fan_in_fan_out=True,
                     lora_dropout=0.0, bias="none", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # init_lora_weights=False leaves nn.Linear's default init (B non-zero); make sure of it
            if "lora_B" in name and p.abs().max() == 0:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out / "adapter", safe_serialization=True)
    (out / "adapter" / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
    state = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    base = load_base(out / "gpt2-tiny")
    cfg_rs = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=TARGETS, fan_in_fan_out=True,
                        lora_dropout=0.0, bias="none", init_lora_weights=False, use_rslora=True,
                        task_type="CAUSAL_LM")
    model_rs = get_peft_model(base, cfg_rs)
    with torch.no_grad():
        for n, p in model_rs.named_parameters():
            if "lora_" in n:
                p.copy_(state[n])
    model_rs.save_pretrained(out / "adapter-rslora", safe_serialization=True)
    (out / "adapter-rslora" / "README.md").unlink(missing_ok=True)


def make_batch(seed):
    g = torch.Generator().manual_seed(seed + 4)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1
        ids[b, n:] = PAD_ID
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :PROMPT_LEN] = -100
    return ids, mask, labels


def saved_name(param_name):
    # named_parameters carry the adapter name ("...lora_A.default.weight"); the saved file does not
    return param_name.replace(".default.", ".")


def shifted_ce(logits, labels, label_smoothing=0.0):
    """HF causal-LM loss: logits at t predict labels at t+1; mean over targets != -100."""
    return F.cross_entropy(logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1),
                           ignore_index=-100, label_smoothing=label_smoothing)


def lora_model(out, adapter):
    model = PeftModel.from_pretrained(load_base(out / "gpt2-tiny"), out / adapter, is_trainable=True)
    model.train()  # dropout is 0 everywhere, so train mode is deterministic
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/golden"))
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    out = args.out
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for sub in ("gpt2-tiny", "adapter", "adapter-rslora", "merged"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    build_base(out, args.seed)
    build_adapters(out, args.seed)
    ids, mask, labels = make_batch(args.seed)
    (out / "batch.json").write_text(json.dumps({
        "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
        "lengths": LENGTHS, "prompt_len": PROMPT_LEN, "pad_id": PAD_ID}, indent=1) + "\n")

    ref = {}
    with torch.no_grad():
        base = load_base(out / "gpt2-tiny").eval()
        ref["base_logits"] = base(input_ids=ids, attention_mask=mask).logits
        ref["base_loss"] = shifted_ce(ref["base_logits"], labels).reshape(1)

    model = lora_model(out, "adapter")
    res = model(input_ids=ids, attention_mask=mask, labels=labels)
    loss = res.loss
    ours = shifted_ce(res.logits, labels)
    if not torch.allclose(loss, ours, rtol=0, atol=1e-6):
        raise SystemExit(f"HF loss {loss.item()} differs from the shifted mean cross-entropy {ours.item()}")
    loss.backward()
    ref["logits"] = res.logits.detach()
    ref["loss"] = loss.detach().reshape(1)
    ref["loss_ls01"] = shifted_ce(res.logits.detach(), labels, label_smoothing=0.1).reshape(1)
    lora_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not lora_params or any("lora_" not in n for n, _ in lora_params):
        raise SystemExit("expected only LoRA parameters to be trainable")
    for n, p in lora_params:
        ref["grad/" + saved_name(n)] = p.grad.detach().clone()

    # AdamW trajectory: fresh copy of the adapter, same batch every step, loss recorded before each update
    model = lora_model(out, "adapter")
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, **ADAMW)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        step_loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        losses.append(step_loss.item())
        step_loss.backward()
        opt.step()
    with torch.no_grad():
        loss_after = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
        for n, p in model.named_parameters():
            if p.requires_grad:
                ref[f"after{STEPS}/" + saved_name(n)] = p.detach().clone()
    (out / "trajectory.json").write_text(json.dumps({
        "lr": ADAMW["lr"], "betas": list(ADAMW["betas"]), "eps": ADAMW["eps"],
        "weight_decay": ADAMW["weight_decay"], "steps": STEPS, "losses": losses,
        "loss_after_last_step": loss_after}, indent=1) + "\n")

    with torch.no_grad():
        ref["rslora_logits"] = lora_model(out, "adapter-rslora")(input_ids=ids, attention_mask=mask).logits
        merged = lora_model(out, "adapter").merge_and_unload()
        merged.eval()
        ref["merged_logits"] = merged(input_ids=ids, attention_mask=mask).logits
        merged.save_pretrained(out / "merged", safe_serialization=True)

    ref = {k: v.detach().to(torch.float32).contiguous() for k, v in ref.items()}
    # one metadata key: safetensors writes several keys in hash order, which would make reruns differ
    save_file(ref, str(out / "reference.safetensors"), metadata={"lora_golden": (
        f"version=1 torch={torch.__version__} transformers={transformers.__version__} peft={peft.__version__}")})
    write_readme(out, losses, ref)

    valid = mask.bool()
    print(f"torch {torch.__version__}  transformers {transformers.__version__}  peft {peft.__version__}")
    for k in ("base_logits", "logits", "rslora_logits", "merged_logits"):
        print(f"{k:14s} {tuple(ref[k].shape)}")
    print(f"loss {ref['loss'].item():.6f}  loss_ls01 {ref['loss_ls01'].item():.6f}  "
          f"base_loss {ref['base_loss'].item():.6f}")
    print(f"max |merged - adapter| logits on valid positions: "
          f"{(ref['merged_logits'] - ref['logits'])[valid].abs().max().item():.2e}")
    print(f"max |rslora - adapter| logits on valid positions: "
          f"{(ref['rslora_logits'] - ref['logits'])[valid].abs().max().item():.2e}")
    print(f"{sum(1 for k in ref if k.startswith('grad/'))} LoRA gradients, e.g.")
    for k in [k for k in ref if k.startswith("grad/")][:4]:
        print(f"  {k} {tuple(ref[k].shape)}")
    print("trajectory:", " ".join(f"{x:.4f}" for x in losses), f"-> {loss_after:.4f}")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 1024:.0f} KiB")


README = """# Golden fixtures (reference implementation)

Made by `scripts/make_golden.py` with PyTorch {torch}, transformers {transformers}, PEFT {peft},
in float32 on the CPU with fixed seeds. Regenerate with

    python3 scripts/make_golden.py --out tests/fixtures/golden

Values can move in the last bits between library versions; tests compare with tolerances, not bit for bit.

## Files

- `gpt2-tiny/` (`config.json`, `model.safetensors`): a random GPT-2, n_layer 2, n_head 2, n_embd 32,
  n_positions 64, vocab_size 97, n_inner null (MLP 4*32 = 128), activation `gelu_new` (tanh form),
  dropouts 0, layer_norm_epsilon 1e-5, initializer_range 0.2 (10x GPT-2's, so logits and attention
  scores are O(1)), tied embeddings (`lm_head.weight` is not stored; it is
  `transformer.wte.weight`). HF default init, then LayerNorm weights set to 1 + 0.1*N(0,1) and every
  bias (LayerNorm and Conv1D) to 0.05*N(0,1) so that none is trivially 1 or 0. Conv1D weights are stored
  (in, out), as GPT-2 does; `c_attn` is the fused q,k,v projection (out = 3*32, q then k then v).
- `adapter/` (`adapter_config.json`, `adapter_model.safetensors`): PEFT LoRA, r 4, lora_alpha 8
  (scale alpha/r = 2), target_modules c_attn, c_proj, c_fc (c_proj matches both `attn.c_proj` and
  `mlp.c_proj`), fan_in_fan_out true, lora_dropout 0, `init_lora_weights=False`, so A and B both keep
  nn.Linear's default init (kaiming-uniform, a = sqrt(5)): B is non-zero. 4 modules x 2 layers = 8
  modules, 16 tensors named like `base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`;
  lora_A is (r, in), lora_B is (out, r), whatever the Conv1D storage of the base weight.
  The adapter's effect on a Conv1D layer: y = x W0 + b + scale * (x A^T) B^T.
- `adapter-rslora/`: the same A and B tensors with `use_rslora: true` (scale alpha/sqrt(r) = 4).
- `merged/` (`config.json`, `model.safetensors`): `gpt2-tiny` with `adapter` folded in by PEFT's
  `merge_and_unload()` (W = W0 + scale * (B A)^T in Conv1D layout), saved with `save_pretrained`.
  `lora merge --base gpt2-tiny --adapter adapter` should reproduce it.
- `batch.json`: `input_ids` (B=2, T=12) ids in [0, 97); `attention_mask` (1 valid, 0 padding);
  `lengths` [12, 9] (right padding: example 1 is padded at positions 9..11 with `pad_id` 0);
  `labels`: input_ids with -100 at padding and at the first `prompt_len` = 3 positions of each example.
- `reference.safetensors` (all float32; `__metadata__` holds one key, `lora_golden`, with the format
  version and the library versions):
  - `logits` (2, 12, 97): PEFT model (base + `adapter`), train mode (dropout is 0 everywhere).
    Padded positions are included but only valid ones (attention_mask 1) are meaningful: padding is
    masked as a key, padded queries still produce numbers.
  - `loss` (1): HF causal-LM loss of those logits.
  - `loss_ls01` (1): the same with `torch.nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=-100)`,
    i.e. per target (1 - 0.1) * (-log p[y]) + 0.1 * mean over all V classes of (-log p[c]), then the mean.
  - `grad/<PEFT name>`: d loss / d every LoRA tensor, named as in `adapter_model.safetensors`.
  - `base_logits` (2, 12, 97), `base_loss` (1): the base model alone (no adapter).
  - `rslora_logits` (2, 12, 97): base + `adapter-rslora`.
  - `merged_logits` (2, 12, 97): the `merged/` model.
  - `after{steps}/<PEFT name>`: the LoRA tensors after the {steps} AdamW steps of `trajectory.json`.
- `trajectory.json`: `torch.optim.AdamW(lr {lr}, betas (0.9, 0.999), eps 1e-8, weight_decay {wd})` over
  the LoRA tensors only (decoupled decay applied to them: p *= 1 - lr*wd, then the bias-corrected Adam
  step), the same batch every step, constant lr, no clipping. `losses[i]` is the loss computed before
  update i+1 (losses[0] equals `loss`); `loss_after_last_step` is the loss after the last update.

## Conventions

- Causal-LM loss as in transformers: logits at position t predict labels at t+1 (the shift), cross-entropy
  averaged over the shifted targets whose label is not -100. Here that is (12 - 3) + (9 - 3) = 15 targets.
- Position ids are 0..T-1 for every row (right padding, so valid tokens get 0..length-1).
- Attention: causal, plus key masking from attention_mask; softmax(Q K^T / sqrt(16) + mask) V.
- Loss at the start: {loss0:.6f}; trajectory: {traj}.
"""


def write_readme(out, losses, ref):
    text = README.format(
        torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
        lr=ADAMW["lr"], wd=ADAMW["weight_decay"], steps=STEPS, loss0=ref["loss"].item(),
        traj=", ".join(f"{x:.4f}" for x in losses))
    (out / "README.md").write_text(text)


if __name__ == "__main__":
    main()
