#!/usr/bin/env python3
"""Check a `lora export --to gguf` file with llama.cpp's own `gguf` Python package (pip install gguf).

Reads the GGUF file with gguf.GGUFReader and the PEFT adapter it came from with safetensors, and checks:
metadata (general.architecture, general.type = adapter, adapter.type = lora, adapter.lora.alpha),
tensor names as llama.cpp expects them ("blk.N.<tensor>.weight.lora_a" / ".lora_b"), ggml dims
(lora_a ne = [in, r], lora_b ne = [r, out]), f32 type, lora_a equal to PEFT's lora_A, and the update
llama.cpp applies, (alpha / r) * lora_b @ lora_a, equal to PEFT's scale * B @ A (scale = lora_alpha / r,
or / sqrt(r) with use_rslora; rank_pattern and alpha_pattern honoured as PEFT does). For the llama arch
(LLaMA, Mistral) the update of q and k is expected with its rows in llama.cpp's rotary order, as
convert_hf_to_gguf.py permutes q_proj / k_proj (LlamaModel.permute); the head counts come from the base's
config.json (--base, else the adapter's base_model_name_or_path).

    python3 scripts/check_gguf_export.py --adapter tests/fixtures/golden/adapter --gguf adapter.gguf
    python3 scripts/check_gguf_export.py --adapter DIR --lora build/lora   # exports to a temporary file first
Exit 0 when everything matches, 1 with the mismatches listed otherwise.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

import gguf

GPT2 = {"attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
LLAMA = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}


def gguf_name(module):
    m = re.fullmatch(r"(?:transformer\.)?h\.(\d+)\.(.+)", module)
    if m and m.group(2) in GPT2:
        return f"blk.{m.group(1)}.{GPT2[m.group(2)]}.weight"
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)\.(.+)", module)
    if m and m.group(2) in LLAMA:
        return f"blk.{m.group(1)}.{LLAMA[m.group(2)]}.weight"
    raise SystemExit(f"no llama.cpp tensor for module {module}")


def pattern(pat, module, default):
    for key, value in (pat or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def rotary_perm(rows, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute as a row order: new row i = old row perm[i]."""
    return np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(-1)


def base_heads(base, adapter_dir, adapter_cfg):
    """(query heads, key/value heads) from the base's config.json."""
    name = adapter_cfg.get("base_model_name_or_path") or ""
    for cand in ([base] if base else [name, os.path.join(adapter_dir, name)]):
        path = os.path.join(cand, "config.json")
        if cand and os.path.isfile(path):
            c = json.load(open(path))
            return c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    raise SystemExit("the llama arch reorders q and k: pass --base MODEL_DIR (its config.json gives the heads)")


def field_value(reader, key):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    return f.parts[f.data[0]][0].item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--lora", help="the lora binary: export the adapter to a temporary GGUF file first")
    ap.add_argument("--base", help="the base model directory (llama arch: its head counts)")
    args = ap.parse_args()
    path = args.gguf
    if args.lora:
        path = os.path.join(tempfile.mkdtemp(), "adapter.gguf")
        base = ["--base", args.base] if args.base else []
        subprocess.run([args.lora, "export", "--adapter", args.adapter, "--to", "gguf", "--out", path] + base, check=True)
    if not path:
        raise SystemExit("pass --gguf FILE or --lora BIN")

    cfg = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
    tensors = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))
    r0, a0, rs = cfg.get("r", 8), cfg.get("lora_alpha", 8), cfg.get("use_rslora", False)
    modules = {}
    for key, t in tensors.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.\w+)?\.weight", key)
        modules.setdefault(m.group(1), {})[m.group(2)] = t.astype(np.float32)

    reader = gguf.GGUFReader(path)
    errors = []
    meta = {k: field_value(reader, k) for k in reader.fields if not k.startswith("GGUF.")}
    print("metadata:", meta)
    for key, want in [("general.type", "adapter"), ("adapter.type", "lora")]:
        if meta.get(key) != want:
            errors.append(f"{key} = {meta.get(key)!r}, expected {want!r}")
    if meta.get("general.architecture") not in ("gpt2", "llama", "qwen2"):
        errors.append(f"general.architecture = {meta.get('general.architecture')!r}")
    if reader.fields["adapter.lora.alpha"].types[0] != gguf.GGUFValueType.FLOAT32:
        errors.append("adapter.lora.alpha is not a float32")
    alpha = float(meta["adapter.lora.alpha"])
    heads = None
    if meta.get("general.architecture") == "llama":
        heads = base_heads(args.base, args.adapter, cfg)
    by_name = {t.name: t for t in reader.tensors}
    if len(by_name) != 2 * len(modules):
        errors.append(f"{len(by_name)} tensors, expected {2 * len(modules)}")
    worst = 0.0
    for module, ab in modules.items():
        A, B = ab["A"], ab["B"]
        r = pattern(cfg.get("rank_pattern"), module, r0)
        al = pattern(cfg.get("alpha_pattern"), module, a0)
        scale = al / math.sqrt(r) if rs else al / r
        name = gguf_name(module)
        ta, tb = by_name.get(name + ".lora_a"), by_name.get(name + ".lora_b")
        if ta is None or tb is None:
            errors.append(f"{name}.lora_a/.lora_b missing")
            continue
        for t in (ta, tb):
            if t.tensor_type != gguf.GGMLQuantizationType.F32:
                errors.append(f"{t.name} has type {t.tensor_type.name}, expected F32")
        if list(ta.shape) != [A.shape[1], A.shape[0]] or list(tb.shape) != [B.shape[1], B.shape[0]]:
            errors.append(f"{name}: ne {list(ta.shape)} / {list(tb.shape)}, expected "
                          f"{[A.shape[1], A.shape[0]]} / {[B.shape[1], B.shape[0]]}")
            continue
        ga = np.asarray(ta.data).reshape(A.shape)
        gb = np.asarray(tb.data).reshape(B.shape)
        if not np.array_equal(ga, A):
            errors.append(f"{name}.lora_a differs from {module}.lora_A")
        ours = (alpha / A.shape[0]) * (gb.astype(np.float64) @ ga.astype(np.float64))
        ref = scale * (B.astype(np.float64) @ A.astype(np.float64))
        if heads and name.endswith((".attn_q.weight", ".attn_k.weight")):
            ref = ref[rotary_perm(ref.shape[0], heads[0] if ".attn_q." in name else heads[1])]
        err = np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30)
        worst = max(worst, err)
        if err > 1e-6:
            errors.append(f"{name}: update relative error {err:.3g}")
    print(f"{len(by_name)} tensors, {len(modules)} modules, adapter.lora.alpha {alpha}, "
          f"worst update relative error {worst:.3g}")
    for e in errors:
        print("MISMATCH:", e)
    print("ok" if not errors else f"{len(errors)} mismatch(es)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
