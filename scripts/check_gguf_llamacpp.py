#!/usr/bin/env python3
"""Check a `lora export --to gguf` LoRA file in llama.cpp itself, against transformers + PEFT.

llama.cpp comes from PyPI: llama-cpp-python builds the llama.cpp it vendors from its sdist, and the same
sdist holds llama.cpp's convert_hf_to_gguf.py. The check:
  1. converts the base model (a GPT-2-architecture HF directory) to an f32 GGUF with llama.cpp's own
     converter (independent of our exporter: it fixes the tensor names and orientations our adapter
     must match). A vocabulary llama.cpp does not know by hash (the quickstart's own 879-token BPE) is
     declared "gpt-2", the pre-tokenizer it uses; token ids are fed directly, so this only names it;
  2. loads base + our LoRA GGUF in llama.cpp (llama_adapter_lora_init, scale 1), feeds the token ids of
     held-out examples and reads the logits at every position;
  3. compares them with transformers + PEFT on base + the adapter directory the GGUF was exported from:
     normwise relative error (max |diff| / max |ref|) per sequence and next-token argmax agreement; and,
     as a control that separates conversion from adapter errors, llama.cpp's base alone against
     transformers' base.

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

Where the pip build is too slow (it also builds llama.cpp's common library and an HTTP client), libllama
alone can be built in the build directory pip configured (ninja llama) and used without installing:
LLAMA_CPP_LIB_PATH=<build>/bin and PYTHONPATH=<sdist root> (llama_cpp is pure Python over ctypes; it
needs the diskcache package besides numpy).
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2LMHeadModel

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


def examples(path, n, tok, max_len):
    """Token ids of the first n E2E lines "MR||text": the prompt, then " text", as the trainer lays them out."""
    out = []
    for line in open(path, encoding="utf-8"):
        if "||" not in line:
            continue
        mr, text = line.rstrip("\n").split("||", 1)
        ids = tok(mr.strip())["input_ids"] + tok(" " + text.strip())["input_ids"]
        out.append(ids[:max_len])
        if len(out) == n:
            break
    return out


def llama_logits(llama_cpp, model_path, lora_path, seqs, n_ctx):
    llm = llama_cpp.Llama(model_path=model_path, lora_path=lora_path, logits_all=True, n_ctx=n_ctx, n_batch=n_ctx,
                          n_threads=1, verbose=False)
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
    import json
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
    ap.add_argument("--base", default="data/quickstart/base-model")
    ap.add_argument("--adapter", help="the adapter directory the GGUF was exported from")
    ap.add_argument("--gguf", help="our `lora export --to gguf` output")
    ap.add_argument("--classifier", metavar="MERGED", help="check a merged RoBERTa classifier instead")
    ap.add_argument("--batch", default="tests/fixtures/golden-roberta/batch.json")
    ap.add_argument("--data", default="data/quickstart/valid.txt")
    ap.add_argument("--examples", type=int, default=16)
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

    with tempfile.TemporaryDirectory() as tmp:
        base_gguf = str(Path(tmp) / "base-f32.gguf")
        convert(args.llama_cpp_src, args.base, base_gguf)
        tok = AutoTokenizer.from_pretrained(args.base)
        base = GPT2LMHeadModel.from_pretrained(args.base, dtype=torch.float32).eval()
        n_ctx = base.config.n_positions
        seqs = examples(args.data, args.examples, tok, n_ctx)
        print(f"{len(seqs)} held-out examples, {sum(map(len, seqs))} tokens")
        with torch.no_grad():
            ref_base = [base(torch.tensor([s])).logits[0].numpy() for s in seqs]
            peft = PeftModel.from_pretrained(base, args.adapter).eval()
            ref_lora = [peft(torch.tensor([s])).logits[0].numpy() for s in seqs]
        got_base = llama_logits(llama_cpp, base_gguf, None, seqs, n_ctx)
        got_lora = llama_logits(llama_cpp, base_gguf, args.gguf, seqs, n_ctx)

    e0, _, _ = compare("llama.cpp base vs transformers base (control)", got_base, ref_base)
    e1, agree, total = compare("llama.cpp base + our LoRA GGUF vs transformers + PEFT", got_lora, ref_lora)
    moved = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ref_lora, ref_base))
    print(f"(the adapter moves the logits by {moved:.3g} relative, so an adapter llama.cpp ignored would fail)")
    ok = e0 < args.threshold and e1 < args.threshold
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
