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
  qwen2/               a byte-level BPE in Qwen2's layout (NFC, Qwen2's split pattern, <|endoftext|>,
                       <|im_start|>, <|im_end|>), trained here on the quickstart text and STRESS and
                       saved by transformers' own Qwen2Tokenizer (tokenizer.json + tokenizer_config.json)
  llama3/              the same in LLaMA 3's layout (no normalizer, \\p{N}{1,3}, ignore_merges, a
                       post-processor that prepends <|begin_of_text|>), built with `tokenizers` as Meta's
                       tokenizer.json is laid out (merges as "a b" strings) and saved by transformers
  reference_qwen2_normalized_added.json
                       ids of qwen2/ with two added tokens matched in normalized text (normalized: true)
  reference_qwen2.json, reference_llama3.json
                       HF's ids (transformers' tokenizer(text), BOS included where it adds one), decoded
                       text and pre-tokenizer words of the adversarial strings, and, with shared data, an
                       FNV-1a hash of the ids of every e2e line (the ids themselves would be megabytes)

The fixtures without shared data (tiny, sp, qwen2, llama3) let the test run anywhere. Lines of valid.txt
are split on b"\\n" exactly as the C++ test splits them (no stripping). Regenerate with one command:

  pip install tokenizers sentencepiece transformers
  python3 scripts/make_tokenizer_fixtures.py ../shared/data
"""
import io
import json
import os
import random
import shutil
import sys

import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers

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

# The split patterns of transformers' Qwen2Tokenizer (models/qwen2/tokenization_qwen2.py) and of Meta's
# LLaMA 3 tokenizer.json: they differ only in \p{N} (one digit a word) against \p{N}{1,3}.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = QWEN2_PATTERN.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
assert LLAMA3_PATTERN != QWEN2_PATTERN
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# LLaMA 3.1's first special tokens, in its order (ids 128000.. there, right after the vocabulary here).
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
# Whole words given to the LLaMA 3 vocabulary without a merge that makes them, as in Meta's vocabulary
# (converted from tiktoken ranks, where merges do not reach every token): only ignore_merges finds them.
LLAMA3_WHOLE_WORDS = [" kaleidoscope", "supercalifragilisticexpialidocious", " xylophone", "987"]

# Strings for the rules of the Qwen2 and LLaMA 3 layouts; the adversarial list above is also used.
LAYOUT_STRINGS = [
    # contractions match case-insensitively, and U+017F (long s) folds to s
    "IT'S", "I'M", "YOU'RE", "We'Re", "they'rE", "WE'VE", "SHE'LL", "He'D", "DON'T", "it'S", "'ſ", "it'ſ x",
    "'ſt", "O'NEIL'S", "'LL'D'RE'VE'M'T", "x'Sup", "'K", "\u00e9'D",
    # an optional non-letter, non-digit, non-newline before a letter run
    "\thello", "\u3000hello", "!hello", "(hello)", "\u00a0nbsp", "a.b.c", "$var", "#tag", "\r\nhello",
    "\nhello", " hello", "  hello", "   hello", "\t\thello", "--flag", "'quoted'", "\u201cquoted\u201d",
    # digits: one a word (Qwen2), up to three (LLaMA 3)
    "1", "12", "123", "1234", "12345", "123456", "1234567", "x1234567y", " 1234", "3.14159", "1,000,000",
    "\u0661\u0662\u0663\u0664", "\u00bd\u00bd\u00bd\u00bd", "2024-01-01T12:34:56", "v1.2.3", "987", " 987",
    "9876", "kaleidoscope 987",
    # punctuation runs, with newlines after them
    "!!!", "...\n", "!!\n\n", " !?\r\n\r\nx", "?!\r\n", ":-)\n\nok", " --->\n", "x.\n\ny", " ...  ",
    # whitespace and newlines
    "\r\n", "\r\n\r\n", "\n\n\n", " \n \n ", "a \n\n b", "a\t\n\tb", "  \n", "\n  ", " \r\n  x", "\r \n",
    "\u2028x", "a\u3000\u3000b", "x  ", "x \t ", "trailing\n", "a\r\rb", "\x0b\x0c\n", "\n\x85y",
    # NFC: decomposed and precomposed forms, singletons, reordering, Hangul, exclusions
    "cafe\u0301", "caf\u00e9", "nai\u0308ve", "re\u0301sume\u0301", "A\u030angstro\u0308m", "\u212b", "\u2126",
    "\u1e0b\u0323", "d\u0323\u0307", "\u1100\u1161\u11a8", "\u0958", "\uf900", "e\u0301\u0301", "\u0301alone",
    "Tie\u0302\u0301ng Vie\u0323\u0302t", "\u00c5\u0301", "o\u0308\u0304", "\u0041\u0301\u0328",
    "x<|im_end|>\u0301", "e<|endoftext|>\u0301", "e\u0301<|im_start|>",
    # scripts, emoji; letters and digits of Unicode 15.0-16.0, which HF's regex engine knows
    "a\U00031350b", "a\U0002ebf0", "x\U0001e4f0\U0001e4f1\U0001e4f2\U0001e4f3y", "\U00010d4a\U00010d4b z",
    " \U0001e5d0\U0001e5d1", "\u65e5\u672c\u8a9e", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0645\u0631\u062d\u0628\u0627", "\u0939\u093f\u0928\u094d\u0926\u0940", "\U0001f44d\U0001f3fd ok",
    # whole words of the LLaMA 3 fixture (ignore_merges) and their neighbours
    " kaleidoscope", "kaleidoscope", " kaleidoscopes", "supercalifragilisticexpialidocious",
    " supercalifragilisticexpialidocious", "The Riverside's menu", " Riverside", " Riverside'S",
    # special tokens of both layouts, written in the text
    "<|im_start|>user\nhi<|im_end|>\n", "<|im_start|><|im_end|>", "<|endoftext|>x",
    "<|begin_of_text|>hello", "hi<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "<|end_of_text|>", "<|begin_of_text|><|begin_of_text|>",
]


def stress_corpus():
    """Training text written here for the rules the Qwen2 and LLaMA 3 split patterns and NFC have."""
    rng = random.Random(1)
    words = ["the", "restaurant", "coffee", "shop", "near", "river", "price", "rating", "family", "food",
             "she", "they", "we", "you", "it", "don", "can", "won", "O'Neil"]
    out = []
    for _ in range(40):
        for k in range(1, 8):
            d = "".join(rng.choice("0123456789") for _ in range(k))
            out += [f"x{d}y", f"costs {d} pounds", f"{d}.", f"({d})", f"  {d}\n"]
        for c in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]:
            w = rng.choice(words)
            out += [w + c, w.upper() + c.upper(), w.title() + c.title(), " " + w + c + " here"]
        out += ["a  b", "a   b", "\t\tx", " \n \n ", "line\r\nline", "para\n\npara", "end  \n", "\u3000x",
                "tab\tsep\tval", "  \r\n\r\n", "!!!", "?!", "...", "---", "(((x)))", "...\n", "!!\n\n",
                ":-)", "$%^&*", "caf\u00e9", "cafe\u0301", "na\u00efve", "nai\u0308ve", "r\u00e9sum\u00e9",
                "re\u0301sume\u0301", "\u00c5ngstr\u00f6m", "A\u030angstro\u0308m", "\u00f1", "n\u0303",
                "Ti\u1ebfng Vi\u1ec7t", "Tie\u0302\u0301ng Vie\u0323\u0302t", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
                "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8", "\U0001f44d\U0001f600",
                "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
                "\u0420\u0443\u0441\u0441\u043a\u0438\u0439", "\u0645\u0631\u062d\u0628\u0627",
                "\u05e9\u05dc\u05d5\u05dd", "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e44\u0e17\u0e22"]
    return out


def quickstart_lines():
    """The project's own synthetic text (data/quickstart): the task lines and the pretraining paragraphs."""
    qs = os.path.normpath(os.path.join(HERE, "..", "data", "quickstart"))
    with open(os.path.join(qs, "train.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    with open(os.path.join(qs, "pretrain.jsonl"), encoding="utf-8") as f:
        lines += [json.loads(line)["text"] for line in f if line.strip()]
    return lines


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


def fnv1a64(text):
    """FNV-1a 64 of text's UTF-8 bytes as 16 hex digits: lora::tokenizer_hash from TOKENIZER_HASH_SEED."""
    h = 0xcbf29ce484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def ids_hash(ids):
    return fnv1a64(",".join(str(i) for i in ids))


def split_pre_tokenizer(pattern):
    """Qwen2's and LLaMA 3's pre-tokenizer: the pattern's matches isolated, then bytes to characters."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])


def train_bpe(pattern, nfc, vocab_size):
    """A byte-level BPE with the given split pattern, trained on the quickstart text and the stress lines:
    its vocabulary (bytes first) and merges."""
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = split_pre_tokenizer(pattern)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(quickstart_lines() + stress_corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def layout_reference(name, hf, fast, specials, shared_lines):
    """HF's ids (tokenizer(text): what transformers gives, BOS included), decoded text and pre-tokenizer
    words of the adversarial and layout strings; hashes of the ids of every e2e line when given."""
    texts = list(dict.fromkeys(ADVERSARIAL + LAYOUT_STRINGS))
    items = []
    for text in texts:
        ids = hf(text)["input_ids"]
        assert ids == fast.encode(text).ids, (name, text)  # transformers and tokenizers agree
        item = {"text": text, "ids": ids, "decoded": fast.decode(ids, skip_special_tokens=False)}
        if not any(sp in text for sp in specials):
            item["words"] = hf_words(fast, text)
        items.append(item)
    bos = fast.encode("").ids
    doc = {
        "source": f"transformers {transformers.__version__} / tokenizers {tokenizers.__version__}",
        "eos_id": hf.eos_token_id,
        "bos_id": bos[0] if bos else -1,
        "vocab_size": fast.get_vocab_size(),
        "strings": items,
    }
    if shared_lines:
        doc["e2e_file"] = "e2e/valid.txt"
        doc["e2e_lines"] = len(shared_lines)
        doc["e2e_tokens"] = 0
        hashes = []
        for line, enc in zip(shared_lines, fast.encode_batch(shared_lines)):
            hashes.append(ids_hash(enc.ids))
            doc["e2e_tokens"] += len(enc.ids)
        for line in shared_lines[:50]:
            assert hf(line)["input_ids"] == fast.encode(line).ids
        doc["e2e_ids_fnv1a64"] = hashes  # of ",".join(ids), BOS included
    write_json(os.path.join(OUT, f"reference_{name}.json"), doc, {"strings", "e2e_ids_fnv1a64"})


def make_qwen2(shared_lines):
    """Qwen2's layout, through transformers' own Qwen2Tokenizer and save_pretrained."""
    vocab, merges = train_bpe(QWEN2_PATTERN, nfc=True, vocab_size=1000)
    out = os.path.join(OUT, "qwen2")
    shutil.rmtree(out, ignore_errors=True)
    qwen = transformers.Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=QWEN2_SPECIALS[1:])
    qwen.save_pretrained(out)
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert type(hf).__name__ == "Qwen2Tokenizer", type(hf)
    fast = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    doc = json.loads(fast.to_str())
    assert doc["normalizer"] == {"type": "NFC"} and doc["pre_tokenizer"]["pretokenizers"][0]["pattern"] == {
        "Regex": QWEN2_PATTERN}, "transformers' Qwen2Tokenizer is not laid out as expected"
    layout_reference("qwen2", hf, fast, QWEN2_SPECIALS, shared_lines)
    # Added tokens matched in normalized text (normalized: true): HF looks for them after the special
    # tokens and NFC, in their own NFC form. The C++ test adds the same two to a copy of tokenizer.json.
    extra = [AddedToken("cafe\u0301!", normalized=True, special=False),
             AddedToken("x<|im", normalized=True, special=False)]
    fast.add_tokens(extra)
    texts = ["a cafe\u0301! b", "a caf\u00e9! b", "cafe\u0301!cafe\u0301!", "x<|im_end|>", "x<|im", "x<|imx<|im_end|>",
             "e\u0301<|im_end|>cafe\u0301!", "cafe\u0301<|im_start|>!"]
    doc = {
        "source": f"tokenizers {tokenizers.__version__}: qwen2/tokenizer.json plus the added tokens below",
        "added": [{"content": t.content, "id": fast.token_to_id(t.content)} for t in extra],
        "strings": [{"text": t, "ids": fast.encode(t).ids} for t in texts],
    }
    write_json(os.path.join(OUT, "reference_qwen2_normalized_added.json"), doc, {"strings"})


def make_llama3(shared_lines):
    """LLaMA 3's layout, built as Meta's tokenizer.json is (LLaMA 3.1), saved by transformers."""
    vocab, merges = train_bpe(LLAMA3_PATTERN, nfc=False, vocab_size=1000)
    enc = {b: c for c, b in byte_decoder().items()}
    for word in LLAMA3_WHOLE_WORDS:
        token = "".join(enc[b] for b in word.encode("utf-8"))
        assert token not in vocab, word
        vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = split_pre_tokenizer(LLAMA3_PATTERN)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = LLAMA3_SPECIALS[0]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                      special_tokens=[(bos, tok.token_to_id(bos))])])
    out = os.path.join(OUT, "llama3")
    shutil.rmtree(out, ignore_errors=True)
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos,
                                                   eos_token=LLAMA3_SPECIALS[1])
    wrapped.save_pretrained(out)
    # Meta's file writes each merge as one "a b" string (tokenizers now writes pairs); both load alike.
    path = os.path.join(out, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["model"]["merges"] = [" ".join(m) for m in doc["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=2)
    hf = transformers.AutoTokenizer.from_pretrained(out)
    fast = Tokenizer.from_file(path)
    assert fast.encode("hi").ids[0] == fast.token_to_id(bos), "no BOS from the post-processor"
    whole = [fast.token_to_id("".join(enc[b] for b in w.encode("utf-8"))) for w in LLAMA3_WHOLE_WORDS]
    assert [fast.encode(w, add_special_tokens=False).ids for w in LLAMA3_WHOLE_WORDS] == [[i] for i in whole]
    layout_reference("llama3", hf, fast, LLAMA3_SPECIALS, shared_lines)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_tokenizer_fixtures.py SHARED_DATA_DIR   (e.g. ../shared/data)")
    shared = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    lines = e2e_lines(shared)
    make_gpt2(shared, lines)
    make_tiny(lines)
    make_sp(lines)
    make_qwen2(lines)
    make_llama3(lines)


if __name__ == "__main__":
    main()
