#!/usr/bin/env python3
"""Synthetic data for the quickstart: a restaurant-domain corpus, an E2E-style task and a small BPE.

The quickstart pretrains a tiny GPT-2 on `pretrain.jsonl` (full fine-tune), so that it knows how
sentences about restaurants read, then LoRA-fine-tunes it on `train.txt`: turning an E2E meaning
representation (MR) into a sentence. The corpus describes venues with the same slots and phrasing but
never shows an MR, so the MR -> sentence mapping is what LoRA has to learn.

Writes, under --out:
  pretrain.jsonl              {"text": ...} a line: 1-3 sentence paragraphs (descriptions, reviews, ...)
  train.txt, valid.txt        E2E format, `name : X | Type : pub | ... ||reference text . ` a line;
                              valid MRs are disjoint from train MRs and carry several references each
  model-tokenizer/vocab.json  byte-level BPE in GPT-2's format: 256 byte tokens (GPT-2's byte-to-unicode
  model-tokenizer/merges.txt  mapping and id order), one token per merge, then <|endoftext|> last
  README.md                   what the data is and how it was made

Stdlib only, deterministic (every draw comes from random.Random(--seed)), a few seconds:
  python3 scripts/make_quickstart_data.py --out data/quickstart
--verify also loads the tokenizer with transformers' GPT2TokenizerFast (when installed) and checks
that it round-trips every line and splits text exactly as this script's own BPE does.
"""
import argparse
import collections
import json
import random
import re
from pathlib import Path

# ---------------------------------------------------------------------------------------------------
# The world: slot values. MR spellings follow the E2E files (`Type`, `price`, `£ 20 - 25`, ...).

NAMES = ["The Copper Kettle", "Blue Lantern", "The Olive Tree", "Riverbank Kitchen", "The Red Fox",
         "Saffron House", "The Golden Goose", "Little Napoli", "The Old Mill", "Green Door",
         "The Silver Spoon", "Lotus Garden", "The Anchor", "Maple Grill", "The Lemon Tree",
         "Bamboo House", "The Crown", "Sunflower", "The Harbour", "Oak and Ivy", "Starling",
         "The Blue Heron", "Cedar Hall", "The Wild Fig"]
EAT_TYPES = ["coffee shop", "restaurant", "pub"]
FOODS = ["English", "Chinese", "French", "Italian", "Indian", "Japanese", "Fast food"]
PRICES = ["cheap", "moderate", "high", "less than £ 20", "£ 20 - 25", "more than £ 30"]
RATINGS = ["low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"]
AREAS = ["riverside", "city centre"]
FAMILY = ["yes", "no"]
NEAR = ["Castle Park", "Market Square", "Kings Bridge", "The Grand Hotel", "The Royal Theatre",
        "Central Library", "The Old Bakery", "Abbey Gardens", "Burger Palace", "The Corn Exchange"]

SLOTS = [("Type", EAT_TYPES), ("food", FOODS), ("price", PRICES), ("customer rating", RATINGS),
         ("area", AREAS), ("family friendly", FAMILY), ("near", NEAR)]
SLOT_ORDER = ["name"] + [k for k, _ in SLOTS]


def article(word):
    return "an" if word[0].lower() in "aeiou" else "a"


def food_words(food):
    return "fast food" if food == "Fast food" else food + " food"


def food_adj(food):
    return "fast food" if food == "Fast food" else food


# ---------------------------------------------------------------------------------------------------
# Phrases, one function per slot and form. Text follows the E2E references' spacing: punctuation and
# hyphens stand apart (`family - friendly`, ` , `, ` . `).

def price_pp(p, rng):  # "with ..." complement
    if p in ("cheap", "moderate", "high"):
        return rng.choice([f"with {article(p)} {p} price range", f"with {p} prices"])
    return rng.choice([f"with prices {p}", f"with a price range of {p}"])


def price_clause(p, rng):  # predicate for "It ..."
    if p in ("cheap", "moderate", "high"):
        return rng.choice([f"has {article(p)} {p} price range", f"is in the {p} price range"])
    return rng.choice([f"has a price range of {p}", f"costs {p}"])


def price_adj(p):  # pre-noun adjective, or None
    return {"cheap": "cheap", "moderate": "moderately priced", "high": "expensive"}.get(p)


def rating_pp(r, rng):
    if r in ("low", "average", "high"):
        return rng.choice([f"with {article(r)} {r} customer rating", f"with {article(r)} {r} rating"])
    return rng.choice([f"with a customer rating of {r}", f"rated {r} by customers"])


def rating_clause(r, rng):
    if r in ("low", "average", "high"):
        return rng.choice([f"has {article(r)} {r} customer rating", f"is rated {r} by customers"])
    return rng.choice([f"has a customer rating of {r}", f"is rated {r} by its customers"])


def area_pp(a, rng):
    if a == "riverside":
        return rng.choice(["in the riverside area", "by the riverside", "on the riverside"])
    return rng.choice(["in the city centre", "in the centre of the city"])


def near_pp(n, rng):
    return rng.choice([f"near {n}", f"close to {n}", f"next to {n}"])


def family_adj(f, rng):
    word = rng.choice(["family - friendly", "kid friendly", "child friendly"])
    if f == "yes":
        return word
    return "non " + word if word == "family - friendly" else "not " + word


def family_clause(f, rng):
    if f == "yes":
        return rng.choice(["is family - friendly", "is kid friendly", "welcomes children"])
    return rng.choice(["is not family - friendly", "is not kid friendly", "does not welcome children"])


def food_pp(food, rng):
    return f"serving {food_words(food)}"


def food_clause(food, rng):
    return rng.choice([f"serves {food_words(food)}", f"offers {food_words(food)}"])


def join_and(parts):
    if len(parts) <= 1:
        return "".join(parts)
    return " , ".join(parts[:-1]) + " and " + parts[-1]


def realise(mr, rng):
    """One English rendering of an MR (dict slot -> value); every slot appears, nothing else does."""
    name = mr["name"]
    rest = {k: v for k, v in mr.items() if k != "name"}
    head_type = rest.pop("Type", None) or rng.choice(["venue", "place"])
    adjs = []
    if "family friendly" in rest and rng.random() < 0.4:
        adj = family_adj(rest["family friendly"], rng)
        if not adj.startswith("not "):  # "a not kid friendly pub" does not read
            adjs.append(adj)
            del rest["family friendly"]
    if "price" in rest and price_adj(rest["price"]) and rng.random() < 0.5:
        adjs.append(price_adj(rest.pop("price")))
    if "food" in rest and rng.random() < 0.6:
        adjs.append(food_adj(rest.pop("food")))
    noun = " ".join(adjs + [head_type])
    # Place and "with ..." phrases may follow the head in one sentence; the rest become "It ..." clauses.
    place, comps, clauses = [], [], []
    order = [k for k in SLOT_ORDER if k in rest]
    rng.shuffle(order)
    for k in order:
        v = rest[k]
        in_head = rng.random() < 0.55
        if k == "area":
            (place if in_head else clauses).append(area_pp(v, rng) if in_head else "is " + area_pp(v, rng))
        elif k == "near":
            (place if in_head else clauses).append(near_pp(v, rng) if in_head else "is " + near_pp(v, rng))
        elif k == "price":
            (comps if in_head else clauses).append(price_pp(v, rng) if in_head else price_clause(v, rng))
        elif k == "customer rating":
            (comps if in_head else clauses).append(rating_pp(v, rng) if in_head else rating_clause(v, rng))
        elif k == "food":
            (comps if in_head else clauses).append(food_pp(v, rng) if in_head else food_clause(v, rng))
        elif k == "family friendly":
            clauses.append(family_clause(v, rng))
    form = rng.randrange(3)
    if form == 2 and place:
        first = f"{rng.choice(['Located', 'Found'])} {place.pop(0)} , {name} is {article(noun)} {noun}"
    elif form == 1:
        first = f"There is {article(noun)} {noun} called {name}"
    else:
        first = f"{name} is {article(noun)} {noun}"
    # "a pub in the city centre near X with a high rating and serving English food"
    tail = place + ([join_and(comps)] if comps else [])
    if tail:
        first += " " + " ".join(tail)
    sentences = [first + " ."]
    if clauses:
        subject = rng.choice(["It", "The " + head_type if head_type in EAT_TYPES else "It", name])
        if len(clauses) > 3:
            sentences.append(f"{subject} {join_and(clauses[:2])} .")
            sentences.append(f"It {join_and(clauses[2:])} .")
        else:
            sentences.append(f"{subject} {join_and(clauses)} .")
    return " ".join(sentences)


def check_faithful(mr, text):
    """Every slot of the MR leaves its mark in the text (a guard against template slips)."""
    marks = {"name": [mr.get("name")], "Type": [mr.get("Type")],
             "food": [food_words(mr.get("food", "x")), food_adj(mr.get("food", "x")) + " "],
             "price": [mr.get("price"), str(price_adj(mr.get("price", "")))],
             "customer rating": [f"{mr.get('customer rating')} customer rating", f"{mr.get('customer rating')} rating",
                                 f"rating of {mr.get('customer rating')}", f"rated {mr.get('customer rating')}"],
             "area": ["riverside"] if mr.get("area") == "riverside" else ["city"],
             "family friendly": (["not ", "non "] if mr.get("family friendly") == "no" else
                                 ["friendly", "welcomes"]),
             "near": [str(mr.get("near"))]}
    for k in mr:
        if not any(m in text for m in marks[k]):
            raise AssertionError(f"slot {k} of {mr_string(mr)} missing from: {text}")


def random_mr(rng, min_slots=2, max_slots=7):
    k = rng.randint(min_slots, max_slots)
    chosen = set(rng.sample(range(len(SLOTS)), k))
    mr = {"name": rng.choice(NAMES)}
    for i, (key, values) in enumerate(SLOTS):
        if i in chosen:
            mr[key] = rng.choice(values)
    return mr


def mr_string(mr):
    return " | ".join(f"{k} : {mr[k]}" for k in SLOT_ORDER if k in mr)


# ---------------------------------------------------------------------------------------------------
# The pretraining corpus: descriptions like the task's plus reviews, directions and comparisons,
# so that the model knows the vocabulary and the phrasing, but never sees an MR.

def review(rng):
    name, food = rng.choice(NAMES), rng.choice(FOODS)
    good = rng.random() < 0.6
    when = rng.choice(["last week", "on Friday", "yesterday", "for lunch", "on Sunday evening"])
    who = rng.choice(["We", "My family", "My friends and I", "I"])
    s1 = f"{who} {rng.choice(['had dinner', 'ate', 'had a meal'])} at {name} {when} ."
    if good:
        s2 = rng.choice([f"The {food_words(food)} was excellent and the staff were friendly .",
                         f"The {food_words(food)} was very good and the prices were fair .",
                         "Everything was fresh and we will come back soon ."])
        s3 = f"I would give it 5 out of 5 ." if rng.random() < 0.5 else "The customer rating is high for a reason ."
    else:
        s2 = rng.choice([f"The {food_words(food)} was cold and the service was slow .",
                         "It was too expensive for what we got .",
                         "The room was noisy and the tables were dirty ."])
        s3 = "I would give it 1 out of 5 ." if rng.random() < 0.5 else "No wonder its customer rating is low ."
    return " ".join([s1, s2, s3][:rng.randint(2, 3)])


def directions(rng):
    name, near, area = rng.choice(NAMES), rng.choice(NEAR), rng.choice(AREAS)
    s1 = rng.choice([f"To find {name} , walk from {near} towards the {'river' if area == 'riverside' else 'city centre'} .",
                     f"{name} is a short walk from {near} .",
                     f"If you are at {near} , {name} is just around the corner ."])
    s2 = rng.choice([f"It is {area_pp(area, rng)} .", f"The area around {near} is busy at weekends .",
                     f"Many people stop there after visiting {near} ."])
    return s1 + " " + s2 if rng.random() < 0.7 else s1


def comparison(rng):
    a, b = rng.sample(NAMES, 2)
    s = rng.choice([f"{a} is cheaper than {b} .", f"{a} has a higher customer rating than {b} .",
                    f"{a} is more family - friendly than {b} .", f"{a} and {b} are both {area_pp(rng.choice(AREAS), rng)} .",
                    f"Unlike {b} , {a} serves {food_words(rng.choice(FOODS))} ."])
    t = rng.choice(["", f" Both are popular with students .", f" Prices at {b} are {rng.choice(['high', 'moderate', 'cheap'])} ."])
    return s + t


def general(rng):
    food, et = rng.choice(FOODS), rng.choice(EAT_TYPES)
    return rng.choice([
        f"A {et} is a good place to meet friends .",
        f"Many families look for a kid friendly {et} with cheap prices .",
        f"{food_words(food).capitalize()} is popular in the city centre .",
        f"The riverside has several {et}s with a view of the water .",
        f"A customer rating of 5 out of 5 is rare for a {et} .",
        f"Prices of more than £ 30 are common in the centre of the city .",
        f"A meal for less than £ 20 is easy to find near {rng.choice(NEAR)} .",
        f"Most {et}s near {rng.choice(NEAR)} serve {food_words(food)} .",
    ])


def paragraph(rng):
    r = rng.random()
    if r < 0.55:
        return realise(random_mr(rng, 1, 7), rng)
    if r < 0.7:
        return review(rng)
    if r < 0.8:
        return directions(rng)
    if r < 0.9:
        return comparison(rng)
    return general(rng) + (" " + general(rng) if rng.random() < 0.5 else "")


# ---------------------------------------------------------------------------------------------------
# Byte-level BPE in GPT-2's file format.

def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table, in GPT-2's id order.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map, in increasing byte order, to
    U+0100 onwards. The id of a byte token is its position in the printable-first order.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in printable:
        table[b] = chr(b)
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + extra)
            extra += 1
    order = printable + [b for b in range(256) if b not in printable]
    return table, order


# GPT-2's split (contractions, letters, digits, other symbols, each with an optional leading space;
# then whitespace), written for Python's `re`: [^\W\d_] is a letter, \d a digit. Exact for our text.
PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def train_bpe(texts, n_merges):
    """Classic BPE over pre-token types: merge the most frequent adjacent pair (ties: smallest pair)."""
    byte_char, order = bytes_to_unicode()
    counts = collections.Counter()
    for t in texts:
        counts.update(PRETOKEN.findall(t))
    words = [[byte_char[b] for b in w.encode("utf-8")] for w in counts]
    freqs = list(counts.values())
    vocab = {byte_char[b]: i for i, b in enumerate(order)}
    merges = []
    while len(merges) < n_merges:
        pairs = collections.Counter()
        for w, f in zip(words, freqs):
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += f
        # a pair whose concatenation already is a token would add a merge but no id: skip it, so that
        # token id == 256 + merge rank throughout
        candidates = [(-c, p) for p, c in pairs.items() if p[0] + p[1] not in vocab]
        if not candidates:
            break
        _, (a, b) = min(candidates)
        merges.append((a, b))
        vocab[a + b] = len(vocab)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def bpe_encode(text, vocab, merges):
    """Encode with the trained merges (lowest rank first), the way GPT-2's tokenizer applies them."""
    byte_char, _ = bytes_to_unicode()
    rank = {m: i for i, m in enumerate(merges)}
    ids = []
    for piece in PRETOKEN.findall(text):
        w = [byte_char[b] for b in piece.encode("utf-8")]
        while len(w) > 1:
            best = min(range(len(w) - 1), key=lambda i: rank.get((w[i], w[i + 1]), len(rank)))
            if (w[best], w[best + 1]) not in rank:
                break
            w[best:best + 2] = [w[best] + w[best + 1]]
        ids.extend(vocab[s] for s in w)
    return ids


# ---------------------------------------------------------------------------------------------------

README = """# Quickstart data (synthetic)

Everything here is synthetic: made by `scripts/make_quickstart_data.py` from templates and a fixed list
of made-up venue names, foods, areas, prices, ratings and landmarks. Regenerate it (deterministic, a
few seconds, Python standard library only) with

    python3 scripts/make_quickstart_data.py --out data/quickstart

- `pretrain.jsonl`: {n_pre} paragraphs, one JSON object `{{"text": ...}}` a line, 1-3 sentences each, about
  restaurants: descriptions, reviews, directions, comparisons. It teaches a tiny base model the
  language of the domain; it never contains a meaning representation.
- `train.txt` ({n_train} lines, {n_train_mr} MRs) and `valid.txt` ({n_valid} lines, {n_valid_mr} MRs,
  {refs} references each): the downstream task in the E2E NLG file format, one example a line,
  `meaning representation||reference text`, as in the E2E files of the LoRA paper's scripts:

      {example}

  Slots (in this order when present): name, Type (coffee shop, restaurant, pub), food, price,
  customer rating, area (riverside, city centre), family friendly (yes, no), near. Every reference
  realises every slot of its MR and nothing else. Lines sharing an MR are its multiple references.
  Valid MRs never occur in train. Text is spaced like E2E's (` , `, ` . `, `family - friendly`,
  `£ 20 - 25`) and, like the E2E files, each line ends with a space after the final full stop.
- `model-tokenizer/vocab.json`, `model-tokenizer/merges.txt`: a byte-level BPE with {n_vocab} tokens
  in GPT-2's format: ids 0-255 are the bytes (GPT-2's byte-to-unicode characters, GPT-2's order),
  ids 256-{last_merge} are the merges in `merges.txt` order (one new token per merge), and
  `<|endoftext|>` is the last id, {eot}. Trained on the corpus and the task text with a GPT-2-style
  pre-tokenisation, so GPT-2's tokenizer code (and HF GPT2TokenizerFast) reads it unchanged.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/quickstart"))
    ap.add_argument("--seed", type=int, default=20210617)
    ap.add_argument("--pretrain", type=int, default=5000, help="paragraphs in pretrain.jsonl")
    ap.add_argument("--train-mrs", type=int, default=750, help="distinct MRs in train.txt")
    ap.add_argument("--train-refs", type=int, default=2, help="references per train MR")
    ap.add_argument("--valid-mrs", type=int, default=40, help="distinct MRs in valid.txt")
    ap.add_argument("--valid-refs", type=int, default=4, help="references per valid MR")
    ap.add_argument("--vocab-size", type=int, default=1024,
                    help="at most 256 bytes + merges + <|endoftext|>; training stops earlier once every "
                         "pre-token of the text is a single token")
    ap.add_argument("--verify", action="store_true", help="check the tokenizer with transformers")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = args.out
    (out / "model-tokenizer").mkdir(parents=True, exist_ok=True)

    pretrain = [paragraph(rng) for _ in range(args.pretrain)]
    with open(out / "pretrain.jsonl", "w", encoding="utf-8") as f:
        for t in pretrain:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")

    mrs, seen = [], set()
    while len(mrs) < args.train_mrs + args.valid_mrs:
        mr = random_mr(rng, 2, 7)
        key = mr_string(mr)
        if key not in seen:
            seen.add(key)
            mrs.append(mr)
    splits = {"valid.txt": (mrs[:args.valid_mrs], args.valid_refs),
              "train.txt": (mrs[args.valid_mrs:], args.train_refs)}
    task_lines = {}
    for fname, (group, n_refs) in splits.items():
        lines = []
        for mr in group:
            refs = []
            for _ in range(50 * n_refs):  # distinct references where the MR allows that many
                r = realise(mr, rng)
                check_faithful(mr, r)
                if r not in refs:
                    refs.append(r)
                if len(refs) == n_refs:
                    break
            lines += [f"{mr_string(mr)}||{r} " for r in refs]
        if fname == "train.txt":
            rng.shuffle(lines)  # E2E's train file is grouped by MR; shuffled lines suit a plain reader too
        task_lines[fname] = lines
        (out / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")

    texts = pretrain + [l.rstrip() for lines in task_lines.values() for l in lines]
    vocab, merges = train_bpe(texts, args.vocab_size - 257)
    with open(out / "model-tokenizer" / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(out / "model-tokenizer" / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))

    n_valid_mr = len({l.split("||")[0] for l in task_lines["valid.txt"]})
    n_train_mr = len({l.split("||")[0] for l in task_lines["train.txt"]})
    (out / "README.md").write_text(README.format(
        n_pre=len(pretrain), n_train=len(task_lines["train.txt"]), n_train_mr=n_train_mr,
        n_valid=len(task_lines["valid.txt"]), n_valid_mr=n_valid_mr, refs=args.valid_refs,
        example=task_lines["valid.txt"][0], n_vocab=len(vocab), last_merge=255 + len(merges),
        eot=vocab["<|endoftext|>"]), encoding="utf-8")

    sample = pretrain[:200] + task_lines["valid.txt"]
    n_tok = sum(len(bpe_encode(t, vocab, merges)) for t in sample)
    n_chr = sum(len(t) for t in sample)
    lens = sorted(len(bpe_encode(l, vocab, merges)) for l in task_lines["train.txt"][:300])
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"pretrain.jsonl {len(pretrain)} paragraphs; train.txt {len(task_lines['train.txt'])} lines "
          f"({n_train_mr} MRs); valid.txt {len(task_lines['valid.txt'])} lines ({n_valid_mr} MRs)")
    print(f"vocab {len(vocab)} tokens ({len(merges)} merges), {n_chr / n_tok:.2f} chars/token; task line "
          f"tokens: median {lens[len(lens) // 2]}, max {lens[-1]}; {size / 1e6:.2f} MB in {out}")
    if args.verify:
        verify(out, vocab, merges, sample)


def verify(out, vocab, merges, lines):
    try:
        from transformers import GPT2TokenizerFast
    except ImportError:
        print("verify: transformers is not installed, skipped")
        return
    tok = GPT2TokenizerFast.from_pretrained(str(out / "model-tokenizer"))
    bad = 0
    for line in lines:
        ids = tok.encode(line)
        if tok.decode(ids) != line or ids != bpe_encode(line, vocab, merges):
            bad += 1
    print(f"verify: GPT2TokenizerFast vocab {len(tok)}, {len(lines)} lines, {bad} mismatches "
          f"(round trip and split vs this script's BPE); eos {tok.eos_token!r} = {tok.eos_token_id}")
    if bad:
        raise SystemExit("verify failed")


if __name__ == "__main__":
    main()
