#!/usr/bin/env python3
"""Check a `lora export --to gguf` LoRA file in llama.cpp itself, against transformers + PEFT.

llama.cpp comes from PyPI: llama-cpp-python builds the llama.cpp it vendors from its sdist, and the same
sdist holds llama.cpp's convert_hf_to_gguf.py. The check:
  1. converts the base model (a HF directory of a GPT-2, LLaMA, Mistral or Qwen2 architecture, told by its
     config.json's model_type) to an f32 GGUF with llama.cpp's own converter (independent of our
     exporter: it fixes the tensor names, orientations and, for LLaMA and Mistral, the row order of q
     and k that our adapter must match). The converter needs the tokenizer files: tokenizer.model for a
     SentencePiece vocabulary; a BPE vocabulary llama.cpp does not know by hash (the quickstart's own
     879-token BPE) is declared "gpt-2", the pre-tokenizer it uses. Token ids are fed directly, so the
     vocabulary only has to convert;
  2. loads base + our LoRA GGUF in llama.cpp (llama_adapter_lora_init, scale 1; an f32 K/V cache
     unless --kv-cache f16, llama.cpp's default), feeds the token ids of held-out examples and reads the
     logits at every position;
  3. compares them with transformers + PEFT on base + the adapter directory the GGUF was exported from:
     normwise relative error (max |diff| / max |ref|) per sequence and next-token argmax agreement; and,
     as a control that separates conversion from adapter errors, llama.cpp's base alone against
     transformers' base. For rotary archs it also reports how far PEFT's logits move when the q and k
     adapters' B rows are put in the other rotary order (the error of an exporter that skips the
     converter's permutation for LLaMA, or applies it to Qwen2), so a check that passes is known to see it.

--classifier MERGED checks instead the way README gives for RoBERTa classifiers, which a LoRA GGUF
cannot carry: a `lora merge` output (RobertaForSequenceClassification, with tokenizer files, which the
converter needs) converted by convert_hf_to_gguf.py to llama.cpp's bert arch, run with rank pooling
(the classification head on the first token), its outputs compared with transformers' logits on the
golden RoBERTa batch (tests/fixtures/golden-roberta/batch.json, each sequence unpadded).

Run with the system python (torch, transformers, peft) and llama_cpp importable, e.g. from a venv:

    pip download llama-cpp-python --no-deps --no-binary :all: -d /tmp/llcpp && tar xzf /tmp/llcpp/*.tar.gz -C /tmp/llcpp
    python3 -m venv /tmp/llvenv && CMAKE_BUILD_PARALLEL_LEVEL=1 /tmp/llvenv/bin/pip install /tmp/llcpp/*.tar.gz
    build/lora train configs/quickstart.yaml --output /tmp/qs
    build/lora export --adapter /tmp/qs --to gguf --out /tmp/qs.gguf
    PYTHONPATH=/tmp/llvenv/lib/python3.11/site-packages python3 scripts/check_gguf_llamacpp.py \\
        --llama-cpp-src /tmp/llcpp/llama_cpp_python-*/vendor/llama.cpp --adapter /tmp/qs --gguf /tmp/qs.gguf

LLaMA-family adapters (a tiny LLaMA with grouped K/V heads and the SentencePiece fixture tokenizer,
pretrained briefly as the quickstart's base was, then LoRA on q k v o gate up down; Qwen2 alike with
data/quickstart/qwen2-base-config.json, whose q/k/v have biases):

    build/lora init --config data/quickstart/llama-base-config.json --out /tmp/llama-init \\
        --tokenizer tests/fixtures/tokenizer/sp --seed 1
    build/lora train configs/quickstart-base.yaml --set model.path=/tmp/llama-init --set train.epochs=1 \\
        --output /tmp/llama-base-run
    build/lora train configs/quickstart.yaml --set model.path=/tmp/llama-base-run/model \\
        --set lora.targets=[q,k,v,o,gate,up,down] --output /tmp/llama-lora
    build/lora export --adapter /tmp/llama-lora --to gguf --out /tmp/llama-lora.gguf
    PYTHONPATH=... python3 scripts/check_gguf_llamacpp.py --llama-cpp-src ... \\
        --base /tmp/llama-base-run/model --adapter /tmp/llama-lora --gguf /tmp/llama-lora.gguf

Where the pip build is too slow (it also builds llama.cpp's common library and an HTTP client), libllama
alone can be built and used without installing: LLAMA_CPP_LIB_PATH=<build>/bin and PYTHONPATH=<sdist
root> (llama_cpp is pure Python over ctypes; it needs the diskcache package besides numpy), e.g.

    cmake -S /tmp/llcpp/llama_cpp_python-0.3.36/vendor/llama.cpp -B /tmp/llcpp/build -G Ninja \\
        -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \\
        -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \\
        -DLLAMA_BUILD_SERVER=OFF
    ninja -C /tmp/llcpp/build -j2 llama
    pip install --target /tmp/llcpp/pydeps diskcache
    LLAMA_CPP_LIB_PATH=/tmp/llcpp/build/bin PYTHONPATH=/tmp/llcpp/llama_cpp_python-0.3.36:/tmp/llcpp/pydeps \\
        python3 scripts/check_gguf_llamacpp.py ...
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

CONVERT = """
import sys
src, base, out = sys.argv[1:4]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base as cb
original = cb.TextModel.get_vocab_base_pre
def vocab_pre(self, tokenizer):
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        print("note: BPE vocabulary unknown to llama.cpp's hash table; declared 'gpt-2' (GPT-2's pre-tokenizer)")
        return "gpt-2"
cb.TextModel.get_vocab_base_pre = vocab_pre
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", base, "--outfile", out, "--outtype", "f32"]
convert_hf_to_gguf.main()
"""


def tokenizer_load(model_dir):
    """(text -> ids without special tokens, the BOS id the trainer puts first or None) with the base's
    tokenizer: SentencePiece's tokenizer.model (<s> first unless tokenizer_config.json sets
    add_bos_token false, as lora and transformers' LlamaTokenizer do), else the HF tokenizer files (a BOS
    where tokenizer(text) puts one first, as LLaMA 3's post-processor does)."""
    sp_model = Path(model_dir) / "tokenizer.model"
    if sp_model.is_file():
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
        config = Path(model_dir) / "tokenizer_config.json"
        add_bos = json.loads(config.read_text()).get("add_bos_token") if config.is_file() else None
        bos = sp.bos_id() if add_bos is not False and sp.bos_id() >= 0 else None
        return sp.encode, bos
    tok = AutoTokenizer.from_pretrained(model_dir)
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a")["input_ids"]
    bos = full[0] if len(full) == len(plain) + 1 and full[1:] == plain else None
    return (lambda text: tok(text, add_special_tokens=False)["input_ids"]), bos


def examples(path, n, encode, bos, eos, max_len):
    """Token ids of the first n E2E lines "MR||text" as the trainer lays them out: [BOS,] the prompt, EOS,
    " text", EOS."""
    out = []
    for line in open(path, encoding="utf-8"):
        if "||" not in line:
            continue
        mr, text = line.rstrip("\n").split("||", 1)
        ids = ([bos] if bos is not None else []) + encode(mr.strip()) + [eos] + encode(" " + text.strip()) + [eos]
        out.append(ids[:max_len])
        if len(out) == n:
            break
    return out


def llama_logits(llama_cpp, model_path, lora_path, seqs, n_ctx, kv_cache):
    kv_type = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16}[kv_cache]
    llm = llama_cpp.Llama(model_path=model_path, lora_path=lora_path, logits_all=True, n_ctx=n_ctx, n_batch=n_ctx,
                          n_threads=1, type_k=kv_type, type_v=kv_type, verbose=False)
    out = []
    for ids in seqs:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    return out


def convert(src, model_dir, out):
    subprocess.run([sys.executable, "-c", CONVERT, src, model_dir, out], check=True)


def check_classifier(llama_cpp, args):
    """llama.cpp (bert arch, rank pooling) on a converted merged classifier against transformers."""
    batch = json.load(open(args.batch))
    seqs = [ids[:n] for ids, n in zip(batch["input_ids"], batch["lengths"])]
    model = AutoModelForSequenceClassification.from_pretrained(args.classifier, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = [model(torch.tensor([s])).logits[0].numpy() for s in seqs]
    with tempfile.TemporaryDirectory() as tmp:
        gguf_path = str(Path(tmp) / "classifier-f32.gguf")
        convert(args.llama_cpp_src, args.classifier, gguf_path)
        n_ctx = max(map(len, seqs))
        llm = llama_cpp.Llama(model_path=gguf_path, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_RANK,
                              n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=1, verbose=False)
        n_out = llama_cpp.llama_model_n_cls_out(llm.model)
        print(f"llama.cpp: {n_out} classifier output(s); transformers: {model.config.num_labels} label(s)")
        got = []
        for ids in seqs:
            llm._ctx.kv_cache_clear()
            llm._batch.reset()
            llm._batch.set_batch(ids, n_past=0, logits_all=True)
            llm._ctx.decode(llm._batch)
            ptr = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
            got.append(np.array([ptr[i] for i in range(n_out)], dtype=np.float32))
    err = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got, ref))
    print("llama.cpp:", [g.tolist() for g in got])
    print("transformers:", [r.tolist() for r in ref])
    print(f"llama.cpp classifier vs transformers: normwise relative error max {err:.3g}")
    ok = err < args.threshold
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


def rotary_perm(rows, n_head):
    """The row order llama.cpp's converter gives q_proj / k_proj for its llama arch (LlamaModel.permute in
    convert_hf_to_gguf.py: per head, HF's rotary halves interleaved into pairs): new row i = old row perm[i]."""
    return np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(-1)


def qk_layout_error_logits(peft, seqs, n_head, n_kv_head, permuted):
    """PEFT's logits with each q/k lora_B in the other rotary layout than llama.cpp's arch expects: for an
    arch whose converter permutes q and k (permuted), B rows left unpermuted; otherwise B rows permuted.
    This is the error an exporter with the wrong rule would make. B is restored afterwards."""
    saved = []
    for name, mod in peft.named_modules():
        if name.endswith(("q_proj", "k_proj")) and hasattr(mod, "lora_B"):
            for lin in mod.lora_B.values():
                w = lin.weight
                perm = rotary_perm(w.shape[0], n_head if name.endswith("q_proj") else n_kv_head)
                # llama.cpp computes P W + B' A in its row order: in HF's order, W + P^-1 B' A.
                rows = np.argsort(perm) if permuted else perm
                saved.append((w, w.detach().clone()))
                w.data = w.data[torch.from_numpy(rows)]
    with torch.no_grad():
        out = [peft(torch.tensor([s])).logits[0].numpy() for s in seqs]
    for w, orig in saved:
        w.data = orig
    return out


def compare(name, ours, refs):
    errs, agree, total = [], 0, 0
    for a, b in zip(ours, refs):
        errs.append(float(np.abs(a - b).max() / np.abs(b).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(b)
    print(f"{name}: normwise relative error max {max(errs):.3g}, mean {np.mean(errs):.3g}; "
          f"next-token argmax agrees at {agree}/{total} positions")
    return max(errs), agree, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp-src", required=True, help="llama.cpp source (holds convert_hf_to_gguf.py)")
    ap.add_argument("--base", default="data/quickstart/base-model", help="the base model (HF directory)")
    ap.add_argument("--adapter", help="the adapter directory the GGUF was exported from")
    ap.add_argument("--gguf", help="our `lora export --to gguf` output")
    ap.add_argument("--classifier", metavar="MERGED", help="check a merged RoBERTa classifier instead")
    ap.add_argument("--batch", default="tests/fixtures/golden-roberta/batch.json")
    ap.add_argument("--data", default="data/quickstart/valid.txt")
    ap.add_argument("--examples", type=int, default=16)
    # llama.cpp's default K/V cache is f16 (about 5e-4 on the tiny LLaMA's logits); f32 leaves only
    # fp32 rounding where the arch has no approximation of its own.
    ap.add_argument("--kv-cache", choices=["f32", "f16"], default="f32", help="llama.cpp's K/V cache type (f32)")
    # llama.cpp computes GELU from an fp16 table (about 2e-4 on the quickstart's logits), and its bert
    # graph uses the tanh form where RoBERTa uses erf (about 1e-3 on the golden classifier).
    ap.add_argument("--threshold", type=float, help="normwise relative error accepted (1e-3; 5e-3 with --classifier)")
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llama_cpp is not importable: install llama-cpp-python (see the top of this script) and put its "
                 "site-packages on PYTHONPATH")
    print("llama-cpp-python", llama_cpp.__version__)
    if args.threshold is None:
        args.threshold = 5e-3 if args.classifier else 1e-3
    if args.classifier:
        return check_classifier(llama_cpp, args)
    if not args.adapter or not args.gguf:
        ap.error("--adapter and --gguf are required (or --classifier)")

    cfg = AutoConfig.from_pretrained(args.base)
    print(f"base: {args.base} (model_type {cfg.model_type})")
    with tempfile.TemporaryDirectory() as tmp:
        base_gguf = str(Path(tmp) / "base-f32.gguf")
        convert(args.llama_cpp_src, args.base, base_gguf)
        base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32).eval()
        n_ctx = getattr(cfg, "n_positions", None) or cfg.max_position_embeddings
        encode, bos = tokenizer_load(args.base)
        seqs = examples(args.data, args.examples, encode, bos, cfg.eos_token_id, n_ctx)
        print(f"{len(seqs)} held-out examples, {sum(map(len, seqs))} tokens")
        with torch.no_grad():
            ref_base = [base(torch.tensor([s])).logits[0].numpy() for s in seqs]
            peft = PeftModel.from_pretrained(base, args.adapter).eval()
            ref_lora = [peft(torch.tensor([s])).logits[0].numpy() for s in seqs]
        # llama.cpp's llama arch (LLaMA, Mistral) rotates adjacent pairs, so its converter permutes q and
        # k; Qwen2 (NeoX-style rotation, as HF) keeps HF's order. GPT-2 has no rotary positions.
        swapped = None
        if cfg.model_type in ("llama", "mistral", "qwen2"):
            n_kv_head = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
            swapped = qk_layout_error_logits(peft, seqs, cfg.num_attention_heads, n_kv_head,
                                             permuted=cfg.model_type != "qwen2")
        got_base = llama_logits(llama_cpp, base_gguf, None, seqs, n_ctx, args.kv_cache)
        got_lora = llama_logits(llama_cpp, base_gguf, args.gguf, seqs, n_ctx, args.kv_cache)

    e0, _, _ = compare("llama.cpp base vs transformers base (control)", got_base, ref_base)
    e1, agree, total = compare("llama.cpp base + our LoRA GGUF vs transformers + PEFT", got_lora, ref_lora)
    moved = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ref_lora, ref_base))
    print(f"(the adapter moves the logits by {moved:.3g} relative, so an adapter llama.cpp ignored would fail)")
    if swapped is not None:
        compare("(sensitivity) transformers + PEFT with q/k lora_B in the other rotary row order", swapped, ref_lora)
    ok = e0 < args.threshold and e1 < args.threshold
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
