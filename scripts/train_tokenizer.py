#!/usr/bin/env python3
"""Train rnnkit's default tokenizer (Hugging Face `tokenizers`, pinned in scripts/requirements.txt) on the
language-model training text data/lm/train.txt (Brown + State of the Union + the MR *train* split; see
scripts/prepare_data.py), and save it as a single tokenizer.json that the Rust `tokenizers` crate reads
and encodes identically (tests/golden/tokenizer.json, from scripts/tokenizer_golden.py, checks that).

  normalizer     BertNormalizer (control characters removed, whitespace unified, accents stripped,
                 lower-cased), then `` and '' -> "  (the Brown/MR way of writing quotes)
  pre-tokenizer  BertPreTokenizer (split on whitespace, each punctuation character on its own),
                 then digits split one by one
  model          WordPiece, ~8000 entries, "##" marks a word-continuing piece, unknown words -> [UNK];
                 ids renumbered after training by frequency in the training text (ties by string), which
                 makes the file byte-for-byte reproducible (the trainer's own tie order is not)
  special        [PAD] = 0 (the models' padding_idx), [UNK] = 1
  post-processor none: encode(text).ids is exactly the token sequence (no [CLS]/[SEP]/BOS/EOS)
  decoder        WordPiece (joins "##" pieces), so generated ids decode to readable text

Usage: .venv/bin/python scripts/train_tokenizer.py [--vocab-size 8000] [--input data/lm/train.txt]
                                                   [--out data/tokenizer.json]
"""
import argparse
import hashlib
import os
from collections import Counter

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = ["[PAD]", "[UNK]"]


def build_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True),
        normalizers.Replace(Regex("``|''"), '"'),
    ])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train(inputs, vocab_size):
    tok = build_tokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
                                        continuing_subword_prefix="##", show_progress=False)
    tok.train(inputs, trainer)
    # The trainer breaks ties between equally frequent merges in hash-map order, so two runs give the same
    # set of pieces with some ids swapped. WordPiece encoding depends only on the set (greedy longest
    # match), so renumber canonically: specials first, then by frequency in the training text, then by string.
    counts = Counter()
    for path in inputs:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for enc in tok.encode_batch(lines, add_special_tokens=False):
            counts.update(enc.ids)
    id_to_tok = {i: t for t, i in tok.get_vocab().items()}
    rest = sorted((t for t in id_to_tok.values() if t not in SPECIAL),
                  key=lambda t: (-counts[tok.token_to_id(t)], t))
    vocab = {t: i for i, t in enumerate(SPECIAL + rest)}
    tok.model = models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                 max_input_chars_per_word=100)
    for i, s in enumerate(SPECIAL):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=[os.path.join(ROOT, "data", "lm", "train.txt")])
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "tokenizer.json"))
    args = ap.parse_args()
    tok = train(args.input, args.vocab_size)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tok.save(args.out)
    with open(args.out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"[train_tokenizer] wrote {args.out}: vocab {tok.get_vocab_size()}, sha256 {digest}")


if __name__ == "__main__":
    main()
