#!/usr/bin/env python3
"""Converts the E2E NLG Challenge's official CSV files to lora's E2E text layout, one example a line:

    name : The Vaults | Type : pub | price : more than £ 30 | near : Café Adriatic||The Vaults pub near Café Adriatic ...

the layout of the LoRA paper's reference data (microsoft/LoRA examples/NLG, taken from Li and Liang's
prefix-tuning): slots in the CSV's order with their names mapped (eatType -> Type, priceRange -> price,
familyFriendly -> family friendly), and values and texts split into words and punctuation (". , ! ? ; : ( )
- / £ \"" stand alone, except a decimal point or thousands comma inside a number; "'s" and "n't" are
split off). The splitting is a regex, close to the reference files' but not promised byte-identical to
them; lora's metrics tokenize again as the official scorer does.

The official files (https://github.com/tuetschek/e2e-dataset, e2e-dataset.zip; columns mr,ref):
    trainset.csv  devset.csv  testset_w_refs.csv
Usage (stdlib only):
    python3 scripts/e2e_csv_to_txt.py e2e-dataset/trainset.csv data/e2e/train.txt
    python3 scripts/e2e_csv_to_txt.py e2e-dataset/devset.csv data/e2e/valid.txt
    python3 scripts/e2e_csv_to_txt.py e2e-dataset/testset_w_refs.csv data/e2e/test.txt
    python3 scripts/e2e_csv_to_txt.py --dir e2e-dataset data/e2e      # the three at once
Every reference is one line; the lines of one meaning representation stay together, which is how
`lora eval` groups the references of a meaning representation. Exit 2 on a file it cannot read as the
E2E CSV (the message names the file, the row and what was found).
"""
import argparse
import csv
import os
import re
import sys

SLOT_NAMES = {"name": "name", "eatType": "Type", "food": "food", "priceRange": "price",
              "customer rating": "customer rating", "area": "area", "familyFriendly": "family friendly",
              "near": "near"}
SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(?:,|$)")
# Punctuation and the pound sign stand alone; 's and n't are split off as the reference files do.
PUNCT = re.compile(r"([!?;:()\"/£-]|(?<!\d)[.,]|[.,](?!\d))")  # 10.50 and 1,000 stay whole
CLITIC = re.compile(r"(\w)('s|n't|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)


def words(text):
    text = CLITIC.sub(r"\1 \2", text.replace("\u2019", "'"))
    text = PUNCT.sub(r" \1 ", text)
    return " ".join(text.split())


def mr_line(mr, where):
    slots = []
    pos = 0
    for m in SLOT.finditer(mr):
        if m.start() != pos:
            break
        pos = m.end()
        key, value = m.group(1).strip(), m.group(2).strip()
        if key not in SLOT_NAMES:
            raise ValueError(f"{where}: unknown slot '{key}' in mr \"{mr}\"; the E2E slots are "
                             f"{', '.join(SLOT_NAMES)}")
        slots.append(f"{SLOT_NAMES[key]} : {words(value)}")
    if not slots or pos != len(mr):
        raise ValueError(f"{where}: mr \"{mr}\" is not a list of slot[value] pairs separated by commas "
                         f"(as in \"name[The Eagle], eatType[pub]\")")
    return " | ".join(slots)


def convert(src, dst):
    try:
        f = open(src, newline="", encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{src}: cannot read it ({e.strerror}); give the path of trainset.csv, devset.csv or "
                         f"testset_w_refs.csv from the E2E dataset")
    lines = []
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{src}: the file is empty; expected a header row 'mr,ref'")
        except UnicodeDecodeError as e:
            raise ValueError(f"{src}: not UTF-8 ({e.reason} at byte {e.start}); the official files are UTF-8")
        if "mr" not in header or "ref" not in header:
            raise ValueError(f"{src}:1: expected the columns mr and ref, found {','.join(header)}; "
                             f"testset.csv has no references: use testset_w_refs.csv")
        i_mr, i_ref = header.index("mr"), header.index("ref")
        for row_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{src}:{row_no}"
            if len(row) != len(header):
                raise ValueError(f"{where}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
            ref = words(row[i_ref])
            if not ref:
                raise ValueError(f"{where}: the reference text is empty")
            lines.append(mr_line(row[i_mr].strip(), where) + "||" + ref)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in lines))
    os.replace(tmp, dst)
    print(f"{src} -> {dst}: {len(lines)} examples, {len(set(l.split('||')[0] for l in lines))} meaning representations")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="an E2E CSV file, or with --dir the folder holding the three official files")
    ap.add_argument("dst", help="the output .txt file, or with --dir the output folder (train.txt, valid.txt, test.txt)")
    ap.add_argument("--dir", action="store_true", help="convert trainset.csv, devset.csv and testset_w_refs.csv of SRC")
    a = ap.parse_args()
    try:
        if a.dir:
            for name, out in (("trainset.csv", "train.txt"), ("devset.csv", "valid.txt"), ("testset_w_refs.csv", "test.txt")):
                convert(os.path.join(a.src, name), os.path.join(a.dst, out))
        else:
            convert(a.src, a.dst)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
