#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<harness>/) from the repository's own recipes and
fixtures plus a few hand-built files: small, valid inputs that reach deep into each parser. Run from the
repository root; the corpus is committed, so CI never runs this."""
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
SEP = b"\n=====\n"


def put(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(*path):
    with open(os.path.join(ROOT, *path), "rb") as f:
        return f.read()


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf():
    kv = [("general.architecture", 8, gguf_string("gpt2")),
          ("general.name", 8, gguf_string("tiny")),
          ("gpt2.context_length", 4, struct.pack("<I", 64)),
          ("gpt2.layer_norm_epsilon", 6, struct.pack("<f", 1e-5)),
          ("general.flag", 7, struct.pack("<?", True)),
          ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + gguf_string("a") + gguf_string("b")),
          ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 2) + struct.pack("<ff", 0.5, -1.0))]
    out = b"GGUF" + struct.pack("<IQQ", 3, 2, len(kv))
    for key, t, v in kv:
        out += gguf_string(key) + struct.pack("<I", t) + v
    out += gguf_string("token_embd.weight") + struct.pack("<IQQIQ", 2, 4, 2, 0, 0)
    out += gguf_string("output_norm.weight") + struct.pack("<IQIQ", 1, 4, 1, 32)
    out += b"\0" * (-len(out) % 32)
    return out + struct.pack("<8f", *range(8)) + struct.pack("<4e", 1, 2, 3, 4)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        put("recipe", name, read("configs", name))
    put("recipe", "overrides.yaml", b"model:\n  path: m\ndata:\n  train: t.jsonl\n  format: jsonl\n"
        b"lora:\n  targets: [q, v]\n  r: 4\ntrain:\n  lr: 1e-3\n  max_steps: 3\n---\n")

    f32 = struct.pack("<4f", 1, -2, 0.5, 3)
    put("safetensors", "f32_bf16.safetensors", safetensors(
        [("a", "F32", [2, 2], f32), ("b", "BF16", [3], struct.pack("<3H", 0x3F80, 0xC000, 0x7FC0))],
        {"format": "pt"}))
    put("safetensors", "ints.safetensors", safetensors(
        [("i", "I64", [2], struct.pack("<2q", 7, -1)), ("j", "I32", [1, 1], struct.pack("<i", 5)),
         ("h", "F16", [2], struct.pack("<2e", 1.5, -0.25)), ("e", "F32", [0], b"")]))

    for model in ("golden/gpt2-tiny", "golden-llama/llama-tiny", "golden-mistral/mistral-tiny",
                  "golden-roberta/roberta-cls", "golden-qwen2-swa/qwen2-swa-tiny"):
        path = os.path.join("tests", "fixtures", model, "config.json")
        if os.path.exists(os.path.join(ROOT, path)):
            put("config", model.split("/")[1] + ".json", read(path))

    tiny = ("tests", "fixtures", "tokenizer", "tiny")
    text = b"The Eagle is a coffee shop. <|endoftext|> caf\xc3\xa9"
    put("tokenizer", "hf.txt", b"\0" + read(*tiny, "vocab.json") + SEP + read(*tiny, "merges.txt") + SEP + SEP + text)
    put("tokenizer", "openai.txt", b"\1" + read(*tiny, "vocab.json") + SEP + read(*tiny, "merges.txt") + SEP + SEP + text)
    tj = os.path.join("tests", "fixtures", "tokenizer", "tiny_json", "tokenizer.json")
    if os.path.exists(os.path.join(ROOT, tj)):
        put("tokenizer", "tokenizer_json.txt", b"\2" + read(tj) + SEP + SEP + SEP + text)

    for ad in ("golden/adapter", "golden-roberta/adapter-cls"):
        base = ("tests", "fixtures") + tuple(ad.split("/"))
        put("adapter", ad.replace("/", "_") + ".txt",
            read(*base, "adapter_config.json") + SEP + read(*base, "adapter_model.safetensors"))

    put("gguf", "tiny.gguf", gguf())

    put("dataset", "e2e.txt", b"\0name[The Mill], eatType[pub]||The Mill is a pub.\n"
        b"name[Aromi], food[Italian], area[city centre]||Aromi serves Italian food in the city centre.\n")
    put("dataset", "jsonl.txt", b"\1" + b'{"prompt": "Q: 2+2?", "completion": " 4"}\n{"text": "plain text"}\n')
    put("dataset", "jsonl_cls.txt", b"\1" + b'{"sentence": "fine film", "label": 1}\n{"sentence": "dull", "label": 0}\n')
    put("dataset", "glue.txt", b"\2sentence\tlabel\nit works\t1\nit does not\t0\n")
    put("dataset", "glue_pair.txt", b"\2index\tquestion\tsentence\tlabel\n0\twhy?\tbecause.\tentailment\n")


if __name__ == "__main__":
    main()
