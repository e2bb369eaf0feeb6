#!/usr/bin/env python3
"""Golden fixtures for RoBERTa sequence classification from the reference implementation (PyTorch +
transformers + PEFT).

What it builds, with fixed seeds, in float32 on the CPU, for two heads: `cls` (3 labels, cross-entropy)
and `reg` (1 label, regression with MSE, as GLUE's STS-B):
  roberta-<head>/  a tiny random RobertaForSequenceClassification (2 layers, hidden 32, 4 heads,
                   intermediate 64, vocab 97, max_position_embeddings 40, pad 1, erf GELU), LayerNorm
                   weights and biases and the token-type embeddings perturbed, saved with save_pretrained
  adapter-<head>/  a PEFT LoRA on it (r 4, alpha 8, query and value, init_lora_weights=False, B made
                   non-zero, modules_to_save=["classifier"] with the head perturbed), saved with
                   save_pretrained
  batch.json       B 3 right-padded sequences, two of them sentence pairs <s> A </s></s> B </s>, with the
                   attention mask, the lengths and the labels of both heads
  reference.safetensors  <head>/base_logits, <head>/logits, <head>/loss, <head>/grad/<saved PEFT name>
                   (every LoRA tensor and the four classifier tensors)

Run:  python3 scripts/make_golden_roberta.py --out tests/fixtures/golden-roberta
"""
import argparse
import json
import shutil
from pathlib import Path

import torch

import peft
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import RobertaConfig, RobertaForSequenceClassification

V = 97
PAD, BOS, EOS = 1, 0, 2
LORA_R, LORA_ALPHA = 4, 8
HEADS = {"cls": 3, "reg": 1}


def make_config(num_labels):
    return RobertaConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-5, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, initializer_range=0.2, num_labels=num_labels)


def load_base(path):
    return RobertaForSequenceClassification.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")


def build_base(out, head, seed):
    torch.manual_seed(seed)
    model = RobertaForSequenceClassification(make_config(HEADS[head]))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "LayerNorm.bias" in name or name.endswith(".bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "token_type_embeddings" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out / f"roberta-{head}", safe_serialization=True)


def build_adapter(out, head, seed):
    base = load_base(out / f"roberta-{head}")
    torch.manual_seed(seed + 2)
    cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=["query", "value"], lora_dropout=0.0,
                     bias="none", init_lora_weights=False, task_type="SEQ_CLS", modules_to_save=["classifier"])
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name and p.abs().max() == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "modules_to_save" in name:  # the trained head differs from the base's
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out / f"adapter-{head}", safe_serialization=True)
    (out / f"adapter-{head}" / "README.md").unlink(missing_ok=True)


def make_batch(seed):
    """Three sequences as RoBERTa's tokenizer lays them out: <s> A </s> and <s> A </s></s> B </s>."""
    g = torch.Generator().manual_seed(seed + 4)
    word = lambda n: (3 + torch.randint(0, V - 3, (n,), generator=g)).tolist()
    seqs = [[BOS] + word(5) + [EOS, EOS] + word(4) + [EOS],   # pair, 13 tokens (the longest)
            [BOS] + word(6) + [EOS],                           # single sentence, 8 tokens
            [BOS] + word(3) + [EOS, EOS] + word(2) + [EOS]]    # pair, 9 tokens
    T = max(len(s) for s in seqs)
    ids = [s + [PAD] * (T - len(s)) for s in seqs]
    mask = [[1] * len(s) + [0] * (T - len(s)) for s in seqs]
    return {"input_ids": ids, "attention_mask": mask, "lengths": [len(s) for s in seqs],
            "labels_cls": [2, 0, 1], "labels_reg": [0.75, 4.2, 2.5]}


def reference(out, head, batch):
    ids = torch.tensor(batch["input_ids"])
    mask = torch.tensor(batch["attention_mask"])
    labels = torch.tensor(batch["labels_cls"]) if head == "cls" else torch.tensor(batch["labels_reg"])
    ref = {}
    with torch.no_grad():
        base = load_base(out / f"roberta-{head}").eval()
        ref["base_logits"] = base(input_ids=ids, attention_mask=mask).logits
    model = PeftModel.from_pretrained(load_base(out / f"roberta-{head}"), out / f"adapter-{head}", is_trainable=True)
    model.train()
    res = model(input_ids=ids, attention_mask=mask, labels=labels)
    logits = res.logits
    want = (torch.nn.functional.cross_entropy(logits, labels) if head == "cls"
            else torch.nn.functional.mse_loss(logits.squeeze(-1), labels))
    if not torch.allclose(res.loss, want, rtol=0, atol=1e-6):
        raise SystemExit(f"{head}: HF loss {res.loss.item()} differs from {want.item()}")
    res.loss.backward()
    ref["logits"] = logits.detach()
    ref["loss"] = res.loss.detach().reshape(1)
    n = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert "lora_" in name or "modules_to_save" in name, name
        saved = name.replace(".modules_to_save.default.", ".").replace(".default.", ".")
        ref["grad/" + saved] = p.grad.detach().clone()
        n += 1
    return {f"{head}/{k}": v.detach().to(torch.float32).contiguous() for k, v in ref.items()}, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/golden-roberta"))
    ap.add_argument("--seed", type=int, default=2468)
    args = ap.parse_args()
    out = args.out
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)
    batch = make_batch(args.seed)
    (out / "batch.json").write_text(json.dumps(batch) + "\n")
    refs, counts = {}, {}
    for head in HEADS:
        for sub in (f"roberta-{head}", f"adapter-{head}"):
            shutil.rmtree(out / sub, ignore_errors=True)
        build_base(out, head, args.seed)
        build_adapter(out, head, args.seed)
        r, counts[head] = reference(out, head, batch)
        refs.update(r)
    save_file(refs, str(out / "reference.safetensors"), metadata={"lora_golden": (
        f"version=1 torch={torch.__version__} transformers={transformers.__version__} peft={peft.__version__}")})
    (out / "README.md").write_text(README.format(torch=torch.__version__, transformers=transformers.__version__,
                                                 peft=peft.__version__, n=counts["cls"]))
    for head in HEADS:
        print(f"{head}: loss {refs[head + '/loss'].item():.6f}, {counts[head]} gradients")


README = """# Golden fixtures, RoBERTa sequence classification (reference implementation)

Made by `scripts/make_golden_roberta.py` with PyTorch {torch}, transformers {transformers}, PEFT {peft},
float32 on the CPU, fixed seeds. Regenerate with

    python3 scripts/make_golden_roberta.py --out tests/fixtures/golden-roberta

- `roberta-cls/`, `roberta-reg/`: random RobertaForSequenceClassification with 3 labels
  (single-label classification, cross-entropy) and 1 label (regression, MSE): 2 layers, hidden 32,
  4 heads, intermediate 64, vocab 97, max_position_embeddings 40 (positions numbered from pad 1 + 1),
  type_vocab_size 2, layer_norm_eps 1e-5, erf GELU, every dropout 0, initializer_range 0.2; LayerNorm
  weights 1 + 0.1 N(0,1), every bias and LayerNorm bias 0.05 N(0,1), token-type embeddings 0.2 N(0,1).
- `adapter-cls/`, `adapter-reg/`: PEFT LoRA r 4, alpha 8 (scale 2) on query and value,
  init_lora_weights=False, B 0.1 N(0,1); modules_to_save ["classifier"], the saved head perturbed by
  0.05 N(0,1) from the base's; task_type SEQ_CLS. {n} trainable tensors each.
- `batch.json`: B 3, T 13, lengths [13, 8, 9], right padding with pad id 1; rows 0 and 2 are sentence
  pairs `<s> A </s></s> B </s>`; labels_cls [2, 0, 1], labels_reg [0.75, 4.2, 2.5].
- `reference.safetensors`, for head in cls, reg: `<head>/base_logits` (3, labels) of the base model with
  its own head (eval mode); `<head>/logits` and `<head>/loss` of base + adapter (train mode, dropout 0);
  `<head>/grad/<name>` d loss / d each trainable tensor under its saved PEFT name
  (`base_model.model.roberta.encoder.layer.0.attention.self.query.lora_A.weight`,
  `base_model.model.classifier.dense.weight`, ...).
"""

if __name__ == "__main__":
    main()
