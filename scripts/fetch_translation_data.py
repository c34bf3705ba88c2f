#!/usr/bin/env python3
"""Fetch the parallel English->Spanish text of rnnkit's translation model, by pinned Debian package name and
version (`apt-get download NAME=VERSION`, never installed; `dpkg-deb -x` into data/cache/deb/<name>/), and
write fixed, checksummed splits to data/translation/ (git-ignored).

Pretraining: the verse-aligned Bible
  sword-text-kjv 14.3-1 (all)     SWORD zText module engKJV2006eb: King James Version, 1769 text.
                                  Public domain (the UK Crown patent binds printing in the UK only).
  sword-text-sparv 2.60-1 (all)   SWORD zText module spaRV1909eb: Reina-Valera 1909. Public domain.
  Both modules declare the KJV versification, so the same verse index is the same verse in both, except
  where RV1909 divides verses as the Hebrew Bible does (see "versification" below).
  -> data/translation/bible/{train,valid,test}.jsonl, one {"src": English, "tgt": Spanish, "ref": "Book C:V"}
  * per testament (ot, nt): .bzs = 12-byte records <u32 offset, u32 size, u32 uncompressed size> of the
    zlib blocks in .bzz; .bzv = 10-byte records <u32 block, u32 offset, u16 size>, one per verse index;
    verse = the decompressed block[offset:offset + size], UTF-8 OSIS markup. Index layout (SWORD's KJV
    versification, the table BOOKS below, from CrossWire's canon.h): 0 module heading, 1 testament
    heading, then per book one book-intro entry and per chapter one chapter-intro entry followed by its
    verses. Only real verses (chapter >= 1, verse >= 1) are read: the book intros hold the ~66 book titles
    ("The First Book of Moses, called Genesis"), the chapter intros only markup. The module files must
    have exactly this many records (checked), so the table and the modules cannot drift apart.
  * text: <note>...</note> dropped (KJV footnotes); a run of tags between two letters that closes or opens
    both a <w> and a <transChange> element is a word boundary (RV1909 butts the translators' additions
    against the words: "enviada</transChange><w>por" -> "enviada por"), any other tag run joins (KJV
    "afrai</w>d" -> "afraid", RV1909 "preguntándo<transChange>le" -> "preguntándole"); then every tag
    dropped, the USFM leftovers \\nd / \\+nd* and the KJV paragraph sign ¶ dropped, XML entities unescaped,
    whitespace collapsed and trimmed. Psalm superscriptions, the Psalm 119 letter headings and the epistles'
    subscriptions are part of the verse in both and are kept.
  * versification: in some chapters RV1909 numbers verses as the Hebrew Bible does, and the module squeezed
    them into KJV slots: where RV1909 has fewer verses the last KJV slots are empty and the text moves
    (Jonah 1:17 is RV1909's Jonah 2:1, so every verse of Jonah 2 sits one slot late); where it has more,
    the surplus is appended to the chapter's last verse. So a verse empty on either side is dropped (18,
    all RV1909, all at a chapter's end), and whole chapters are dropped: every chapter with such an empty
    verse and the chapter after it, and every chapter whose last verse's Spanish text is over OVERFLOW_RATIO
    times as long as the English (26 chapters, 671 verse pairs; the script names them). A check of 4-verse
    windows (length ratio as aligned vs shifted by one verse) finds no further shifted chapter; a few
    verse boundaries still differ locally (1 Chronicles 1:30-32, 2:34-35, 1 Kings 18:33-34).
  * split by whole books (neighbouring verses repeat phrases, so a random verse split would leak):
    test = TEST_BOOKS (~3% of the verses, both testaments), valid = VALID_BOOKS (~3%), train = the rest;
    rows in canonical order.

Fine-tuning: software messages, the Spanish gettext catalogues (usr/share/locale/es/LC_MESSAGES/*.mo) of the
pinned bookworm packages in GETTEXT_DEBS, read in that order (and by .mo file name within a package)
  -> data/translation/gettext/{train,valid,test,train_small}.jsonl, one {"src", "tgt", "package"}
  Licences: each catalogue is under its package's licence (debian/copyright): GPL-2 git, e2fsprogs;
  GPL-2+ dpkg, apt, util-linux; GPL-3+ coreutils, tar, grep, sed, findutils, diffutils, bash, gettext,
  wget, gawk, make, cpio, nano, gnupg.
  * the .mo is read by its documented binary layout (magic 0x950412de, N, offsets of the msgid and msgstr
    tables of <u32 length, u32 offset>), strings decoded by the header's charset
  * kept: singular entries (a msgid with a NUL is a plural entry: dropped); a msgctxt ("ctxt\\x04msgid") is
    dropped, the msgid kept; msgid and msgstr trimmed of surrounding whitespace (so "...\\n" messages count
    as single-line), then dropped if either still holds a control character (a line break, tab, escape);
    whitespace runs (no-break spaces too) collapsed to one space; gnupg's argument-name prefix
    ("|FILE|read options from FILE", also "|pinentry-label|") dropped from both sides; kept if the msgid
    has 4+ space-separated words and the msgstr is non-empty and differs from the msgid
  * accelerator marks: a mark is "&" or "_" at the start of a word (not after a letter, digit, "_" or "&")
    and before a letter. It is removed only when msgid and msgstr hold exactly one mark each and the
    msgid's marked word does not occur as a word in the msgstr: "_Cancel" / "_Cancelar" -> "Cancel" /
    "Cancelar", while identifiers (MERGE_HEAD, job_spec, _http._tcp, a copied "_foo") stay as they are.
    These command-line catalogues have few (gnupg's pinentry labels); mid-word GTK-style marks ("Mo_ve")
    do not occur in them and are not handled. Placeholders (%s, %d, %1$s, %<PRIu64>, '%s') are kept as is
  * exact duplicate msgids (after the above) keep the first, in package order
  * split: messages are grouped by a key (msgid lower-cased, printf conversions replaced by "%", other
    punctuation dropped) so that near-identical ones ("cannot open %s" / "cannot open '%s'") share a split;
    groups in order of sha256(key); the first groups up to >= 1,000 pairs are test, the next up to >= 500
    valid, the rest train; rows in package order within each split. train_small, the fine-tuning set of
    the translation experiments and the demo: the first train groups (same order) up to >= 3,000 pairs.

Every .deb is checked against the sha256 below, and every output file too; a mismatch is an error (exit 3).
A second run with the outputs in place only re-verifies them (seconds). An unreachable registry, or a
pinned version it no longer serves, exits 2: a Debian point release can replace a package version; the
exact .deb (file name below) stays on snapshot.debian.org, and placing it in data/cache/deb/ by hand works,
as its sha256 is what is checked.

Usage:  .venv/bin/python scripts/fetch_translation_data.py [--data DIR]
Prints the pair count per split.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fetch_data import sha256_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (package, version, architecture, file name `apt-get download` writes, sha256 of that .deb)
BIBLE_DEBS = [
    ("sword-text-kjv", "14.3-1", "all", "sword-text-kjv_14.3-1_all.deb",
     "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57"),
    ("sword-text-sparv", "2.60-1", "all", "sword-text-sparv_2.60-1_all.deb",
     "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf"),
]
# In this order: it decides which package keeps a message that several packages translate.
GETTEXT_DEBS = [
    ("git", "1:2.39.5-0+deb12u3", "amd64", "git_1%3a2.39.5-0+deb12u3_amd64.deb",
     "637a85ddd6247fab13bdd0592f2f39aff04ce4dbf0655d3ab553ac359a38ce6f"),
    ("coreutils", "9.1-1", "amd64", "coreutils_9.1-1_amd64.deb",
     "61038f857e346e8500adf53a2a0a20859f4d3a3b51570cc876b153a2d51a3091"),
    ("dpkg", "1.21.23", "amd64", "dpkg_1.21.23_amd64.deb",
     "f89e9f8d1a4a50ade44be3ed59a6ec55460fce205d2f8520c5c492137c5b609b"),
    ("tar", "1.34+dfsg-1.2+deb12u1", "amd64", "tar_1.34+dfsg-1.2+deb12u1_amd64.deb",
     "24fb92e98c2969171f81a8b589263d705f6b1670f95d121cd74c810d4605acc3"),
    ("grep", "3.8-5", "amd64", "grep_3.8-5_amd64.deb",
     "3264acea728df3c48a54f20e9291b965130e306b9d00adac76647049da7196df"),
    ("sed", "4.9-1+deb12u1", "amd64", "sed_4.9-1+deb12u1_amd64.deb",
     "fd557efeee8aae4619c2cb7f68aadccb804322ad4a99ab048aaae5901d253885"),
    ("findutils", "4.9.0-4", "amd64", "findutils_4.9.0-4_amd64.deb",
     "5dd86bd0af4aa73f067dfd6b8339dd868f2dd84056aa79db29d1206d4fbc5e04"),
    ("diffutils", "1:3.8-4", "amd64", "diffutils_1%3a3.8-4_amd64.deb",
     "8bdfedc14c1035e3750e9f055ac9c1ecd9b5d05d9e6dc6466c4e9237eef407dd"),
    ("bash", "5.2.15-2+b13", "amd64", "bash_5.2.15-2+b13_amd64.deb",
     "82130bb6a560cd2a7234d8018baf73f188f5dd56413d5aa0accc987b2197a6a1"),
    ("gettext", "0.21-12", "amd64", "gettext_0.21-12_amd64.deb",
     "8c1f9d43575373ce311f51d00a13afbb4888d63aa559a93a3472f5d77513b60c"),
    ("wget", "1.21.3-1+deb12u1", "amd64", "wget_1.21.3-1+deb12u1_amd64.deb",
     "b389052d1d8a8cacec4f0380d9ee54e8082bfbebe374299be95b5286c9380f80"),
    ("util-linux-locales", "2.38.1-5+deb12u3", "all", "util-linux-locales_2.38.1-5+deb12u3_all.deb",
     "2cb091d6fdc2f38d3ce414102877dcc7434e4d42f18b58e73708219c2b9ec18e"),
    ("gawk", "1:5.2.1-2", "amd64", "gawk_1%3a5.2.1-2_amd64.deb",
     "9cd63c1b35ff082092c221a23dcb167f72c4d1c3de3a42e11f16181f42ab3b55"),
    ("make", "4.3-4.1", "amd64", "make_4.3-4.1_amd64.deb",
     "a1a83af8cbd854af887b72ad196b1f4af58387815e21ced1000253a116a46e2a"),
    ("cpio", "2.13+dfsg-7.1", "amd64", "cpio_2.13+dfsg-7.1_amd64.deb",
     "73d4a22bdd7eb6be1e480d6884b103eb500cfd539cc20ae0f3e44dd8b0614798"),
    ("nano", "7.2-1+deb12u1", "amd64", "nano_7.2-1+deb12u1_amd64.deb",
     "45a9b3960aa5ac18552459225ec26800abb73fc2edd11626046daf6d968ac968"),
    ("apt", "2.6.1", "amd64", "apt_2.6.1_amd64.deb",
     "6ea03cbbc7a7bfcee601c9fb08d4e026fd522ede5350561f06867ad9c0a0fa6b"),
    ("e2fsprogs-l10n", "1.47.0-2", "all", "e2fsprogs-l10n_1.47.0-2_all.deb",
     "30830c185a0d02d444ad7b900ee5353d13f442dc5479847ce700ba34136a2df8"),
    ("gnupg-l10n", "2.2.40-1.1+deb12u2", "all", "gnupg-l10n_2.2.40-1.1+deb12u2_all.deb",
     "c985452d06cc7b3b1044cd1eb3f2acac773836d34cafb35b5a4bebae02c1caa0"),
]
MO_DIR = "usr/share/locale/es/LC_MESSAGES"
SWORD_DIR = "usr/share/sword/modules/texts/ztext"
KJV, RV = "sword-text-kjv/engKJV2006eb", "sword-text-sparv/spaRV1909eb"

# KJV versification as SWORD implements it (CrossWire's canon.h, "vm" table): book name as written in
# "ref", and the number of verses of each chapter. 39 + 27 books, 1,189 chapters, 31,102 verses.
BOOKS = [
    # Old Testament
    ("Genesis", "31 25 24 26 32 22 24 22 29 32 32 20 18 24 21 16 27 33 38 18 34 24 20 67 34 35 46 22 35 43 55 "
                "32 20 31 29 43 36 30 23 23 57 38 34 34 28 34 31 22 33 26"),
    ("Exodus", "22 25 22 31 23 30 25 32 35 29 10 51 22 31 27 36 16 27 25 26 36 31 33 18 40 37 21 43 46 38 18 "
               "35 23 35 35 38 29 31 43 38"),
    ("Leviticus", "17 16 17 35 19 30 38 36 24 20 47 8 59 57 33 34 16 30 37 27 24 33 44 23 55 46 34"),
    ("Numbers", "54 34 51 49 31 27 89 26 23 36 35 16 33 45 41 50 13 32 22 29 35 41 30 25 18 65 23 31 40 16 54 "
                "42 56 29 34 13"),
    ("Deuteronomy", "46 37 29 49 33 25 26 20 29 22 32 32 18 29 23 22 20 22 21 20 23 30 25 22 19 19 26 68 29 20 "
                    "30 52 29 12"),
    ("Joshua", "18 24 17 24 15 27 26 35 27 43 23 24 33 15 63 10 18 28 51 9 45 34 16 33"),
    ("Judges", "36 23 31 24 31 40 25 35 57 18 40 15 25 20 20 31 13 31 30 48 25"),
    ("Ruth", "22 23 18 22"),
    ("1 Samuel", "28 36 21 22 12 21 17 22 27 27 15 25 23 52 35 23 58 30 24 42 15 23 29 22 44 25 12 25 11 31 13"),
    ("2 Samuel", "27 32 39 12 25 23 29 18 13 19 27 31 39 33 37 23 29 33 43 26 22 51 39 25"),
    ("1 Kings", "53 46 28 34 18 38 51 66 28 29 43 33 34 31 34 34 24 46 21 43 29 53"),
    ("2 Kings", "18 25 27 44 27 33 20 29 37 36 21 21 25 29 38 20 41 37 37 21 26 20 37 20 30"),
    ("1 Chronicles", "54 55 24 43 26 81 40 40 44 14 47 40 14 17 29 43 27 17 19 8 30 19 32 31 31 32 34 21 30"),
    ("2 Chronicles", "17 18 17 22 14 42 22 18 31 19 23 16 22 15 19 14 19 34 11 37 20 12 21 27 28 23 9 27 36 27 "
                     "21 33 25 33 27 23"),
    ("Ezra", "11 70 13 24 17 22 28 36 15 44"),
    ("Nehemiah", "11 20 32 23 19 19 73 18 38 39 36 47 31"),
    ("Esther", "22 23 15 17 14 14 10 17 32 3"),
    ("Job", "22 13 26 21 27 30 21 22 35 22 20 25 28 22 35 22 16 21 29 29 34 30 17 25 6 14 23 28 25 31 40 22 33 "
            "37 16 33 24 41 30 24 34 17"),
    ("Psalms", "6 12 8 8 12 10 17 9 20 18 7 8 6 7 5 11 15 50 14 9 13 31 6 10 22 12 14 9 11 12 24 11 22 22 28 "
               "12 40 22 13 17 13 11 5 26 17 11 9 14 20 23 19 9 6 7 23 13 11 11 17 12 8 12 11 10 13 20 7 35 36 "
               "5 24 20 28 23 10 12 20 72 13 19 16 8 18 12 13 17 7 18 52 17 16 15 5 23 11 13 12 9 9 5 8 28 22 "
               "35 45 48 43 13 31 7 10 10 9 8 18 19 2 29 176 7 8 9 4 8 5 6 5 6 8 8 3 18 3 3 21 26 9 8 24 13 10 "
               "7 12 15 21 10 20 14 9 6"),
    ("Proverbs", "33 22 35 27 23 35 27 36 18 32 31 28 25 35 33 33 28 24 29 30 31 29 35 34 28 28 27 28 27 33 31"),
    ("Ecclesiastes", "18 26 22 16 20 12 29 17 18 20 10 14"),
    ("Song of Solomon", "17 17 11 16 16 13 13 14"),
    ("Isaiah", "31 22 26 6 30 13 25 22 21 34 16 6 22 32 9 14 14 7 25 6 17 25 18 23 12 21 13 29 24 33 9 20 24 "
               "17 10 22 38 22 8 31 29 25 28 28 25 13 15 22 26 11 23 15 12 17 13 12 21 14 21 22 11 12 19 12 25 "
               "24"),
    ("Jeremiah", "19 37 25 31 31 30 34 22 26 25 23 17 27 22 21 21 27 23 15 18 14 30 40 10 38 24 22 17 32 24 40 "
                 "44 26 22 19 32 21 28 18 16 18 22 13 30 5 28 7 47 39 46 64 34"),
    ("Lamentations", "22 22 66 22 22"),
    ("Ezekiel", "28 10 27 17 17 14 27 18 11 22 25 28 23 23 8 63 24 32 14 49 32 31 49 27 17 21 36 26 21 26 18 "
                "32 33 31 15 38 28 23 29 49 26 20 27 31 25 24 23 35"),
    ("Daniel", "21 49 30 37 31 28 28 27 27 21 45 13"),
    ("Hosea", "11 23 5 19 15 11 16 14 17 15 12 14 16 9"),
    ("Joel", "20 32 21"),
    ("Amos", "15 16 15 13 27 14 17 14 15"),
    ("Obadiah", "21"),
    ("Jonah", "17 10 10 11"),
    ("Micah", "16 13 12 13 15 16 20"),
    ("Nahum", "15 13 19"),
    ("Habakkuk", "17 20 19"),
    ("Zephaniah", "18 15 20"),
    ("Haggai", "15 23"),
    ("Zechariah", "21 13 10 14 11 15 14 23 17 12 17 14 9 21"),
    ("Malachi", "14 17 18 6"),
    # New Testament
    ("Matthew", "25 23 17 25 48 34 29 34 38 42 30 50 58 36 39 28 27 35 30 34 46 46 39 51 46 75 66 20"),
    ("Mark", "45 28 35 41 43 56 37 38 50 52 33 44 37 72 47 20"),
    ("Luke", "80 52 38 44 39 49 50 56 62 42 54 59 35 35 32 31 37 43 48 47 38 71 56 53"),
    ("John", "51 25 36 54 47 71 53 59 41 42 57 50 38 31 27 33 26 40 42 31 25"),
    ("Acts", "26 47 26 37 42 15 60 40 43 48 30 25 52 28 41 40 34 28 41 38 40 30 35 27 27 32 44 31"),
    ("Romans", "32 29 31 25 21 23 25 39 33 21 36 21 14 23 33 27"),
    ("1 Corinthians", "31 16 23 21 13 20 40 13 27 33 34 31 13 40 58 24"),
    ("2 Corinthians", "24 17 18 18 21 18 16 24 15 18 33 21 14"),
    ("Galatians", "24 21 29 31 26 18"),
    ("Ephesians", "23 22 21 32 33 24"),
    ("Philippians", "30 30 21 23"),
    ("Colossians", "29 23 25 18"),
    ("1 Thessalonians", "10 20 13 18 28"),
    ("2 Thessalonians", "12 17 18"),
    ("1 Timothy", "20 15 16 16 25 21"),
    ("2 Timothy", "18 26 17 22"),
    ("Titus", "16 15 15"),
    ("Philemon", "25"),
    ("Hebrews", "14 18 19 16 14 20 28 13 28 39 40 29 25"),
    ("James", "27 26 18 17 20"),
    ("1 Peter", "25 25 22 19 14"),
    ("2 Peter", "21 22 18"),
    ("1 John", "10 29 24 21 21"),
    ("2 John", "13"),
    ("3 John", "14"),
    ("Jude", "25"),
    ("Revelation", "20 29 22 11 14 17 17 13 21 11 19 17 18 20 8 21 18 24 21 15 27 21"),
]
N_OT_BOOKS = 39
# Whole books held out (each ~3% of the 31,102 verses, from both testaments and several genres).
TEST_BOOKS = ("Ruth", "Ecclesiastes", "Joel", "Jonah", "Nahum", "Habakkuk", "Haggai",
              "Ephesians", "Titus", "Philemon", "1 John", "Jude")
VALID_BOOKS = ("Esther", "Lamentations", "Obadiah", "Micah", "Zephaniah", "Malachi",
               "Philippians", "Colossians", "2 Thessalonians", "James", "2 John", "3 John")
# A chapter's last verse whose Spanish text is this many times longer than the English one holds the
# RV1909 verses beyond the KJV chapter's end (log length ratio > mean + 5 sd over all verses).
OVERFLOW_RATIO = 1.8
GETTEXT_TEST_MIN, GETTEXT_VALID_MIN, GETTEXT_SMALL_MIN = 1000, 500, 3000

# output file (under data/translation) -> (rows, sha256)
OUTPUTS = {
    "bible/train.jsonl": (28579, "fc1c9f00195811b2e278a351b114a2cb90e46eaeeeff65256efb5928cb69e4b0"),
    "bible/valid.jsonl": (936, "44d120cb06072268ee001902de37cfee64b1962f31a6bb2cf982a57b1cb00716"),
    "bible/test.jsonl": (898, "527fd60f7ed27bc80d4c537f14c7f1a2832e9aa7170f33dfa7fc35edfc32934d"),
    "gettext/train.jsonl": (13025, "7f0d663b6f8e3ed942c89d5fb6685795740003920b077cda3fe14e0a4c614d75"),
    "gettext/valid.jsonl": (500, "6aaef80c6a248ec99616540a85807efe16a3815ce1af240acbae1bdb062db072"),
    "gettext/test.jsonl": (1000, "13aeb01e2a4aef40b03cd8ab9d70c43ab6ba29cd76ae9a60522ac9ec1f495414"),
    "gettext/train_small.jsonl": (3000, "6153551dc52c47e5b41c6e5cbca78b8f0e682685ec5586999f1a4a34ecb32634"),
}


def say(msg):
    print(f"[fetch_translation_data] {msg}", flush=True)


def die(msg, code):
    say(f"error: {msg}")
    sys.exit(code)


def check(what, got, want):
    if got != want:
        die(f"sha256 mismatch for {what}:\n    expected {want}\n    got      {got}\n"
            "  The registry served different content than when this script was written. Delete the file and "
            "re-run; if it persists, the pinned package changed and the hashes need review.", 3)


def run(cmd, cwd, what):
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        die(f"{cmd[0]} not found; it is needed to {what} (Debian/Ubuntu: apt, dpkg)", 2)
    except subprocess.TimeoutExpired:
        die(f"timed out trying to {what}; is the Debian mirror reachable?", 2)
    return p


_REFRESHED = []


def refresh_package_lists():
    """Once per run, as root: `apt-get update` (a fresh machine may have no package lists, and then
    `apt-get download` knows no package). Returns whether it ran and succeeded."""
    if _REFRESHED or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    _REFRESHED.append(True)
    say("no such package in the local lists; running apt-get update once")
    p = run(["apt-get", "update"], ROOT, "refresh the package lists")
    return p.returncode == 0


def fetch_deb(cache, name, version, arch, filename, sha):
    """data/cache/deb/<filename>, downloaded unless present, checked; extracted to data/cache/deb/<name>/."""
    path = os.path.join(cache, filename)
    if not os.path.exists(path):
        spec = f"{name}:{arch}={version}" if arch != "all" else f"{name}={version}"
        say(f"downloading {spec}: apt-get download {spec}")
        p = run(["apt-get", "download", spec], cache, f"download {spec}")
        if (p.returncode != 0 or not os.path.exists(path)) and refresh_package_lists():
            p = run(["apt-get", "download", spec], cache, f"download {spec}")
        if p.returncode != 0 or not os.path.exists(path):
            sys.stderr.write(p.stdout[-2000:] + p.stderr[-2000:])
            die(f"could not download {spec} (exit {p.returncode}, output above). Is the Debian bookworm "
                "mirror reachable (apt-get update run)? If this version was superseded by a point release, "
                f"get {filename} from snapshot.debian.org and put it in {cache}/.", 2)
    check(path, sha256_file(path), sha)
    folder = os.path.join(cache, name)
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    p = run(["dpkg-deb", "-x", path, tmp], cache, f"extract {filename}")
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-2000:])
        die(f"dpkg-deb -x {filename} failed (exit {p.returncode})", 3)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


# ---------------------------------------------------------------------------------------------- Bible

def read_ztext(module_dir, testament):
    """All entries of one testament of a SWORD zText module, by index, as str ('' where empty)."""
    def load(ext):
        with open(os.path.join(module_dir, f"{testament}.{ext}"), "rb") as f:
            return f.read()
    bzs, bzv, bzz = load("bzs"), load("bzv"), load("bzz")
    if len(bzs) % 12 or len(bzv) % 10:
        die(f"{module_dir}/{testament}: .bzs/.bzv sizes are not whole records", 3)
    blocks = []
    for off, size, uncompressed in struct.iter_unpack("<III", bzs):
        data = zlib.decompress(bzz[off:off + size])
        if len(data) != uncompressed:
            die(f"{module_dir}/{testament}.bzz: block at {off} inflates to {len(data)}, not {uncompressed}", 3)
        blocks.append(data)
    return [blocks[b][off:off + size].decode("utf-8") if size else ""
            for b, off, size in struct.iter_unpack("<IIH", bzv)]


NOTE = re.compile(r"<note\b[^>]*>.*?</note>|<note\b[^>]*/>", re.S)
TAG_RUN_BETWEEN_LETTERS = re.compile(r"(?<=\w)(?:<[^>]*>)+(?=\w)")
TAG = re.compile(r"<[^>]*>")
USFM = re.compile(r"\\\+?[a-z]+\d*\*?")
ENTITY = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|lt|gt|amp|quot|apos);")
ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def tag_run(m):
    names = set(re.findall(r"</?(\w+)", m.group(0)))
    return " " if {"w", "transChange"} <= names else ""


def unescape(m):
    e = m.group(1)
    if e.startswith("#x"):
        return chr(int(e[2:], 16))
    if e.startswith("#"):
        return chr(int(e[1:]))
    return ENTITIES[e]


def osis_text(s):
    s = NOTE.sub("", s)
    s = TAG_RUN_BETWEEN_LETTERS.sub(tag_run, s)
    s = TAG.sub("", s)
    s = USFM.sub("", s).replace("\u00b6", "")
    s = ENTITY.sub(unescape, s)
    return " ".join(s.split())


def book_table():
    return [(name, [int(n) for n in counts.split()]) for name, counts in BOOKS]


def verses(module_dir):
    """(book, chapter, verse, text) for every verse of the KJV versification, from one module."""
    books = book_table()
    for testament, tbooks in (("ot", books[:N_OT_BOOKS]), ("nt", books[N_OT_BOOKS:])):
        entries = read_ztext(module_dir, testament)
        want = 2 + sum(1 + len(ch) + sum(ch) for _, ch in tbooks)
        if len(entries) != want:
            die(f"{module_dir}/{testament}.bzv has {len(entries)} entries; the KJV versification has {want}", 3)
        i = 2  # module and testament headings
        for name, chapters in tbooks:
            i += 1  # book intro (the book's title)
            for c, n in enumerate(chapters, 1):
                i += 1  # chapter intro
                for v in range(1, n + 1):
                    yield name, c, v, osis_text(entries[i])
                    i += 1


def versification_differs(chapters):
    """(book, chapter) whose RV1909 verses do not sit in their KJV slots (see the module docstring)."""
    drop = set()
    keys = list(chapters)
    for n, key in enumerate(keys):
        rows = chapters[key]
        if any(not es for _, _, es in rows):
            drop.add(key)
            if n + 1 < len(keys) and keys[n + 1][0] == key[0]:
                drop.add(keys[n + 1])
        _, en, es = rows[-1]
        if en and es and len(es) > OVERFLOW_RATIO * len(en):
            drop.add(key)
    return drop


def bible_splits(cache):
    kjv = os.path.join(cache, KJV.split("/")[0], SWORD_DIR, KJV.split("/")[1])
    rv = os.path.join(cache, RV.split("/")[0], SWORD_DIR, RV.split("/")[1])
    chapters = {}
    for (book, c, v, en), (book2, c2, v2, es) in zip(verses(kjv), verses(rv)):
        assert (book, c, v) == (book2, c2, v2)
        chapters.setdefault((book, c), []).append((v, en, es))
    drop = versification_differs(chapters)
    splits = {"train": [], "valid": [], "test": []}
    empty = dropped = 0
    for (book, c), rows in chapters.items():
        for v, en, es in rows:
            if not en or not es:
                empty += 1
            elif (book, c) in drop:
                dropped += 1
            else:
                split = "test" if book in TEST_BOOKS else "valid" if book in VALID_BOOKS else "train"
                splits[split].append({"src": en, "tgt": es, "ref": f"{book} {c}:{v}"})
    say(f"Bible: {sum(map(len, splits.values()))} verse pairs; dropped {empty} verses empty on one side and "
        f"{dropped} in the {len(drop)} chapters whose RV1909 verse division differs: "
        + ", ".join(f"{b} {c}" for b, c in sorted(drop, key=list(chapters).index)))
    return splits


# -------------------------------------------------------------------------------------------- gettext

def read_mo(path):
    """(msgid, msgstr) of a GNU .mo file in file order, as str (the header's charset; UTF-8 if none)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    end = "<" if magic == 0x950412de else ">" if magic == 0xde120495 else None
    if end is None:
        die(f"{path} is not a .mo file", 3)
    _rev, n, orig, trans = struct.unpack(end + "4I", data[4:20])

    def string(table, i):
        length, off = struct.unpack(end + "2I", data[table + 8 * i:table + 8 * i + 8])
        return data[off:off + length]
    raw = [(string(orig, i), string(trans, i)) for i in range(n)]
    charset = "utf-8"
    for mid, mstr in raw:
        if mid == b"":
            m = re.search(rb"charset=([-\w]+)", mstr)
            if m and m.group(1) != b"CHARSET":  # the template's placeholder
                charset = m.group(1).decode("ascii")
    return [(mid.decode(charset), mstr.decode(charset)) for mid, mstr in raw]


MARK = re.compile(r"(?<![\w&])[&_](?=[^\W\d_])")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ARG_PREFIX = re.compile(r"\|[^|]*\|\s*")  # gnupg: "|FILE|read options from FILE"


def strip_accelerators(src, tgt):
    ms, mt = list(MARK.finditer(src)), list(MARK.finditer(tgt))
    if len(ms) != 1 or len(mt) != 1:
        return src, tgt
    word = re.match(r"[&_]\w+", src[ms[0].start():]).group(0)
    if re.search(r"(?<![\w&])" + re.escape(word) + r"(?!\w)", tgt):
        return src, tgt  # an identifier copied untranslated (_http), not a mnemonic
    i, j = ms[0].start(), mt[0].start()
    return src[:i] + src[i + 1:], tgt[:j] + tgt[j + 1:]


def message_pair(msgid, msgstr):
    """The cleaned (src, tgt) of one catalogue entry, or None if it is not kept (rules in the docstring)."""
    if not msgid or "\x00" in msgid:
        return None
    if "\x04" in msgid:
        msgid = msgid.split("\x04", 1)[1]
    src, tgt = msgid.strip(), msgstr.strip()
    if CONTROL.search(src) or CONTROL.search(tgt):
        return None
    src, tgt = " ".join(src.split()), " ".join(tgt.split())
    if ARG_PREFIX.match(src) and ARG_PREFIX.match(tgt):
        src, tgt = ARG_PREFIX.sub("", src, 1), ARG_PREFIX.sub("", tgt, 1)
    src, tgt = strip_accelerators(src, tgt)
    if len(src.split()) < 4 or not tgt or tgt == src:
        return None
    return src, tgt


PRINTF = re.compile(r"%(\d+\$)?[-+ #0']*(\d+|\*)?(\.(\d+|\*))?(hh|h|ll|l|L|q|j|z|t)?[a-zA-Z%]|%<\w+>")


def group_key(src):
    key = PRINTF.sub("%", src.lower())
    key = re.sub(r"[^\w%]+", " ", key)
    return " ".join(key.split())


def gettext_splits(folders):
    rows, seen, per_package = [], set(), {}
    for name, folder in folders:
        mo_dir = os.path.join(folder, MO_DIR)
        files = sorted(f for f in os.listdir(mo_dir) if f.endswith(".mo")) if os.path.isdir(mo_dir) else []
        if not files:
            die(f"{name}: no Spanish catalogue in {MO_DIR}", 3)
        kept = 0
        for mo in files:
            for msgid, msgstr in read_mo(os.path.join(mo_dir, mo)):
                pair = message_pair(msgid, msgstr)
                if pair is None or pair[0] in seen:
                    continue
                seen.add(pair[0])
                rows.append({"src": pair[0], "tgt": pair[1], "package": name})
                kept += 1
        per_package[name] = kept
    say("gettext pairs per package: " + ", ".join(f"{k} {v}" for k, v in per_package.items()))
    groups = {}
    for i, r in enumerate(rows):
        groups.setdefault(group_key(r["src"]), []).append(i)
    order = sorted(groups, key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest())
    where, small = {}, set()
    n_test = n_valid = n_small = 0
    for k in order:
        if n_test < GETTEXT_TEST_MIN:
            split, n_test = "test", n_test + len(groups[k])
        elif n_valid < GETTEXT_VALID_MIN:
            split, n_valid = "valid", n_valid + len(groups[k])
        else:
            split = "train"
            if n_small < GETTEXT_SMALL_MIN:
                small.update(groups[k])
                n_small += len(groups[k])
        for i in groups[k]:
            where[i] = split
    splits = {"train": [], "valid": [], "test": [], "train_small": []}
    for i, r in enumerate(rows):
        splits[where[i]].append(r)
        if i in small:
            splits["train_small"].append(r)
    say(f"gettext: {len(rows)} pairs in {len(groups)} groups of near-identical messages")
    return splits


# ----------------------------------------------------------------------------------------------- main

def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def outputs_ok(out):
    return all(os.path.exists(os.path.join(out, rel)) and sha256_file(os.path.join(out, rel)) == sha
               for rel, (_, sha) in OUTPUTS.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data"))
    args = ap.parse_args()
    cache = os.path.join(args.data, "cache", "deb")
    out = os.path.join(args.data, "translation")
    os.makedirs(cache, exist_ok=True)

    if not outputs_ok(out):
        for deb in BIBLE_DEBS:
            fetch_deb(cache, *deb)
        folders = [(deb[0], fetch_deb(cache, *deb)) for deb in GETTEXT_DEBS]
        for corpus, splits in (("bible", bible_splits(cache)), ("gettext", gettext_splits(folders))):
            for split, rows in splits.items():
                write_jsonl(os.path.join(out, corpus, f"{split}.jsonl"), rows)
        bad = []
        for rel, (rows, sha) in OUTPUTS.items():
            path = os.path.join(out, rel)
            n, got = count_lines(path), sha256_file(path)
            if (n, got) != (rows, sha):
                bad.append(f"translation/{rel}: {n} pairs, sha256 {got}\n    expected {rows} pairs, sha256 {sha}")
        if bad:
            die("the written splits differ from the pinned ones:\n  " + "\n  ".join(bad) +
                "\n  Same packages (their sha256 matched), so the difference is in this script's rules.", 3)
    for rel, (rows, sha) in OUTPUTS.items():
        say(f"ok  translation/{rel}  {rows} pairs  sha256 {sha}")
    say("all translation data present and verified")


if __name__ == "__main__":
    main()
