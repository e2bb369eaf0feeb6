#!/usr/bin/env python3
"""Writes the tokenizer golden fixtures of tests/test_tokenizer.cpp from the reference implementations.

Reference: HF `tokenizers` (the Rust implementation behind transformers' fast tokenizers) for byte-level
BPE, the `sentencepiece` Python package for SentencePiece. Outputs, under tests/fixtures/tokenizer/:

  reference_ids.json   GPT-2 (SHARED/gpt2/tokenizer.json): ids of every line of SHARED/e2e/valid.txt and
                       of the adversarial strings below, plus HF's pre-tokenizer words for the latter.
  tiny/                a 512-token byte-level BPE trained here on valid.txt (vocab.json + merges.txt)
  tiny_json/           the same tokenizer as one HF tokenizer.json
  tiny_special/        tiny_json plus added tokens with lstrip (<mask>) and rstrip (<r>)
  reference_tiny.json  the tiny tokenizer's ids of the adversarial strings and of the first e2e lines
  sp/tokenizer.model   a 512-piece SentencePiece BPE model in the LLaMA setup (byte fallback, identity
                       normalization), trained here on valid.txt
  reference_sp.json    its ids of the adversarial strings and of the first e2e lines

The fixtures without shared data (tiny, sp) let the test run anywhere. Lines of valid.txt are split on
b"\\n" exactly as the C++ test splits them (no stripping). Regenerate with one command:

  pip install tokenizers sentencepiece
  python3 scripts/make_tokenizer_fixtures.py ../shared/data
"""
import io
import json
import os
import random
import sys

import sentencepiece as spm
import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "tests", "fixtures", "tokenizer"))
SUBSET_LINES = 300  # e2e lines kept for the tiny and SentencePiece fixtures

ADVERSARIAL = [
    # empty and whitespace runs
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "a  b", "a   b", "a\t\tb", "a \t b",
    "trailing spaces   ", "   leading spaces", "x \n y", "tab\tseparated\tvalues", "line one\nline two\n",
    "\n\n\nparagraph", "a" + " " * 40 + "b", "spaces then newline  \n", "\u00a0nbsp\u00a0\u00a0x",
    "\u3000ideographic\u3000space", "\x0bvertical\x0cform feed", "next\x85line", "sep\x1c\x1dchars",
    "\u2028line\u2029paragraph", "thin\u2009space",
    # contractions, including uppercase and odd ones
    "don't", "I'm", "you're", "we've", "she'll", "he'd", "it's", "IT'S", "I'M", "DON'T", "We'Re",
    "'s", "''s", "'ll'd're've'm't", "rock 'n' roll", "the '90s", "O'Neil's", "y'all'd've", "'", "'''",
    " 's", " 're", "'sup", "'S", "’s curly apostrophe’s",
    # digits and numbers
    "1234567890", "3.14159", "1,000,000", "2024-01-01", "x1y2z3", "\u0661\u0662\u0663 arabic-indic",
    "\u216b roman", "\u00bd half", "x\u00b2 + y\u00b3", " 42", "007", "10%", "$9.99",
    # punctuation runs
    "!!!???...", "--->", "(((x)))", "#$%&*", "...", "a.b,c;d:e", "@user #tag",
    "http://example.com/path?q=1&r=2", "C++ -> Rust", "<html><body>hi</body></html>", "\"quoted\"",
    # Unicode letters, marks and scripts
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "\u00dcn\u00efc\u00f6d\u00e9", "e\u0301 combining acute",
    "\u00f1 vs n\u0303", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442", "\u0939\u093f\u0928\u094d\u0926\u0940",
    "\u0e44\u0e17\u0e22", "\u01c5 titlecase", "\u02b0 modifier", "\U0001d518\U0001d52b\U0001d526 math",
    "\U0002070e ext-b", "a\u200bb zero width", "\ufeffBOM", "x\u200dy", "\x00\x01\x1f control", "del\x7f",
    # emoji, including ZWJ sequences, skin tones, flags and variation selectors
    "\U0001f44d", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f44d\U0001f3fd", "\u2764\ufe0f love", "\U0001f1eb\U0001f1f7",
    "\U0001f600\U0001f603\U0001f604", "smile \U0001f600!",
    # special tokens in text
    "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>", " <|endoftext|> ", "<|endoftext",
    "<|endoftext|>\n", "text<|endoftext|>more text<|endoftext|>", "<|endoftext|>'s",
    # mixed and long
    "Hello, World! It's 2024.", "supercalifragilisticexpialidocious", "a" * 64, "ab" * 40,
    "name : The Eagle | eatType : coffee shop||The Eagle is a coffee shop . ",
]
# Long single words: many merges in one word (a fixed seed keeps the fixture stable).
_rng = random.Random(0)
ADVERSARIAL += ["".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000)),
                "".join(_rng.choice("ACGT") for _ in range(2000)),
                "".join(_rng.choice("0123456789") for _ in range(500))]


def e2e_lines(shared):
    with open(os.path.join(shared, "e2e", "valid.txt"), "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8") for line in lines]


def byte_decoder():
    # GPT-2's bytes_to_unicode, inverted: vocabulary characters back to bytes.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(0x100 + n)] = b
            n += 1
    return table


def hf_words(tok, text):
    """HF's pre-tokenizer words of text, as the original substrings."""
    dec = byte_decoder()
    words = []
    for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text):
        words.append(bytes(dec[c] for c in piece).decode("utf-8"))
    return words


def write_json(path, doc, list_keys):
    """JSON with one id list per line: small, and readable in a diff."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        keys = list(doc.keys())
        for k, key in enumerate(keys):
            f.write(f"  {json.dumps(key)}: ")
            value = doc[key]
            if key in list_keys:
                f.write("[\n")
                for i, item in enumerate(value):
                    f.write("    " + json.dumps(item, ensure_ascii=True, separators=(",", ":")))
                    f.write(",\n" if i + 1 < len(value) else "\n")
                f.write("  ]")
            else:
                f.write(json.dumps(value, ensure_ascii=True))
            f.write(",\n" if k + 1 < len(keys) else "\n")
        f.write("}\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def make_gpt2(shared, lines):
    tok = Tokenizer.from_file(os.path.join(shared, "gpt2", "tokenizer.json"))
    adversarial = []
    for text in ADVERSARIAL:
        item = {"text": text, "ids": tok.encode(text).ids}
        if "<|endoftext|>" not in text:
            item["words"] = hf_words(tok, text)
        adversarial.append(item)
    doc = {
        "source": "HF tokenizers " + tokenizers.__version__ + " on gpt2/tokenizer.json",
        "e2e_file": "e2e/valid.txt",
        "e2e_lines": len(lines),
        "eos_id": tok.token_to_id("<|endoftext|>"),
        "vocab_size": tok.get_vocab_size(),
        "adversarial": adversarial,
        "e2e_ids": [enc.ids for enc in tok.encode_batch(lines)],
    }
    write_json(os.path.join(OUT, "reference_ids.json"), doc, {"adversarial", "e2e_ids"})


def make_tiny(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    os.makedirs(os.path.join(OUT, "tiny"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "tiny_json"), exist_ok=True)
    tok.model.save(os.path.join(OUT, "tiny"))
    tok.save(os.path.join(OUT, "tiny_json", "tokenizer.json"))
    # Added tokens that swallow the whitespace beside them (RoBERTa's <mask> has lstrip).
    special = Tokenizer.from_file(os.path.join(OUT, "tiny_json", "tokenizer.json"))
    special.add_special_tokens([AddedToken("<mask>", lstrip=True), AddedToken("<r>", rstrip=True)])
    os.makedirs(os.path.join(OUT, "tiny_special"), exist_ok=True)
    special.save(os.path.join(OUT, "tiny_special", "tokenizer.json"))
    special_texts = ["the <mask>", "the  \t<mask>", "<mask>x", "a <r>  b", "a<r>\n\nb", "x \u3000<mask>",
                     "<mask> <mask>", " <r> <r> ", "<r><mask>", "a <|endoftext|> <mask> <r> b", "<mas <r"]
    doc = {
        "source": "HF tokenizers " + tokenizers.__version__ + ", BpeTrainer on e2e/valid.txt",
        "eos_id": tok.token_to_id("<|endoftext|>"),
        "vocab_size": tok.get_vocab_size(),
        "adversarial": [{"text": t, "ids": tok.encode(t).ids} for t in ADVERSARIAL],
        "e2e": [{"text": t, "ids": tok.encode(t).ids} for t in lines[:SUBSET_LINES]],
        "special": [{"text": t, "ids": special.encode(t).ids} for t in special_texts + ADVERSARIAL],
    }
    write_json(os.path.join(OUT, "reference_tiny.json"), doc, {"adversarial", "e2e", "special"})


def make_sp(lines):
    os.makedirs(os.path.join(OUT, "sp"), exist_ok=True)
    # Trained from an iterator into memory, so no file path lands in the model's trainer_spec and a
    # regeneration writes the same bytes.
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe",
        vocab_size=512, byte_fallback=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, character_coverage=1.0, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    model = buf.getvalue()
    path = os.path.join(OUT, "sp", "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    texts = [t for t in ADVERSARIAL if "<|endoftext|>" not in t]
    doc = {
        "source": "sentencepiece " + spm.__version__ + ", BPE trained on e2e/valid.txt",
        "eos_id": sp.eos_id(),
        "vocab_size": sp.get_piece_size(),
        "adversarial": [{"text": t, "ids": sp.encode(t)} for t in texts],
        "e2e": [{"text": t, "ids": sp.encode(t)} for t in lines[:SUBSET_LINES]],
    }
    write_json(os.path.join(OUT, "reference_sp.json"), doc, {"adversarial", "e2e"})


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_tokenizer_fixtures.py SHARED_DATA_DIR   (e.g. ../shared/data)")
    shared = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    lines = e2e_lines(shared)
    make_gpt2(shared, lines)
    make_tiny(lines)
    make_sp(lines)


if __name__ == "__main__":
    main()
