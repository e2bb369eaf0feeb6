#!/usr/bin/env python3
"""Golden fixtures for the LLaMA family from the reference implementation (PyTorch + transformers + PEFT).

What it builds, with fixed seeds, in float32 on the CPU:
  llama-tiny/     a tiny random LlamaForCausalLM (2 layers, hidden 32, 4 heads, 2 KV heads, intermediate 64,
                  vocab 97, rope_theta 10000, rms_norm_eps 1e-5, untied lm_head) whose RMSNorm weights are
                  perturbed away from 1, saved with save_pretrained (config.json + model.safetensors)
  adapter/        a PEFT LoRA adapter on it (r 4, alpha 8, q k v o gate up down projections,
                  init_lora_weights=False, B made non-zero), saved with save_pretrained
  reference.safetensors  base_logits, logits, loss, grad/<PEFT name> (see README.md there)
With --family mistral the model is a MistralForCausalLM of the same shapes with sliding_window 5, shorter
than the batch (mistral-tiny/), and generate.json adds greedy and beam-search continuations by
transformers' generate that run past the window. The script checks that transformers applies the window
(eager and SDPA attention agree, and both differ from full attention) before it writes anything.
With --family qwen2-swa the model is a Qwen2ForCausalLM of the same shapes (plus Qwen2's q/k/v biases)
with use_sliding_window, sliding_window 5 and layer_types [sliding, full]: the window on layer 0 only,
which max_window_layers 1 (the rule without layer_types) would put on layer 1 instead (qwen2-swa-tiny/);
generate.json as for Mistral, and trajectory.json, 10 AdamW steps of the adapter. The checks also show that
both other placements of the window (every layer, layer 1 only) give other logits.
The batch is tests/fixtures/golden/batch.json (same convention; read, not rewritten).

Run:  python3 scripts/make_golden_llama.py --out tests/fixtures/golden-llama
      python3 scripts/make_golden_llama.py --family mistral --out tests/fixtures/golden-mistral
      python3 scripts/make_golden_llama.py --family qwen2-swa --out tests/fixtures/golden-qwen2-swa
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
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

V = 97
LORA_R, LORA_ALPHA = 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WINDOW = 5  # Mistral's and Qwen2's sliding_window: shorter than the batch's 12 and 9 tokens
# (config class, model class, checkpoint folder) per family.
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM, "llama-tiny"),
            "mistral": (MistralConfig, MistralForCausalLM, "mistral-tiny"),
            "qwen2-swa": (Qwen2Config, Qwen2ForCausalLM, "qwen2-swa-tiny")}
# Qwen2's window on layer 0 only. Without layer_types, max_window_layers 1 would slide layer 1 instead
# (Qwen2Config: layers i >= max_window_layers), so the fixture tells the two rules apart.
QWEN2_LAYER_TYPES = ["sliding_attention", "full_attention"]
# Overrides that give full attention on every layer, per windowed family. Qwen2 keeps its window and
# marks every layer full (use_sliding_window False with sliding layers in layer_types fails in transformers).
FULL = {"mistral": dict(sliding_window=None), "qwen2-swa": dict(layer_types=["full_attention"] * 2)}
# The other placements of Qwen2's window, each of which must give other logits than the fixture's.
QWEN2_OTHER = {"every layer": ["sliding_attention"] * 2, "layer 1 only (max_window_layers 1)":
               ["full_attention", "sliding_attention"]}
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)  # scripts/make_golden.py's
STEPS = 10
# Generation past the window: prompts of 1 to 7 tokens and 12 new ones (up to 19 positions).
PROMPTS = [[5, 17, 42], [88, 3, 61, 20, 9, 73, 14], [33], [64, 29, 8, 50, 81]]
MAX_NEW = 12
PAD_ID = 0


def make_config(family):
    # LLaMA's bias flags (Mistral stores them as extra keys, unread; Qwen2 has fixed biases).
    extra = {"llama": dict(attention_bias=False, mlp_bias=False),
             "mistral": dict(attention_bias=False, mlp_bias=False, sliding_window=WINDOW),
             "qwen2-swa": dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1,
                               layer_types=QWEN2_LAYER_TYPES)}[family]
    return FAMILIES[family][0](
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=V, max_position_embeddings=64, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, hidden_act="silu", attention_dropout=0.0,
        bos_token_id=V - 1, eos_token_id=V - 1, initializer_range=0.2, **extra)


def load_base(family, path, attn="eager", **override):
    config = FAMILIES[family][0].from_pretrained(path, **override)
    return FAMILIES[family][1].from_pretrained(path, config=config, torch_dtype=torch.float32,
                                               attn_implementation=attn)


def build_base(family, out, seed):
    torch.manual_seed(seed)
    model = FAMILIES[family][1](make_config(family))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):  # Qwen2's q/k/v biases, zero at initialisation
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    sub = FAMILIES[family][2]
    model.save_pretrained(out / sub, safe_serialization=True)
    (out / sub / "generation_config.json").unlink(missing_ok=True)


def build_adapter(family, out, seed):
    base = load_base(family, out / FAMILIES[family][2])
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


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def check_window(family, out, ids, mask, base_logits):
    """transformers applies the window: SDPA agrees with eager; full attention agrees on the first WINDOW
    positions, which the window does not cut, and differs after them. Qwen2: the window on every layer,
    or on layer 1 only, differs after them too, so the fixture tests where the window is."""
    d = out / FAMILIES[family][2]

    def logits(attn="eager", **override):
        return load_base(family, d, attn=attn, **override).eval()(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad():
        sdpa, full = logits("sdpa"), logits(**FULL[family])
        others = {k: logits(layer_types=v) for k, v in QWEN2_OTHER.items()} if family == "qwen2-swa" else {}
    checks = [("sdpa against eager", rel(sdpa, base_logits), "<", 1e-5),
              ("full attention, first window", rel(full[:, :WINDOW], base_logits[:, :WINDOW]), "<", 1e-5),
              ("full attention, after the window", rel(full[:, WINDOW:], base_logits[:, WINDOW:]), ">", 1e-2)]
    checks += [(f"window on {k}, after the window", rel(v[:, WINDOW:], base_logits[:, WINDOW:]), ">", 1e-2)
               for k, v in others.items()]
    for what, err, op, bound in checks:
        print(f"window check: {what}: normwise relative difference {err:.3g}")
        if not (err < bound if op == "<" else err > bound):
            raise SystemExit(f"transformers did not apply sliding_window {WINDOW} as expected ({what}: {err:.3g})")


def run_generate(model, prompt, num_beams):
    # generation_config's eos (96, from config.json) would apply when none is passed: set none.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_ID
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             num_beams=num_beams, num_return_sequences=1, max_new_tokens=MAX_NEW,
                             length_penalty=1.0, early_stopping=False, eos_token_id=None, pad_token_id=PAD_ID)
    return out[0, len(prompt):].tolist()


def generate_cases(family, out):
    """Greedy and beam-search continuations past the window, one prompt at a time (as
    scripts/make_generate_fixtures.py), in its generate.json format; each case also run with full
    attention, and at least one must differ, or the fixture would not test the window."""
    def load(adapter, **override):
        m = load_base(family, out / FAMILIES[family][2], **override)
        return (PeftModel.from_pretrained(m, out / "adapter") if adapter else m).eval()
    cases, differ = [], 0
    for name, adapter, beams in (("greedy base", False, 1), ("greedy adapter", True, 1), ("beam 3 adapter", True, 3)):
        model, full = load(adapter), load(adapter, **FULL[family])
        outs = [run_generate(model, p, beams) for p in PROMPTS]
        outs_full = [run_generate(full, p, beams) for p in PROMPTS]
        n = sum(a != b for a, b in zip(outs, outs_full))
        differ += n
        print(f"generate {name}: {n} of {len(PROMPTS)} continuations differ from full attention's")
        cases.append(dict(name=name, adapter=adapter, num_beams=beams, max_new_tokens=MAX_NEW, length_penalty=1.0,
                          no_repeat_ngram_size=0, eos_token_id=-1, pad_token_id=PAD_ID, outputs=outs))
    if differ == 0:
        raise SystemExit("every continuation is the same with full attention: the fixture would not test the window")
    return dict(format="lora-generate-fixture", version=1,
                versions=dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__),
                prompts=PROMPTS, cases=cases)


def trajectory(family, out, ids, mask, labels):
    """STEPS AdamW steps on the adapter, the batch every step, the loss recorded before each update (as
    scripts/make_golden.py's trajectory.json)."""
    model = PeftModel.from_pretrained(load_base(family, out / FAMILIES[family][2]), out / "adapter", is_trainable=True)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **ADAMW)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
    print("trajectory:", " ".join(f"{x:.4f}" for x in losses))
    return dict(lr=ADAMW["lr"], betas=list(ADAMW["betas"]), eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"],
                steps=STEPS, losses=losses)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="llama")
    ap.add_argument("--out", type=Path, default=None, help="default: tests/fixtures/golden-<family>")
    ap.add_argument("--golden", type=Path, default=Path("tests/fixtures/golden"))
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()
    family = args.family
    out = args.out or Path(f"tests/fixtures/golden-{family}")
    sub = FAMILIES[family][2]
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for d in (sub, "adapter"):
        shutil.rmtree(out / d, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    build_base(family, out, args.seed)
    build_adapter(family, out, args.seed)
    ids, mask, labels = load_batch(args.golden)

    ref = {}
    with torch.no_grad():
        base = load_base(family, out / sub).eval()
        ref["base_logits"] = base(input_ids=ids, attention_mask=mask).logits
    if family in FULL:
        check_window(family, out, ids, mask, ref["base_logits"])
    model = PeftModel.from_pretrained(load_base(family, out / sub), out / "adapter", is_trainable=True)
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
    if family in FULL:
        with open(out / "generate.json", "w") as f:
            json.dump(generate_cases(family, out), f, indent=1)
            f.write("\n")
    if family == "qwen2-swa":
        (out / "trajectory.json").write_text(json.dumps(trajectory(family, out, ids, mask, labels), indent=1) + "\n")
    readme = {"llama": README, "mistral": README_MISTRAL, "qwen2-swa": README_QWEN2_SWA}[family]
    (out / "README.md").write_text(readme.format(torch=torch.__version__, transformers=transformers.__version__,
                                                 peft=peft.__version__, n=n, window=WINDOW, before=WINDOW - 1,
                                                 max_new=MAX_NEW, steps=STEPS, lr=ADAMW["lr"],
                                                 wd=ADAMW["weight_decay"]))
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

README_MISTRAL = """# Golden fixtures, Mistral's sliding-window attention (reference implementation)

Made by `scripts/make_golden_llama.py --family mistral` with PyTorch {torch}, transformers {transformers},
PEFT {peft}, float32 on the CPU, fixed seeds. Regenerate with

    python3 scripts/make_golden_llama.py --family mistral --out tests/fixtures/golden-mistral

- `mistral-tiny/`: random MistralForCausalLM of the shapes of `../golden-llama/llama-tiny` (2 layers, hidden
  32, 4 heads, 2 KV heads, head_dim 8, intermediate 64, vocab 97, untied head, RMSNorm weights
  1 + 0.1*N(0,1)) with `sliding_window` {window}: query i sees keys i-{before}..i, itself and the {before} before
  it, so the batch's 12 and 9 tokens run past it.
- `adapter/`: PEFT LoRA r 4, alpha 8 on q_proj k_proj v_proj o_proj gate_proj up_proj down_proj,
  init_lora_weights=False; {n} tensors.
- The batch is `../golden/batch.json` (B 2, T 12, lengths [12, 9], right padding).
- `reference.safetensors`: `base_logits`, `logits`, `loss` and `grad/<PEFT name>` as in `../golden-llama`
  (eager attention, train mode, dropout 0).
- `generate.json`: `model.generate` (greedy, base and adapter; beam 3, adapter), {max_new} new tokens after
  prompts of 1 to 7 tokens, one prompt at a time, no EOS; the format of `../generate/generate.json`.

Before writing, the script checks that transformers applies the window: SDPA attention gives eager's
logits, and full attention (`sliding_window` None) gives them on the first {window} positions only;
some generated continuations differ with full attention.
"""
README_QWEN2_SWA = """# Golden fixtures, Qwen2's per-layer sliding-window attention (reference implementation)

Made by `scripts/make_golden_llama.py --family qwen2-swa` with PyTorch {torch}, transformers {transformers},
PEFT {peft}, float32 on the CPU, fixed seeds. Regenerate with

    python3 scripts/make_golden_llama.py --family qwen2-swa --out tests/fixtures/golden-qwen2-swa

- `qwen2-swa-tiny/`: random Qwen2ForCausalLM of the shapes of `../golden-llama/llama-tiny` (2 layers, hidden
  32, 4 heads, 2 KV heads, head_dim 8, intermediate 64, vocab 97, untied head, RMSNorm weights
  1 + 0.1*N(0,1)), with Qwen2's q/k/v biases set to 0.1*N(0,1); `use_sliding_window` true,
  `sliding_window` {window}, `layer_types` ["sliding_attention", "full_attention"]: layer 0 attends through
  the window (query i sees keys i-{before}..i), layer 1 over every key. `max_window_layers` is 1, whose rule
  (layers i >= 1 slide) transformers applies only without `layer_types`: a reader that used it would
  slide layer 1 instead.
- `adapter/`: PEFT LoRA r 4, alpha 8 on q_proj k_proj v_proj o_proj gate_proj up_proj down_proj,
  init_lora_weights=False; {n} tensors.
- The batch is `../golden/batch.json` (B 2, T 12, lengths [12, 9], right padding).
- `reference.safetensors`: `base_logits`, `logits`, `loss` and `grad/<PEFT name>` as in `../golden-llama`
  (eager attention, train mode, dropout 0).
- `generate.json`: `model.generate` (greedy, base and adapter; beam 3, adapter), {max_new} new tokens after
  prompts of 1 to 7 tokens, one prompt at a time, no EOS; the format of `../generate/generate.json`.
- `trajectory.json`: `torch.optim.AdamW(lr {lr}, betas (0.9, 0.999), eps 1e-8, weight_decay {wd})` over
  the adapter's LoRA tensors, {steps} steps on the batch; `losses` is the loss before each update.

Before writing, the script checks that transformers applies the window: SDPA attention gives eager's
logits; full attention on both layers gives them on the first {window} positions only; the window on
both layers, or on layer 1 only, gives other logits after them too; some generated continuations differ
with full attention.
"""

if __name__ == "__main__":
    main()
