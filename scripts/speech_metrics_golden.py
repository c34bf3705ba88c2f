#!/usr/bin/env python3
"""Golden values for rnnkit's WER and CER (src/train/speech_metrics.rs): jiwer 4.0.0's wer() and
cer() with their default transforms, and process_words/process_characters' counts, on hand-made
corpora (substitutions, insertions, deletions, empty hypotheses, runs of spaces and tabs, Unicode
whitespace, accents) and on seeded random ones. Writes tests/golden/speech_metrics.json; scores
as the bits of their f64 value.
  .venv/bin/python scripts/speech_metrics_golden.py
"""
import json
import os
import random
import struct

import jiwer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAND = [
    (["a b c", "d e"], ["a x c", "d e f"]),
    (["press one for sales"], ["press won for sails please"]),
    (["the pound key", "seven"], ["", "seven"]),
    (["  leading and  trailing  "], ["leading\tand trailing"]),
    (["tab\tinside word", "a\u00a0b\u2003c"], ["tab inside word", "a b c"]),
    (["café crème", "naïve"], ["cafe creme", "naive"]),
    (["one two three four five six seven eight nine ten"], ["one two tree for five sex seven ate nine"]),
    (["x"], ["x y z"]),
    (["a\n\nb", "c \u3000 d"], ["a b", "c d"]),
]


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def case(refs, hyps):
    w, c = jiwer.process_words(refs, hyps), jiwer.process_characters(refs, hyps)
    return {"refs": refs, "hyps": hyps, "wer_bits": bits(jiwer.wer(refs, hyps)), "cer_bits": bits(jiwer.cer(refs, hyps)),
            "word_errors": w.substitutions + w.deletions + w.insertions, "words": w.hits + w.substitutions + w.deletions,
            "char_errors": c.substitutions + c.deletions + c.insertions, "chars": c.hits + c.substitutions + c.deletions}


def main():
    r = random.Random(0)
    vocab = "zero one two three four five press pound key star for sales a b c".split()
    cases = [case(*h) for h in HAND]
    for _ in range(40):
        n = r.randint(1, 8)
        refs = [" ".join(r.choice(vocab) for _ in range(r.randint(1, 9))) for _ in range(n)]
        hyps = []
        for ref in refs:
            ws = ref.split()
            for _ in range(r.randint(0, 4)):
                op = r.randint(0, 2)
                if op == 0 and ws:
                    ws[r.randrange(len(ws))] = r.choice(vocab)
                elif op == 1 and ws:
                    del ws[r.randrange(len(ws))]
                else:
                    ws.insert(r.randint(0, len(ws)), r.choice(vocab))
            hyps.append(("  " if r.random() < 0.2 else " ").join(ws))
        cases.append(case(refs, hyps))
    out = os.path.join(ROOT, "tests/golden/speech_metrics.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"jiwer": jiwer.__version__ if hasattr(jiwer, "__version__") else "4.0.0", "cases": cases}, f,
                  ensure_ascii=False, indent=0)
    print(f"speech metrics golden: {len(cases)} corpora -> {out}")


if __name__ == "__main__":
    main()
