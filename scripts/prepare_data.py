#!/usr/bin/env python3
"""Fixed splits of the movie-review sentences, and the language-model corpus, from data/raw/
(written by scripts/fetch_data.py).

Movie-review polarity (MR) -> data/mr/{train,valid,test}.jsonl, one {"text", "label"} object a line
  * rows with mean rating 0 are dropped; label = sign of the rating ("negative" / "positive")
  * train rows also carry soft targets, "probs": [1 - p, p] with p = sigmoid(SOFT_SCALE * rating)
    (rating: the mean of about 20 raters, in [-4, 4]), so that a sentence the raters found barely
    positive weighs as such; valid and test rows have the label only
  * exact duplicate texts are collapsed before splitting (first occurrence kept; a text that occurs
    with both signs is dropped), so no text is in two splits
  * stratified by label, 80/10/10, random.Random(1234); each split is then shuffled with the same rng
  * the text is kept exactly as in the file (only the CRLF line end and surrounding spaces removed)

Language-model corpus -> data/lm/{train,valid}.txt, one sentence a line
  * Brown: the `word/tag` tokens of each sentence with the tags stripped; `` and '' become "
  * State of the Union: each address split into sentences at [.!?] followed by space and an upper-case
    letter or quote; "(Applause.)"/"(Laughter.)" removed
  * validation: whole documents held out (2% of the Brown files and 2% of the addresses, drawn with
    random.Random(1234)), so no validation sentence's document is in training
  * MR: the *train* split's sentences are appended to data/lm/train.txt (in-domain unlabelled text;
    the LM never sees a valid or test sentence). --no-mr-in-lm leaves them out.

Auxiliary sentiment data -> data/sentiment/{train,valid}.jsonl, one {"text", "rating"} object a line,
for pretrain.py's second phase (no movie reviews in it, so nothing of MR's test split)
  * the human-rated Amazon-review, NYT-editorial and tweet sentences of VADER's hutto_ICWSM_2014 (mean
    rating of about 20 raters, in [-4, 4]; zero ratings kept) and the 7,500 entries of the VADER lexicon
    (word, emoticon or phrase -> mean rating of 10 raters)
  * exact duplicate texts keep their first rating; 5% held out for validation, random.Random(1234)

Usage: .venv/bin/python scripts/prepare_data.py [--data DIR] [--no-mr-in-lm]
Prints the split sizes as one JSON line at the end.
"""
import argparse
import json
import math
import os
import random
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 1234
MR_FILE = "movieReviewSnippets_GroundTruth.txt"
FRACTIONS = (0.8, 0.1, 0.1)
# Soft targets' scale: p(positive) = sigmoid(SOFT_SCALE * rating); rating 0.5 -> 0.73, 1 -> 0.88,
# 2 -> 0.98. Chosen among 0 (hard labels), 0.5, 1 and 2 by 5-fold cross-validation on train + valid,
# never on test: `scripts/experiments.py --cv-soft-scale 0 1 0.5 2` (docs/EXPERIMENTS.md).
SOFT_SCALE = 2.0
LM_VALID_FRACTION = 0.02


def say(msg):
    print(f"[prepare_data] {msg}", flush=True)


def read_mr(path):
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for line in f.read().split("\r\n"):
            if not line.strip():
                continue
            _id, rating, text = line.split("\t", 2)
            rating = float(rating)
            text = text.strip()
            if rating == 0 or not text:
                continue
            rows.append((text, "positive" if rating > 0 else "negative", rating))
    return rows


def first_ratings(rated):
    """text -> rating of its first occurrence in read_mr's rows (as dedupe keeps the first)."""
    out = {}
    for text, _, rating in rated:
        out.setdefault(text, rating)
    return out


def soft_target(rating, scale=SOFT_SCALE):
    """[P(negative), P(positive)] for a mean rating (see SOFT_SCALE), rounded to 6 digits."""
    p = round(1.0 / (1.0 + math.exp(-scale * rating)), 6)
    return [round(1.0 - p, 6), p]


def dedupe(rows):
    labels = {}
    order = []
    for text, label in rows:
        if text not in labels:
            labels[text] = {label}
            order.append(text)
        else:
            labels[text].add(label)
    kept = [(t, next(iter(labels[t]))) for t in order if len(labels[t]) == 1]
    return kept, len(rows) - len(order), len(order) - len(kept)


def split_mr(rows, rng):
    splits = {"train": [], "valid": [], "test": []}
    for label in ("negative", "positive"):
        group = [r for r in rows if r[1] == label]
        rng.shuffle(group)
        n = len(group)
        n_train = round(FRACTIONS[0] * n)
        n_valid = round(FRACTIONS[1] * n)
        splits["train"] += group[:n_train]
        splits["valid"] += group[n_train:n_train + n_valid]
        splits["test"] += group[n_train + n_valid:]
    for rows_ in splits.values():
        rng.shuffle(rows_)
    return splits


QUOTES = {"``": '"', "''": '"'}


def brown_sentences(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            toks = line.split()
            if not toks:
                continue
            words = [QUOTES.get(w, w) for w in (t.rsplit("/", 1)[0] for t in toks) if w]
            if words:
                out.append(" ".join(words))
    return out


SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")
NOISE = re.compile(r"\s*\((?:Applause|Laughter)\.?\)")


def sotu_sentences(path):
    with open(path, encoding="utf-8") as f:
        text = NOISE.sub("", f.read())
    out = []
    for para in text.splitlines():
        para = " ".join(para.split())
        if para:
            out += [s.strip() for s in SENT_END.split(para) if s.strip()]
    return out


SENTIMENT_FILES = ("amazonReviewSnippets_GroundTruth.txt", "nytEditorialSnippets_GroundTruth.txt",
                   "tweets_GroundTruth.txt")
SENTIMENT_VALID_FRACTION = 0.05


def read_sentiment(vader_dir):
    """(text, rating) from the rated sentences (id, rating, text) and the lexicon (text, rating, ...)."""
    rows = []
    for name in SENTIMENT_FILES + ("vader_lexicon.txt",):
        text_col, rating_col = (0, 1) if name == "vader_lexicon.txt" else (2, 1)
        with open(os.path.join(vader_dir, name), encoding="utf-8", newline="") as f:
            for line in f.read().split("\r\n"):
                cols = line.split("\t")
                if len(cols) > max(text_col, rating_col) and cols[text_col].strip():
                    rows.append((cols[text_col].strip(), float(cols[rating_col])))
    seen, out = set(), []
    for text, rating in rows:
        if text not in seen:
            seen.add(text)
            out.append((text, rating))
    return out


def hold_out(names, rng):
    names = sorted(names)
    k = max(1, round(LM_VALID_FRACTION * len(names)))
    return set(rng.sample(names, k))


def write_lines(path, lines):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data"))
    ap.add_argument("--no-mr-in-lm", action="store_true", help="keep MR train text out of the LM corpus")
    args = ap.parse_args()
    raw = os.path.join(args.data, "raw")
    for p in ("mr/" + MR_FILE, "brown", "sotu", "vader"):
        if not os.path.exists(os.path.join(raw, p)):
            raise SystemExit(f"[prepare_data] error: {raw}/{p} missing; run scripts/fetch_data.py first")

    # MR splits
    rated = read_mr(os.path.join(raw, "mr", MR_FILE))
    n_rows = len(rated)
    first_rating = first_ratings(rated)
    rows, n_dup, n_conflict = dedupe([(t, y) for t, y, _ in rated])
    splits = split_mr(rows, random.Random(SEED))
    os.makedirs(os.path.join(args.data, "mr"), exist_ok=True)
    for name, items in splits.items():
        write_lines(os.path.join(args.data, "mr", f"{name}.jsonl"),
                    [json.dumps({"text": t, "label": y, **({"probs": soft_target(first_rating[t])}
                                                          if name == "train" else {})},
                                ensure_ascii=False) for t, y in items])
    seen = [set(t for t, _ in s) for s in splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])

    # LM corpus
    rng = random.Random(SEED)
    brown_dir, sotu_dir = os.path.join(raw, "brown"), os.path.join(raw, "sotu")
    brown_names, sotu_names = sorted(os.listdir(brown_dir)), sorted(os.listdir(sotu_dir))
    brown_valid, sotu_valid = hold_out(brown_names, rng), hold_out(sotu_names, rng)
    train, valid = [], []
    for n in brown_names:
        (valid if n in brown_valid else train).extend(brown_sentences(os.path.join(brown_dir, n)))
    for n in sotu_names:
        (valid if n in sotu_valid else train).extend(sotu_sentences(os.path.join(sotu_dir, n)))
    n_general = len(train)
    if not args.no_mr_in_lm:
        train += [t for t, _ in splits["train"]]
    os.makedirs(os.path.join(args.data, "lm"), exist_ok=True)
    write_lines(os.path.join(args.data, "lm", "train.txt"), train)
    write_lines(os.path.join(args.data, "lm", "valid.txt"), valid)

    # Auxiliary sentiment data
    senti = read_sentiment(os.path.join(raw, "vader"))
    mr_text = set(t for t, _ in rows)
    assert not any(t in mr_text for t, _ in senti), "an MR sentence in the auxiliary data"
    srng = random.Random(SEED)
    srng.shuffle(senti)
    n_sv = round(SENTIMENT_VALID_FRACTION * len(senti))
    os.makedirs(os.path.join(args.data, "sentiment"), exist_ok=True)
    for name, items in (("valid", senti[:n_sv]), ("train", senti[n_sv:])):
        write_lines(os.path.join(args.data, "sentiment", f"{name}.jsonl"),
                    [json.dumps({"text": t, "rating": r}, ensure_ascii=False) for t, r in items])

    summary = {
        "mr_rows_nonzero": n_rows, "mr_duplicates_removed": n_dup, "mr_conflicting_dropped": n_conflict,
        **{f"mr_{k}": len(v) for k, v in splits.items()},
        **{f"mr_{k}_positive": sum(y == "positive" for _, y in v) for k, v in splits.items()},
        "lm_train_sentences": len(train), "lm_train_sentences_brown_sotu": n_general,
        "lm_train_sentences_mr": len(train) - n_general, "lm_valid_sentences": len(valid),
        "lm_train_words": sum(len(s.split()) for s in train), "lm_valid_words": sum(len(s.split()) for s in valid),
        "lm_valid_documents": sorted(brown_valid | sotu_valid),
        "sentiment_train": len(senti) - n_sv, "sentiment_valid": n_sv, "seed": SEED,
    }
    say("wrote data/mr/{train,valid,test}.jsonl, data/lm/{train,valid}.txt and data/sentiment/{train,valid}.jsonl")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
