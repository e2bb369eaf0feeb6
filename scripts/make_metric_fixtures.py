#!/usr/bin/env python3
"""Reference values for tests/test_metrics.cpp, computed by the E2E challenge's official scorer and by
sacrebleu, scikit-learn and SciPy.

Everything scored here is synthetic: restaurant meaning representations, references made from
templates (some spaced like the E2E files, some written as raw text), and noisy predictions (dropped,
repeated and wrong words, truncations, an empty and a one-word prediction). No third-party data is copied.

    pip install sacrebleu pycocoevalcap future scikit-learn scipy   # pycocoevalcap ships the Java jars
    git clone https://github.com/tuetschek/e2e-metrics /tmp/e2e-metrics
    python3 scripts/make_metric_fixtures.py --e2e-metrics /tmp/e2e-metrics --out tests/fixtures/metrics

Needs perl and java on the PATH. Writes predictions.txt, references.txt (the official scorer's formats),
reference_values.json, tokenized.json and glue.json; README.md in the same folder says which program
produced each value.
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile

NAMES = ["The Golden Palace", "Blue Spice", "The Eagle", "Zizzi", "Aromi", "The Punter", "Cotto",
         "Green Man", "The Mill", "Alimentum", "Loch Fyne", "Wildwood"]
NEARS = ["Burger King", "The Portland Arms", "Café Sicilia", "Raja Indian Cuisine", "Crowne Plaza Hotel",
         "The Bakers", "Rainbow Vegetarian Café", "All Bar One"]
FOODS = ["Italian", "French", "Chinese", "Indian", "English", "Japanese", "Fast food"]
PRICES = ["cheap", "moderate", "high", "less than £20", "£20-25", "more than £30"]
RATINGS = ["low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"]
TYPES = ["restaurant", "pub", "coffee shop"]
AREAS = ["city centre", "riverside"]


def make_mr(rng):
    mr = {"name": rng.choice(NAMES), "eatType": rng.choice(TYPES)}
    for key, values in (("food", FOODS), ("priceRange", PRICES), ("customer rating", RATINGS),
                        ("area", AREAS), ("familyFriendly", ["yes", "no"]), ("near", NEARS)):
        if rng.random() < 0.6:
            mr[key] = rng.choice(values)
    return mr


def clauses(mr, rng, raw):
    """The slots of an MR as phrases, in a random order."""
    out = []
    if "food" in mr:
        out.append(rng.choice(["serves %s food", "offers %s dishes", "has %s cuisine"]) % mr["food"])
    if "priceRange" in mr:
        p = mr["priceRange"]
        if not raw:
            p = p.replace("£20-25", "£ 20 - 25").replace("£20", "£ 20").replace("£30", "£ 30")
        out.append(rng.choice(["has a %s price range", "is priced %s", "costs %s"]) % p)
    if "customer rating" in mr:
        out.append(rng.choice(["has a %s customer rating", "is rated %s by customers"]) % mr["customer rating"])
    if "area" in mr:
        out.append(rng.choice(["is in the %s", "is located in the %s area"]) % mr["area"])
    if "familyFriendly" in mr:
        ff = ("family-friendly" if raw else "family - friendly")
        if mr["familyFriendly"] == "yes":
            out.append(rng.choice(["is %s" % ff, "welcomes children", "is kid friendly"]))
        else:
            out.append(rng.choice(["is not %s" % ff, "does not allow children",
                                   ("isn't" if raw else "is not") + " kid friendly"]))
    if "near" in mr:
        out.append(rng.choice(["is near %s", "can be found close to %s"]) % mr["near"])
    rng.shuffle(out)
    return out


def realise(mr, rng, raw):
    """One reference text for an MR: E2E spacing (` , `, ` . `) or raw punctuation."""
    cl = clauses(mr, rng, raw)
    comma, stop = (", ", ".") if raw else (" , ", " .")
    head = "%s is a %s" % (mr["name"], mr["eatType"])
    if raw and rng.random() < 0.3:
        head = "%s's a %s" % (mr["name"], mr["eatType"])
    text = head + (comma + "it " + " and ".join(cl[:2]) if cl else "")
    if raw and rng.random() < 0.3:
        text += ' (a "local favourite")'
    text += stop
    if cl[2:]:
        text += " " + rng.choice(["It", "The place"]) + " " + " and ".join(cl[2:])
        if raw and rng.random() < 0.3:
            text += "; don't miss it"
        text += stop
    return text


def noisy(text, rng):
    """A prediction: a reference-like text with word-level noise."""
    words = text.split()
    out = []
    for w in words:
        r = rng.random()
        if r < 0.07:
            continue  # dropped
        if r < 0.11:
            out.append(rng.choice(["nice", "good", "the", "place", "food", "area", "Chinese", "cheap"]))
            continue  # replaced
        out.append(w)
        if r > 0.97:
            out.append(w)  # repeated
    if rng.random() < 0.15:
        out = out[: max(1, len(out) * 2 // 3)]  # truncated
    if rng.random() < 0.2:
        out = [w.upper() if rng.random() < 0.5 else w for w in out]
    return " ".join(out)


def make_corpus(seed, n_groups):
    rng = random.Random(seed)
    preds, refs = [], []
    for g in range(n_groups):
        mr = make_mr(rng)
        k = rng.choice([1, 2, 3, 4, 5, 6, 8])
        group = [realise(mr, rng, raw=rng.random() < 0.3) for _ in range(k)]
        refs.append(group)
        if g == 3:
            preds.append("")                      # empty prediction
        elif g == 7:
            preds.append(mr["name"].split()[-1])  # one word
        elif g == 11:
            preds.append(group[0])                # exact copy of a reference
        else:
            preds.append(noisy(realise(mr, rng, raw=rng.random() < 0.3), rng))
    return preds, refs


def write_files(out, preds, refs):
    with open(os.path.join(out, "predictions.txt"), "w", encoding="utf-8") as f:
        for p in preds:
            f.write(p + "\n")
    with open(os.path.join(out, "references.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join("".join(r + "\n" for r in group) for group in refs))


def coco_scores(preds, refs):
    """The official scorer's COCO part: PTBTokenizer, then METEOR, ROUGE-L and CIDEr (pip pycocoevalcap,
    the same code as e2e-metrics' copy, with the Java jars)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.cider.cider import Cider
    gts = {"inst-%d" % i: [{"caption": r} for r in group] for i, group in enumerate(refs)}
    res = {"inst-%d" % i: [{"caption": p}] for i, p in enumerate(preds)}
    tok = PTBTokenizer()
    gts_t, res_t = tok.tokenize(gts), tok.tokenize(res)
    scores = {"ROUGE_L": float(Rouge().compute_score(gts_t, res_t)[0]),
              "CIDEr": float(Cider().compute_score(gts_t, res_t)[0])}
    # METEOR 1.5 (java -jar -Xmx2G meteor-1.5.jar ... -stdio -l en -norm): the corpus score and the
    # per-segment scores, in the segments' order (tests/test_golden_meteor.cpp compares both).
    from pycocoevalcap.meteor.meteor import Meteor
    meteor, meteor_segments = Meteor().compute_score(gts_t, res_t)
    scores["METEOR"] = float(meteor)
    scores["METEOR_segments"] = [float(x) for x in meteor_segments]
    return scores, gts_t, res_t


def precise_copy(e2e_dir):
    """A copy of the scorer whose mteval-v13a-sig.pl prints its final NIST and BLEU with 10 decimals
    instead of 4 (that printf is the only line changed)."""
    dst = os.path.join(tempfile.mkdtemp(prefix="e2e-metrics-"), "e2e-metrics")
    shutil.copytree(e2e_dir, dst, ignore=shutil.ignore_patterns("*.jar", "*.gz", ".git"))
    pl = os.path.join(dst, "mteval", "mteval-v13a-sig.pl")
    text = open(pl, encoding="latin-1").read()
    old = 'printf "NIST score = %2.4f  BLEU score = %.4f'
    assert text.count(old) == 1, "unexpected mteval-v13a-sig.pl"
    open(pl, "w", encoding="latin-1").write(text.replace(old, 'printf "NIST score = %2.10f  BLEU score = %.10f'))
    return dst


def mteval_scores(e2e_dir, preds, refs):
    """BLEU and NIST exactly as measure_scores.py computes them: its own mteval-v13a-sig.pl run (the
    official numbers) and its Python port pymteval."""
    import pycocotools.coco  # noqa: F401  pip packages (pycocoevalcap has the jars) serve measure_scores' imports
    import pycocoevalcap.eval  # noqa: F401
    if e2e_dir not in sys.path:
        sys.path.insert(0, e2e_dir)
    import measure_scores  # noqa: E402  (the official scorer's module)
    perl = measure_scores.run_mteval(refs, preds, [""] * len(preds))
    py = measure_scores.run_pymteval(refs, preds)
    from metrics.pymteval import BLEUScore
    # pymteval's port of the `tokenization` sub, lowercasing ASCII only as the Perl's tr/[A-Z]/[a-z]/ does
    # (Python's lower() would also fold non-ASCII capitals, which the official BLEU does not).
    ascii_lower = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    tokenized = [BLEUScore().tokenize(s.translate(ascii_lower)) if s.strip() else [] for s in preds]
    return perl, py, tokenized


def glue_values(seed):
    import numpy as np
    from scipy import stats
    from sklearn import metrics
    rng = np.random.default_rng(seed)
    n = 80
    gold = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.75, gold, 1 - gold)
    gold3 = rng.integers(0, 3, n)
    pred3 = np.where(rng.random(n) < 0.6, gold3, rng.integers(0, 3, n))
    x = np.round(rng.uniform(0, 5, n) * 2) / 2          # STS-B-like scores with ties
    y = np.round((x + rng.normal(0, 1.0, n)) * 4) / 4
    return {
        "binary": {"predictions": pred.tolist(), "labels": gold.tolist(),
                   "accuracy": metrics.accuracy_score(gold, pred), "f1": metrics.f1_score(gold, pred),
                   "matthews": metrics.matthews_corrcoef(gold, pred)},
        "multiclass": {"predictions": pred3.tolist(), "labels": gold3.tolist(),
                       "accuracy": metrics.accuracy_score(gold3, pred3),
                       "matthews": metrics.matthews_corrcoef(gold3, pred3)},
        "regression": {"x": x.tolist(), "y": y.tolist(), "pearson": float(stats.pearsonr(x, y)[0]),
                       "spearman": float(stats.spearmanr(x, y)[0]),
                       "ranks_x": stats.rankdata(x).tolist()},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--e2e-metrics", required=True, help="checkout of github.com/tuetschek/e2e-metrics")
    ap.add_argument("--out", default="tests/fixtures/metrics")
    ap.add_argument("--seed", type=int, default=2021)
    ap.add_argument("--groups", type=int, default=50)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    preds, refs = make_corpus(a.seed, a.groups)
    write_files(a.out, preds, refs)

    import sacrebleu
    from sacrebleu.metrics import BLEU
    nrefs = max(len(g) for g in refs)
    streams = [[g[k] if k < len(g) else None for g in refs] for k in range(nrefs)]
    sb = BLEU(tokenize="13a", lowercase=True).corpus_score(preds, streams)

    e2e_dir = precise_copy(os.path.abspath(a.e2e_metrics))
    perl, py, mteval_tok = mteval_scores(e2e_dir, preds, refs)
    coco, gts_t, res_t = coco_scores(preds, refs)

    values = {
        "segments": len(preds), "references": sum(len(g) for g in refs),
        "bleu_sacrebleu": sb.score / 100.0, "bleu_mteval_perl": perl["BLEU"], "bleu_pymteval": py["BLEU"],
        "nist_mteval_perl": perl["NIST"], "nist_pymteval": py["NIST"],
        "rouge_l_coco": coco["ROUGE_L"], "cider_coco": coco["CIDEr"], "meteor_coco": coco["METEOR"],
        "meteor_coco_segments": coco["METEOR_segments"],
        "versions": {"sacrebleu": sacrebleu.__version__, "python": sys.version.split()[0]},
    }
    # Sub-corpora: the first 10 groups alone (different idf and info weights, fewer references).
    sub_p, sub_r = preds[:10], refs[:10]
    sub_perl, _, _ = mteval_scores(e2e_dir, sub_p, sub_r)
    sub_coco, _, _ = coco_scores(sub_p, sub_r)
    values["first10"] = {"bleu_mteval_perl": sub_perl["BLEU"], "nist_mteval_perl": sub_perl["NIST"],
                         "bleu_sacrebleu": BLEU(tokenize="13a", lowercase=True).corpus_score(
                             sub_p, [[g[k] if k < len(g) else None for g in sub_r] for k in range(nrefs)]).score / 100,
                         "rouge_l_coco": sub_coco["ROUGE_L"], "cider_coco": sub_coco["CIDEr"],
                         "meteor_coco": sub_coco["METEOR"]}
    with open(os.path.join(a.out, "reference_values.json"), "w") as f:
        json.dump(values, f, indent=1)
    # Tokenizations, line by line: PTBTokenizer (punctuation removed) for predictions then references.
    ptb = [res_t["inst-%d" % i][0] for i in range(len(preds))]
    ptb += [t for i in range(len(refs)) for t in gts_t["inst-%d" % i]]
    texts = preds + [r for g in refs for r in g]
    with open(os.path.join(a.out, "tokenized.json"), "w") as f:
        json.dump({"texts": texts, "ptb": ptb, "mteval_predictions": [" ".join(t) for t in mteval_tok]},
                  f, indent=0, ensure_ascii=False)
    with open(os.path.join(a.out, "glue.json"), "w") as f:
        json.dump(glue_values(a.seed), f, indent=1)
    shutil.rmtree(os.path.dirname(e2e_dir))
    print(json.dumps(values, indent=1))


if __name__ == "__main__":
    main()
