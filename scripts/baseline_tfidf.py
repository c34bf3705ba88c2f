#!/usr/bin/env python3
"""Non-neural baseline on the fixed MR splits (data/mr/*.jsonl from scripts/prepare_data.py):
TF-IDF over word 1-2 grams (lower-cased, sublinear tf, min_df 1) + L2-regularised logistic regression.

C is chosen on the valid split from a small grid; the model is refitted on train with that C and scored
on test once. The fit (liblinear) is deterministic for a given split, so one number is the result;
--seeds repeats it with different solver seeds anyway (they only affect liblinear's coordinate order)
and reports mean ± std, which shows that the number does not move.

Usage: .venv/bin/python scripts/baseline_tfidf.py [--data data/mr] [--seeds 0 1 2]
The last line printed is one JSON object with the result.
"""
import argparse
import json
import os
import statistics

import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def load(path):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r["text"] for r in rows], [1 if r["label"] == "positive" else 0 for r in rows]


def accuracy(clf, X, y):
    return float((clf.predict(X) == y).mean()) if hasattr(y, "mean") else \
        sum(int(p == t) for p, t in zip(clf.predict(X), y)) / len(y)


def run(train, valid, test, seed):
    vec = TfidfVectorizer(ngram_range=(1, 2), lowercase=True, sublinear_tf=True, min_df=1)
    Xtr = vec.fit_transform(train[0])
    Xva, Xte = vec.transform(valid[0]), vec.transform(test[0])
    scores = {}
    for C in GRID:
        clf = LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=seed).fit(Xtr, train[1])
        scores[C] = accuracy(clf, Xva, valid[1])
    best = max(GRID, key=lambda c: (scores[c], -c))
    clf = LogisticRegression(C=best, solver="liblinear", max_iter=1000, random_state=seed).fit(Xtr, train[1])
    return {"C": best, "valid_accuracy": scores[best], "test_accuracy": accuracy(clf, Xte, test[1]),
            "features": Xtr.shape[1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "mr"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    splits = {}
    for name in ("train", "valid", "test"):
        path = os.path.join(args.data, f"{name}.jsonl")
        if not os.path.exists(path):
            raise SystemExit(f"baseline_tfidf: {path} missing; run scripts/fetch_data.py and scripts/prepare_data.py")
        splits[name] = load(path)
    runs = []
    for seed in args.seeds:
        r = run(splits["train"], splits["valid"], splits["test"], seed)
        runs.append(r)
        print(f"seed {seed}: C={r['C']} valid {r['valid_accuracy']:.4f} test {r['test_accuracy']:.4f} "
              f"({r['features']} features)")
    accs = [r["test_accuracy"] for r in runs]
    mean = statistics.fmean(accs)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"TF-IDF (1-2 grams) + logistic regression, MR test ({len(splits['test'][0])} sentences): "
          f"accuracy {mean:.4f} ± {std:.4f} over seeds {args.seeds}")
    print(json.dumps({"model": "tfidf_1-2gram_logreg", "split": "test", "n_test": len(splits["test"][0]),
                      "n_train": len(splits["train"][0]), "seeds": args.seeds, "test_accuracy_mean": round(mean, 4),
                      "test_accuracy_std": round(std, 4), "test_accuracies": accs, "C": [r["C"] for r in runs],
                      "valid_accuracy": [r["valid_accuracy"] for r in runs], "sklearn": sklearn.__version__}))


if __name__ == "__main__":
    main()
