#!/usr/bin/env python3
"""Golden token ids for the default tokenizer, so a Rust test can check that the Rust `tokenizers` crate
encodes exactly as Python's `tokenizers` does with the same tokenizer.json.

Writes OUT (default tests/golden/tokenizer.json): a JSON list of {"text", "ids", "tokens"}, where
ids = Tokenizer.from_file(TOKENIZER).encode(text).ids (the file has no post-processor, so this equals
encode(text, add_special_tokens=False); both are checked here). Cases: 160 movie-review sentences (every
6th line of data/mr/test.jsonl, which scripts/fetch_data.py + prepare_data.py create; run here if
missing) followed by hand-written edge cases (unicode, accents, quotes, digits, control characters,
empty text, over-long words, CJK, emoji).

Usage: .venv/bin/python scripts/tokenizer_golden.py [--tokenizer weights/sentiment/tokenizer.json]
                                                   [--out tests/golden/tokenizer.json]
"""
import argparse
import json
import os
import subprocess
import sys

import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_MR = 160

EDGE_CASES = [
    "",
    " ",
    "   \t\n  ",
    "a",
    "A",
    "The Rock is destined to be the 21st Century's new ''Conan'' and that he's going to make a splash.",
    "``Quoted'' with Brown-style quotes, and \"straight\" ones, and 'single' ones.",
    "Jirí Hubac's script is a gem; Münch's insight; café, naïve, façade, Ångström, Søren, ŁÓDŹ.",
    "Roman Coppola – few filmmakers will — but heck… it’s “fine”, isn’t it?",
    "½ ¼ ² ³ ℃ № ™ © ® ﬁ ﬂ Ⅻ",  # compatibility characters (no NFKC in this normaliser)
    "e\u0301 vs \u00e9: combining accent vs precomposed",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "tab\there, newline\nthere, carriage\rreturn, nbsp\u00a0space, ideographic\u3000space",
    "control\u0000char\u0007bell\u001fus\u007fdel",
    "电影很好看 。 映画は素晴らしい 영화가 좋아요",
    "Ελληνικά κείμενα, кириллица ТЕКСТ, עברית, العربية",
    "emoji 😀👍🏽🎬 and ZWJ family 👨‍👩‍👧 and flags 🇺🇸",
    "numbers 1999, 3.14159, -42, 1,000,000, 10x, 2nd, 007",
    "urls http://example.com/a?b=c&d=e#f and emails someone@example.org",
    "!!!???...---***((()))[[[]]]{{{}}}<<<>>>",
    "ALL CAPS SHOUTING IS STILL LOWER-CASED",
    "hyphen-ated, under_score, slash/separated, back\\slash, semi;colon, colon:colon",
    "can't won't shouldn't y'all o'clock rock'n'roll",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 99 + " " + "y" * 100 + " " + "z" * 101,  # around max_input_chars_per_word
    "word " * 60,
    "   leading and trailing spaces   ",
    "unbelievably overwrought, underwhelming, and yet strangely compelling",
    "the the the the , , , . . .",
    "[PAD] [UNK] [pad] [unk] [CLS] [SEP]",
    "##s ## # #hashtag",
    "mixed\u00adsoft\u00adhyphen and dia\u0308resis",
    "𝔉𝔯𝔞𝔨𝔱𝔲𝔯 𝐛𝐨𝐥𝐝 ｆｕｌｌｗｉｄｔｈ",
    "Ǆ ǅ ǆ İstanbul ß ẞ ﬀ",
]


def mr_sentences():
    path = os.path.join(ROOT, "data", "mr", "test.jsonl")
    if not os.path.exists(path):
        for script in ("fetch_data.py", "prepare_data.py"):
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script)], check=True)
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts[::6][:N_MR]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "weights", "sentiment", "tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "tokenizer.json"))
    args = ap.parse_args()
    tok = Tokenizer.from_file(args.tokenizer)
    cases = []
    for text in mr_sentences() + EDGE_CASES:
        enc = tok.encode(text)
        assert enc.ids == tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": enc.ids, "tokens": enc.tokens})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_unk = sum(c["ids"].count(tok.token_to_id("[UNK]")) for c in cases)
    print(f"tokenizer_golden: wrote {len(cases)} cases ({n_unk} [UNK]s) to {args.out} "
          f"(tokenizers {tokenizers.__version__}, {args.tokenizer})")


if __name__ == "__main__":
    main()
