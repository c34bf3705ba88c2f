#!/usr/bin/env python3
"""Train the joint English/Spanish tokenizer of rnnkit's translation model (Hugging Face `tokenizers`, pinned
in scripts/requirements.txt) on the *train* splits that scripts/fetch_translation_data.py writes: the Bible
(data/translation/bible/train.jsonl) and the software messages (data/translation/gettext/train.jsonl), the
"src" (English) and "tgt" (Spanish) of every row, in file order. Valid and test text is never seen.

  normalizer     NFKC only: no lower-casing and no accent stripping, so that generated Spanish keeps its
                 case and accents (the decoder cannot restore what the normalizer removed). NFKC does fold
                 compatibility characters, so those do not round-trip: "nº" decodes as "no", "…" as "..."
                 (17 Spanish messages of gettext/train, nothing else in the data)
  pre-tokenizer  Metaspace: every space becomes "▁" and starts a new piece ("▁" is also put before the
                 first word), i.e. SentencePiece-style
  model          BPE, 8,000 entries (specials, the alphabet, then merges); a character never seen in
                 training becomes [UNK]. The alphabet holds every character of the training text plus
                 printable ASCII, printable Latin-1 (U+00A1-U+00FF) and ‘ ’ “ ” – — • € (those that NFKC
                 leaves unchanged), so ©, ª or « in a new message is not [UNK]
  special        [PAD] = 0 (the models' padding_idx), [BOS] = 1, [EOS] = 2, [UNK] = 3
  post-processor none: encode(text).ids is exactly the pieces; the model adds [BOS]/[EOS] itself
  decoder        Metaspace: "▁" back to a space, the leading one dropped, so decode(ids) is readable text
                 with the original spacing (exact for text NFKC leaves unchanged and without [UNK])

The file is byte-for-byte reproducible: the BPE trainer of tokenizers 0.23.3 is deterministic (its merge
ties are broken by pair order, not hash-map order: same sha256 with PYTHONHASHSEED and RAYON_NUM_THREADS
varied), and the input order is fixed. Unlike WordPiece (scripts/train_tokenizer.py), BPE's encoding
depends on the merge order, so ids are left as the trainer numbers them (specials first, as listed).

Usage: .venv/bin/python scripts/train_translation_tokenizer.py [--vocab-size 8000] [--data data]
                                                               [--out data/translation/tokenizer.json]
Prints the vocabulary size and the file's sha256. Check it with scripts/translation_data_check.py.
"""
import argparse
import hashlib
import json
import os
import time
import unicodedata

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
TRAIN_FILES = ["translation/bible/train.jsonl", "translation/gettext/train.jsonl"]
EXTRA_ALPHABET = ([chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0xA1, 0x100)]
                  + list("‘’“”–—•€"))


def build_tokenizer():
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return tok


def training_text(data):
    """src, tgt of every row of the train splits, in file order."""
    out = []
    for rel in TRAIN_FILES:
        with open(os.path.join(data, rel), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                out.extend((row["src"], row["tgt"]))
    return out


def train(text, vocab_size):
    tok = build_tokenizer()
    alphabet = [c for c in EXTRA_ALPHABET if unicodedata.normalize("NFKC", c) == c]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(text, trainer, length=len(text))
    for i, s in enumerate(SPECIAL):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data"))
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--out", default=None, help="default: DATA/translation/tokenizer.json")
    args = ap.parse_args()
    out = args.out or os.path.join(args.data, "translation", "tokenizer.json")
    t0 = time.time()
    text = training_text(args.data)
    tok = train(text, args.vocab_size)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tok.save(out)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"[train_translation_tokenizer] {len(text)} training sentences; wrote {out}: vocab "
          f"{tok.get_vocab_size()}, sha256 {digest} ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
