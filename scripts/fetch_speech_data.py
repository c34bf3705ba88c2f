#!/usr/bin/env python3
"""Human speech for the ctc family: Debian's asterisk-core-sounds-en-wav (the recordings: one
professional speaker, 8 kHz 16-bit mono) and asterisk-core-sounds-en (core-sounds-en.txt.gz,
lines `id: transcript`), pinned by version and sha256, fetched with `apt-get download` (never
installed) and extracted with `dpkg-deb -x`. CC BY-SA 3.0 (see the packages' copyright files).

Writes data/speech/asterisk/:
  all.jsonl     every utterance with speech: {"id", "wav" (relative to data/speech/asterisk/, as
                rnnkit reads it), "text" (normalised), "raw", "seconds",
                "numbers": true for the digits-and-numbers subset}
  adapt.jsonl   the adaptation half, test.jsonl the test half: a fixed split by utterance, the
                parity of the first byte of sha256(id) (checked: ADAPT/TEST counts and digests)
Normalisation (what the model is asked to write): lower case; numbers spelled out in words
(`number_words`); "A.M." -> "a m"; "-" and "/" -> space; every character outside a-z, ' and
space dropped; spaces collapsed. Utterances whose transcript is a bracketed description
("[ascending tones]") or empty after normalisation, and the silence/ files, are left out.
Run by scripts/demo.sh speech and scripts/speech_experiments.py.
"""
import gzip
import hashlib
import json
import os
import re
import sys
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_translation_data import ROOT, die, fetch_deb, say  # noqa: E402

DEBS = [
    ("asterisk-core-sounds-en-wav", "1.6.1-1", "all", "asterisk-core-sounds-en-wav_1.6.1-1_all.deb",
     "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d"),
    ("asterisk-core-sounds-en", "1.6.1-1", "all", "asterisk-core-sounds-en_1.6.1-1_all.deb",
     "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50"),
]
OUT = os.path.join(ROOT, "data", "speech", "asterisk")
SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
       "sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = set(ONES + TENS[2:] + ["hundred", "thousand", "million", "point", "oh"])


def number_words(n):
    """0 <= n < 10**9 in words: 1234 -> 'one thousand two hundred thirty four'."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    for size, name in ((10 ** 6, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + " " + name + ("" if n % size == 0 else " " + number_words(n % size))
    raise ValueError(n)


def spell_numbers(text):
    def one(m):
        whole, _, frac = m.group(0).partition(".")
        out = number_words(int(whole))
        if frac:
            out += " point " + " ".join(ONES[int(d)] for d in frac)
        return f" {out} "
    return re.sub(r"\d+(?:\.\d+)?", one, text)


def normalise(raw):
    t = raw.lower().replace("a.m.", "a m").replace("p.m.", "p m")
    t = spell_numbers(t)
    t = re.sub(r"[-/]", " ", t)
    t = re.sub(r"[^a-z' ]", "", t)
    return re.sub(r" +", " ", t).strip()


def is_numbers(text):
    return bool(text) and all(w in NUMBER_WORDS for w in text.split())


def side(uid):
    return "adapt" if hashlib.sha256(uid.encode()).digest()[0] % 2 == 0 else "test"


# Checked after every run: the split must not drift.
EXPECTED = {"adapt": 269, "test": 275,
            "test_sha256": "af7421a60fcfd83e362ca054350f29e6b4a331e5d3c3e69679f7495d307a6ff4"}


def main():
    cache = os.path.join(ROOT, "data", "cache", "deb")
    os.makedirs(cache, exist_ok=True)
    folders = {d[0]: fetch_deb(cache, *d) for d in DEBS}
    with gzip.open(os.path.join(folders["asterisk-core-sounds-en"], TRANSCRIPTS), "rt", encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith(";")]
    sounds = os.path.join(folders["asterisk-core-sounds-en-wav"], SOUNDS)
    rows = []
    for ln in lines:
        uid, _, raw = ln.partition(": ")
        path = os.path.join(sounds, uid + ".wav")
        if "[" in raw or uid.startswith("silence/") or not os.path.exists(path):
            continue
        text = normalise(raw)
        if not text:
            continue
        with wave.open(path) as w:
            seconds = w.getnframes() / w.getframerate()
        rows.append({"id": uid, "wav": os.path.relpath(path, OUT), "text": text, "raw": raw,
                     "seconds": round(seconds, 3), "numbers": is_numbers(text)})
    rows.sort(key=lambda r: r["id"])
    out = OUT
    os.makedirs(out, exist_ok=True)
    for name, part in (("all", rows), ("adapt", [r for r in rows if side(r["id"]) == "adapt"]),
                       ("test", [r for r in rows if side(r["id"]) == "test"])):
        tmp = os.path.join(out, name + ".jsonl.tmp")
        with open(tmp, "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, os.path.join(out, name + ".jsonl"))
        mins = sum(r["seconds"] for r in part) / 60
        nums = sum(r["numbers"] for r in part)
        say(f"{name}: {len(part)} utterances, {mins:.1f} min, {nums} digits-and-numbers")
    digest = hashlib.sha256("\n".join(r["id"] for r in rows if side(r["id"]) == "test").encode()).hexdigest()
    got = {"adapt": sum(side(r["id"]) == "adapt" for r in rows), "test": sum(side(r["id"]) == "test" for r in rows),
           "test_sha256": digest}
    if got != EXPECTED:
        die(f"the split drifted: {got}, expected {EXPECTED}", 3)
    say(f"split as pinned: test ids sha256 {digest}")


if __name__ == "__main__":
    main()
