#!/usr/bin/env python3
"""Golden corpus BLEU and chrF from sacrebleu 2.6.0, so tests/translation_metrics_parity.rs can check
that rnnkit::train::translation_metrics computes the same statistics and the same f64 bits.

BLEU is `sacrebleu.corpus_bleu(hyps, refs)` with its defaults (tokenize 13a, smooth_method exp,
lowercase off, no effective order): score = BP * exp(sum_n log p_n / 4), p_n = 100 * matches_n /
totals_n (exp smoothing 100 / (2^k * totals_n) for the k-th order with no match), BP = exp(1 - r/c)
when c < r. chrF is `sacrebleu.corpus_chrf(hyps, refs)` (char_order 6, word_order 0, beta 2,
whitespace removed, effective-order averaging). Its statistics, which sacrebleu's score object does not
carry, are the summed segment statistics of a CHRF() metric: [hyp, ref, match] per order 1..6.

Writes OUT (default tests/golden/translation_metrics.json):
  {"sacrebleu", "python",
   "corpora": [{"name", "hyps", "refs": [stream, ...],
                "error": null | "<exception>",   # sacrebleu raised (e.g. an empty corpus)
                "bleu": {"score", "precisions": [4], "bp", "ratio", "counts": [4], "totals": [4],
                         "sys_len", "ref_len"},
                "chrf": {"score", "stats": [18]}}],
   "tokenize_13a": [{"text", "tokens"}]}
Every float is {"value": float, "bits": u64 of its IEEE-754 f64 representation}.

Usage: .venv/bin/python scripts/translation_metrics_golden.py [--out tests/golden/translation_metrics.json]
"""
import argparse
import json
import os
import random
import struct
import sys

import sacrebleu
from sacrebleu.metrics import CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.utils import sum_of_lists

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SACREBLEU_VERSION = "2.6.0"


def f64(x):
    x = float(x)
    return {"value": x, "bits": struct.unpack("<Q", struct.pack("<d", x))[0]}


# ---------------------------------------------------------------------------------------------
# Corpora. Each is (name, hyps, [ref stream, ...]).

EN_GETTEXT_REFS = [
    "Could not open file %s: permission denied.",
    "Deleted %d messages from \"Inbox\".",
    "You have %d unread message(s); open them now?",
    "The user's settings couldn't be saved.",
    "Downloading %s (%d of %d)...",
    "Error: '%s' is not a valid e-mail address!",
    "Are you sure you want to quit? Unsaved changes will be lost.",
    "Total: 1,000.5 MB free of 2,048 MB.",
    "Press Ctrl+C to cancel, or Enter to continue.",
    "Visit https://example.com/help?topic=sync&lang=en for more information.",
]
EN_GETTEXT_HYPS = [
    "Could not open the file %s: permission denied.",
    "Deleted %d messages from 'Inbox'.",
    "You've %d unread messages; open them now?",
    "The user's settings could not be saved.",
    "Downloading %s (%d out of %d)…",
    "Error: \"%s\" is not a valid email address!",
    "Do you really want to quit? Unsaved changes will be lost.",
    "Total: 1,000.5 MB free of 2048 MB.",
    "Press Ctrl+C to cancel or Enter to continue.",
    "See https://example.com/help?topic=sync&lang=en for more info.",
]

ES_GETTEXT_REFS = [
    "No se pudo abrir el archivo %s: permiso denegado.",
    "Se eliminaron %d mensajes de «Bandeja de entrada».",
    "¿Está seguro de que desea salir? Se perderán los cambios no guardados.",
    "¡Atención! La contraseña es demasiado corta (mínimo %d caracteres).",
    "Descargando %s (%d de %d)…",
    "El año pasado se vendieron 1.000,5 toneladas de café.",
    "Configuración de la cuenta de «%s» guardada correctamente.",
    "Pulse «Aceptar» para continuar o «Cancelar» para volver atrás.",
    "Niño, pingüino, acción, cigüeña: ¡qué difícil es la ortografía!",
]
ES_GETTEXT_HYPS = [
    "No se ha podido abrir el fichero %s: permiso denegado.",
    "Se borraron %d mensajes de \"Bandeja de entrada\".",
    "¿Seguro que quiere salir? Los cambios no guardados se perderán.",
    "¡Atención! La contraseña es muy corta (mínimo %d caracteres).",
    "Descargando %s (%d de %d)...",
    "El año pasado se vendieron 1.000,5 toneladas de cafe.",
    "La configuración de la cuenta «%s» se guardó correctamente.",
    "Pulse «Aceptar» para seguir o «Cancelar» para volver.",
    "Nino, pinguino, accion, ciguena: ¡que dificil es la ortografia!",
]

NUMBERS_URLS_REFS_1 = [
    "The price rose from $1,000.50 to $1,250.75 (a 25% increase).",
    "Call +1-800-555-0199 or write to support@example.org.",
    "Version 2.6.0 was released on 2024-03-15.",
    "See http://www.example.com/a/b.html#section-3 and ftp://files.example.net/pub/.",
    "Temperatures ranged from -5.5 to 38.2 degrees; the mean was 17,3 in Europe.",
    "Items 1-10, 20-30 and 40.",
]
NUMBERS_URLS_REFS_2 = [
    "The price went up from $1,000.50 to $1,250.75, an increase of 25%.",
    "Phone +1-800-555-0199 or e-mail support@example.org.",
    "Version 2.6.0 came out on 2024-03-15.",
    "Look at http://www.example.com/a/b.html#section-3 and at ftp://files.example.net/pub/.",
    "Temperatures went from -5.5 up to 38.2 degrees, with a mean of 17,3 in Europe.",
    "Items 1 to 10, 20 to 30, and 40.",
]
NUMBERS_URLS_HYPS = [
    "Price increased from $1,000.50 to $1,250.75 (25 % increase).",
    "Call +1 800 555 0199, or write to support@example.org .",
    "Version 2.6.0 was published 2024-03-15.",
    "See http://www.example.com/a/b.html#section-3 and ftp://files.example.net/pub/",
    "Temperatures ranged from - 5.5 to 38.2 degrees; mean 17.3 in Europe.",
    "Items 1-10, 20-30, 40.",
]

UNICODE_REFS = [
    "東京は日本の首都です。",
    "我喜欢学习中文，也喜欢看电影。",
    "I ❤️ Rust 🦀 and Python 🐍!",
    "Ångström, naïve café, façade, Øresund, Łódź, İstanbul.",
    "tabs\tbetween\twords and  two  spaces",
    "Ελληνικά: Καλημέρα κόσμε! Русский: Привет, мир!",
    "e\u0301 combining vs \u00e9 precomposed",
    "non\u00a0breaking and ideographic\u3000space",
]
UNICODE_HYPS = [
    "東京は日本の首都である。",
    "我喜欢学中文，也喜欢看电影。",
    "I ❤️ Rust 🦀 and Python 🐍 !",
    "Angstrom, naive cafe, façade, Øresund, Łódź, Istanbul.",
    "tabs between\t\twords and two   spaces\t",
    "Ελληνικά: Καλημέρα κόσμε! Русский: Здравствуй, мир!",
    "\u00e9 combining vs e\u0301 precomposed",
    "non breaking and ideographic space\u3000",
]

EMPTY_LINES_REFS_1 = [
    "The file was saved.",
    "",
    "Connection lost; retrying in %d seconds.",
    "Done.",
    "Nothing to do.",
]
EMPTY_LINES_REFS_2 = [
    "File saved.",
    "An unknown error occurred.",
    "The connection was lost; retrying in %d seconds.",
    "",
    "There is nothing to do.",
]
EMPTY_LINES_HYPS = [
    "",
    "",
    "Connection lost, retry in %d seconds.",
    "   ",
    "Nothing to do.",
]

IDENTICAL = [
    "Welcome to the application, %s!",
    "Your changes have been saved.",
    "El archivo «%s» ya existe. ¿Desea reemplazarlo?",
    "1,000.5 km at 3.14 rad/s: it's fine.",
]

NO_OVERLAP_REFS = [
    "alpha beta gamma delta",
    "one two three four five",
]
NO_OVERLAP_HYPS = [
    "zzz yyy xxx www",
    "qqq ppp",
]

SINGLE_REFS = ["The quick brown fox jumps over the lazy dog."]
SINGLE_HYPS = ["A quick brown fox jumped over the lazy dog!"]

# Hypotheses shorter than 4 tokens (totals stop early) and matches only at low orders (exp smoothing).
SHORT_REFS = ["Yes.", "No", "OK, thanks", "Save as", "Open file now please", "Cancel"]
SHORT_HYPS = ["Yes", "No.", "OK thanks", "Save as", "Now open the file, please", "Abort"]

# 13a's entity decoding, <skipped>, "-\n" joining and newlines; trailing whitespace (BLEU rstrips).
MARKUP_REFS = [
    "&quot;Hello&quot; &amp; welcome &lt;user&gt;",
    "some <skipped> words were skipped",
    "a hyphen-\nated word across lines\nand a newline",
    "ends with tokenized period .",
    "x&amp;quot;y",
]
MARKUP_HYPS = [
    "\"Hello\" & welcome <user>",
    "some words were skipped",
    "a hyphenated word across lines and a newline   \t",
    "ends with tokenized period . \u3000",
    "x&quot;y\x1c",
]

# chrF: references shorter than 6 characters (no high-order n-grams), identical and tied references.
CHRF_EDGE_REFS_1 = ["abc", "hello world", "ab", "same same", "Straße", "x"]
CHRF_EDGE_REFS_2 = ["abcdefgh", "hello world", "abcdefg", "same same", "Strasse", "xy"]
CHRF_EDGE_REFS_3 = ["ab c", "hello  world!", "", "same  same", "STRASSE", ""]
CHRF_EDGE_HYPS = ["abcd", "hello world", "abcdefg", "same same", "Strasse", "x"]

ALL_EMPTY_HYPS = ["", "", ""]
ALL_EMPTY_REFS = ["Something here.", "More text, longer.", "Last one"]

EMPTY_EVERYTHING = [""]


def perturbed_corpus(seed=2024, n=200):
    """n reference sentences from English gettext-like templates, a second reference stream that
    rewords some of them, and hypotheses made by random edits (drop, swap, replace, duplicate,
    punctuation and case changes) of the first reference."""
    rng = random.Random(seed)
    subjects = ["The file", "Your message", "The server", "This account", "The backup", "A new version",
                "The printer", "Your password", "The download", "The update"]
    verbs = ["could not be", "was", "has been", "will be", "cannot be", "is being"]
    objects = ["saved", "deleted", "found", "opened", "sent to %s", "copied %d times", "restored",
               "verified", "uploaded to https://example.com/upload", "moved to \"%s\""]
    tails = [".", "!", "...", "; please try again.", " (error %d).", ", sorry.", " at 1,000.5 MB/s.",
             " – it's done.", "?", ""]
    vocab = ["file", "folder", "the", "a", "error", "%s", "%d", "now", "again", "please", "data", "user",
             "is", "not", "café", "naïve", "über", "ñandú", "数据", "🙂"]
    refs1, refs2, hyps = [], [], []
    for _ in range(n):
        sent = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(tails)}"
        refs1.append(sent)
        alt = sent
        if rng.random() < 0.5:
            alt = alt.replace("could not be", "couldn't be").replace("cannot be", "can't be")
        if rng.random() < 0.3:
            alt = alt.replace("The ", "the ", 1).replace("Your ", "The ", 1)
        if rng.random() < 0.2:
            alt = alt + " Thanks."
        refs2.append(alt)
        words = sent.split(" ")
        for _ in range(rng.randint(0, 4)):
            op = rng.random()
            if op < 0.2 and len(words) > 1:
                del words[rng.randrange(len(words))]
            elif op < 0.4 and len(words) > 1:
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            elif op < 0.6:
                words[rng.randrange(len(words))] = rng.choice(vocab)
            elif op < 0.7:
                i = rng.randrange(len(words))
                words.insert(i, words[i])
            elif op < 0.8:
                i = rng.randrange(len(words))
                words[i] = words[i].rstrip(".!?;,") + rng.choice([",", ".", "!", ""])
            elif op < 0.9:
                i = rng.randrange(len(words))
                words[i] = words[i].upper() if rng.random() < 0.5 else words[i].lower()
            else:
                words.append(rng.choice(vocab))
        hyp = rng.choice([" ", "  ", "\t"]).join(words) if rng.random() < 0.1 else " ".join(words)
        if rng.random() < 0.03:
            hyp = ""
        hyps.append(hyp)
    return hyps, [refs1, refs2]


def corpora():
    perturbed_hyps, perturbed_refs = perturbed_corpus()
    return [
        ("en_gettext", EN_GETTEXT_HYPS, [EN_GETTEXT_REFS]),
        ("es_gettext", ES_GETTEXT_HYPS, [ES_GETTEXT_REFS]),
        ("numbers_urls_2refs", NUMBERS_URLS_HYPS, [NUMBERS_URLS_REFS_1, NUMBERS_URLS_REFS_2]),
        ("unicode_cjk_emoji_whitespace", UNICODE_HYPS, [UNICODE_REFS]),
        ("empty_lines_2refs", EMPTY_LINES_HYPS, [EMPTY_LINES_REFS_1, EMPTY_LINES_REFS_2]),
        ("identical", IDENTICAL, [IDENTICAL]),
        ("no_overlap", NO_OVERLAP_HYPS, [NO_OVERLAP_REFS]),
        ("single_sentence", SINGLE_HYPS, [SINGLE_REFS]),
        ("short_lines", SHORT_HYPS, [SHORT_REFS]),
        ("markup_entities", MARKUP_HYPS, [MARKUP_REFS]),
        ("chrf_edge_3refs", CHRF_EDGE_HYPS, [CHRF_EDGE_REFS_1, CHRF_EDGE_REFS_2, CHRF_EDGE_REFS_3]),
        ("all_hyps_empty", ALL_EMPTY_HYPS, [ALL_EMPTY_REFS]),
        ("empty_hyp_and_ref", EMPTY_EVERYTHING, [EMPTY_EVERYTHING]),
        ("empty_corpus", [], [[]]),
        ("perturbed_200_2refs", perturbed_hyps, perturbed_refs),
    ]


# Strings for Tokenizer13a alone (no rstrip, which BLEU applies before it).
TOKENIZER_CASES = [
    "",
    " ",
    "\t\n",
    "Hello, world!",
    "e.g. i.e. etc. U.S.A.",
    "1,000.5 and 3.14, 2,5 .5 ,5 5. 5, a.b,c 9.- x.",
    "1-2 3 -4 a-b x- -y 1999-2000 2-",
    "$5.00 (approx.) 50% off! #1 @home ~tilde^ `tick`",
    "&quot;quoted&quot; &amp;amp; &lt;tag&gt; &apos; &#39; & alone",
    "a<skipped>b <skipped> c",
    "line-\nbreak\nnext-\n\nline",
    "[brackets] {braces} _under_ |pipe| \\back\\slash/ +plus= <angle>",
    "https://example.com/path/to?q=1&x=2#frag",
    "user.name@example.org, ftp://a.b/c.d",
    "It's John's \"book\" — ‘curly’ “quotes” «guillemets» ‹single›",
    "%s files, %d errors; %(name)s and %1$s, {0} {name}",
    "¿Qué tal? ¡Muy bien! Sí, señor.",
    "café naïve Ångström Øre Łódź",
    "中文，标点。日本語「かな」、한국어!",
    "emoji 😀👍🏽 👨‍👩‍👧 🇪🇸 ok.",
    "tabs\tand  multiple   spaces\t\t",
    "nbsp\u00a0here\u3000ideographic\u2003em\u202fnarrow",
    "\x1c\x1d\x1e\x1f unit separators\x85next\u2028line\u2029para",
    "zero\u200bwidth\ufeffbom\u00adsoft",
    "٣,٤ arabic-indic digits ٣.٤ and ３,０００.５ fullwidth",
    "x\r\ny\rz",
    "trailing dot .",
    "   leading and trailing   ",
    "...,,,...---",
    "a\u0301 combining",
    "".join(chr(c) for c in range(0x20, 0x7F)),
    "".join(chr(c) for c in range(1, 0x300)),
    "The user's settings couldn't be saved.",
    "Error: '%s' is not a valid e-mail address!",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "translation_metrics.json"))
    args = ap.parse_args()
    if sacrebleu.__version__ != SACREBLEU_VERSION:
        sys.exit(f"error: sacrebleu {sacrebleu.__version__} installed, {SACREBLEU_VERSION} pinned "
                 "(scripts/requirements.txt; run scripts/setup.sh)")

    out_corpora = []
    for name, hyps, refs in corpora():
        assert all(len(stream) == len(hyps) for stream in refs), name
        entry = {"name": name, "hyps": hyps, "refs": refs, "error": None, "bleu": None, "chrf": None}
        try:
            bleu = sacrebleu.corpus_bleu(hyps, refs)
            chrf = sacrebleu.corpus_chrf(hyps, refs)
        except Exception as e:  # sacrebleu raises on an empty corpus
            entry["error"] = f"{type(e).__name__}: {e}"
            out_corpora.append(entry)
            continue
        metric = CHRF()
        chrf_stats = sum_of_lists(metric._extract_corpus_statistics(hyps, refs))
        recomputed = metric._compute_score_from_stats(chrf_stats).score
        assert recomputed == chrf.score, (name, recomputed, chrf.score)
        entry["bleu"] = {
            "score": f64(bleu.score),
            "precisions": [f64(p) for p in bleu.precisions],
            "bp": f64(bleu.bp),
            "ratio": f64(bleu.ratio),
            "counts": [int(c) for c in bleu.counts],
            "totals": [int(t) for t in bleu.totals],
            "sys_len": int(bleu.sys_len),
            "ref_len": int(bleu.ref_len),
        }
        entry["chrf"] = {"score": f64(chrf.score), "stats": [int(s) for s in chrf_stats]}
        out_corpora.append(entry)

    tok = Tokenizer13a()
    tokenized = [{"text": t, "tokens": tok(t)} for t in TOKENIZER_CASES]

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"sacrebleu": sacrebleu.__version__, "python": sys.version.split()[0],
                   "corpora": out_corpora, "tokenize_13a": tokenized}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum(1 for c in out_corpora if c["error"])
    print(f"translation_metrics_golden: wrote {len(out_corpora)} corpora ({n_err} where sacrebleu raises), "
          f"{len(tokenized)} tokenizer cases to {args.out} (sacrebleu {sacrebleu.__version__})")


if __name__ == "__main__":
    main()
