#!/usr/bin/env python3
"""Check the translation tokenizer against the translation data (both from scripts/fetch_translation_data.py
and scripts/train_translation_tokenizer.py): for every split of the Bible and the software messages,

  round trip  decode(encode(x)) == x for 200 rows spread evenly over the split (row i * n // 200), English
              ("src") and Spanish ("tgt") counted separately; the first differences are shown
  [UNK]       share of all tokens of the whole split that are [UNK], and rows holding one
  length      mean tokens per sentence of src and tgt over the whole split, and the 99th percentile and
              maximum (for the model's maximum length)

Prints one line per split and side, then one JSON line with every number (for notes and scripts).
Exits 1 if the tokenizer's special tokens are not [PAD]=0 [BOS]=1 [EOS]=2 [UNK]=3 or it has a post-processor.

Usage: .venv/bin/python scripts/translation_data_check.py [--data data] [--tokenizer DATA/translation/tokenizer.json]
                                                          [--sample 200]
"""
import argparse
import json
import os
import sys

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]


def percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data"))
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--sample", type=int, default=200)
    args = ap.parse_args()
    tok = Tokenizer.from_file(args.tokenizer or os.path.join(args.data, "translation", "tokenizer.json"))
    for i, s in enumerate(SPECIAL):
        if tok.token_to_id(s) != i:
            print(f"[translation_data_check] error: {s} has id {tok.token_to_id(s)}, expected {i}")
            sys.exit(1)
    if tok.post_processor is not None:
        print("[translation_data_check] error: the tokenizer has a post-processor; encode must give the pieces only")
        sys.exit(1)
    unk = tok.token_to_id("[UNK]")
    print(f"[translation_data_check] tokenizer: vocab {tok.get_vocab_size()}")
    report = {"vocab": tok.get_vocab_size(), "splits": {}}
    for corpus in ("bible", "gettext"):
        for split in ("train", "valid", "test"):
            with open(os.path.join(args.data, "translation", corpus, f"{split}.jsonl"), encoding="utf-8") as f:
                rows = [json.loads(line) for line in f]
            n = len(rows)
            sample = sorted({i * n // args.sample for i in range(min(args.sample, n))})
            entry = {"rows": n}
            for side in ("src", "tgt"):
                texts = [r[side] for r in rows]
                enc = tok.encode_batch(texts, add_special_tokens=False)
                lengths = sorted(len(e.ids) for e in enc)
                tokens = sum(lengths)
                unks = sum(e.ids.count(unk) for e in enc)
                unk_rows = sum(unk in e.ids for e in enc)
                same, diffs = 0, []
                for i in sample:
                    back = tok.decode(enc[i].ids, skip_special_tokens=False)
                    if back == texts[i]:
                        same += 1
                    elif len(diffs) < 2:
                        diffs.append((texts[i], back))
                entry[side] = {"roundtrip_identical": same, "roundtrip_checked": len(sample),
                               "tokens": tokens, "unk": unks, "unk_rate": unks / tokens, "rows_with_unk": unk_rows,
                               "mean_tokens": round(tokens / n, 2), "p99_tokens": percentile(lengths, 0.99),
                               "max_tokens": lengths[-1]}
                e = entry[side]
                print(f"[translation_data_check] {corpus}/{split} {side}: {n} rows, round trip {same}/{len(sample)} "
                      f"identical, [UNK] {unks}/{tokens} tokens ({100 * e['unk_rate']:.4f}%, {unk_rows} rows), "
                      f"tokens/sentence mean {e['mean_tokens']:.1f} p99 {e['p99_tokens']} max {e['max_tokens']}")
                for a, b in diffs:
                    print(f"      {a!r}\n   -> {b!r}")
            report["splits"][f"{corpus}/{split}"] = entry
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
