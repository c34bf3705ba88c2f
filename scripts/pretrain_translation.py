#!/usr/bin/env python3
"""Pretrain rnnkit's embedded English->Spanish translation model in PyTorch on the verse-aligned
Bible (scripts/fetch_translation_data.py), for rnnkit to fine-tune in Rust on software messages.

The model is rnnkit's `seq2seq` family (scripts/rnnkit_seq2seq.py): shared source/target embedding
of the joint tokenizer (data/translation/tokenizer.json), a bidirectional LSTM encoder, a
one-layer LSTM decoder with Luong's general attention and input feeding, a linear bridge, and the
output projection tied to the embedding. Training: Adam, label-smoothed cross-entropy over the
non-padding target tokens, dropout, gradient-norm clipping, batches of similar source length
(rnnkit's own batching, finetune_reference.epoch_batches), until --minutes have passed; the
epoch with the lowest validation loss is kept. At the end greedy outputs of --bleu-sentences
validation sentences are scored with sacrebleu.

Writes OUT/{config.json, model.safetensors, tokenizer.json, pretrain_log.json, README.md}.

Usage: .venv/bin/python scripts/pretrain_translation.py [--out weights/translation] [--minutes 50]
       [--seed 0] [--threads 2] [--dim 256] [--max-steps N]

More than one process (PyTorch's distributed data parallel): start it with torchrun, e.g.
    .venv/bin/torchrun --nproc_per_node 2 scripts/pretrain_translation.py --out DIR ...
Each process (rank r of W) builds the same model from the same seed and trains on batches
r, r + W, r + 2W, ... of each epoch's batch list (cut to a multiple of W), so one optimizer step
sees W batches: W times the batch size, and W times fewer steps per epoch. DistributedDataParallel
averages the gradients over the ranks (gloo on the CPU; NCCL with --device cuda); every rank stops
at the same step (the time limit and --max-steps are agreed on by an all-reduce), and rank 0 alone
writes OUT. pretrain_log.json records the world size and each rank's sha256 of its final weights,
which must agree.
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_models  # noqa: E402
import rnnkit_seq2seq as s2s  # noqa: E402
from finetune_reference import epoch_batches  # noqa: E402
from seq2seq_finetune_reference import batch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(dim, vocab, max_length):
    return {
        "family": "seq2seq", "vocab_size": vocab, "embedding_dim": dim, "padding_idx": 0,
        "encoder": {"mode": "LSTM", "input_size": dim, "hidden_size": dim, "num_layers": 1,
                    "bidirectional": True},
        "dropout": 0.2, "tokenizer": "tokenizer.json", "max_length": max_length,
        "seq2seq": {"tgt_vocab_size": vocab, "tgt_embedding_dim": dim, "share_embeddings": True,
                    "tie_output": True,
                    "decoder": {"mode": "LSTM", "hidden_size": dim, "num_layers": 1},
                    "attention": "general", "input_feeding": True, "bridge": "linear",
                    "bos_id": 1, "eos_id": 2},
    }


def read(path, tok, max_length, eos):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            x = tok.encode(d["src"], add_special_tokens=False).ids[:max_length]
            y = tok.encode(d["tgt"], add_special_tokens=False).ids[:max_length - 1] + [eos]
            if x:
                pairs.append((x, y))
    return pairs


def valid_loss(model, pairs, bos, pad, device=torch.device("cpu"), bs=64):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in epoch_batches([len(x) for x, _ in pairs], bs, False, True, 0, 0):
            src, src_len, tin, tout = (t.to(device) for t in batch(pairs, idx, bos, pad))
            src_len = src_len.cpu()
            logits = model(src, src_len, tin)
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tout.reshape(-1),
                                                       ignore_index=pad, reduction="sum").item()
            count += int((tout != pad).sum())
    model.train()
    return total / count


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_readme(out, data):
    """OUT/README.md from OUT/pretrain_log.json: what the directory holds, sources, licences,
    checksums, the command and the training record."""
    with open(os.path.join(out, "pretrain_log.json")) as f:
        log = json.load(f)
    a = log["args"]
    files = {n: (os.path.getsize(os.path.join(out, n)), sha256(os.path.join(out, n)))
             for n in ("config.json", "model.safetensors", "tokenizer.json", "pretrain_log.json")}
    inputs = {n: sha256(os.path.join(data, n)) for n in
              ("bible/train.jsonl", "bible/valid.jsonl", "tokenizer.json") if os.path.exists(os.path.join(data, n))}
    epochs = "\n".join(f"| {e['epoch']} | {e['steps']} | {e['train_loss']:.3f} | {e['valid_loss']:.3f} | "
                        f"{math.exp(e['valid_loss']):.1f} | {e['minutes']:.1f} |" for e in log["epochs"])
    bleu = log.get("valid_bleu_greedy", {})
    cfg = log["config"]
    n_params = log.get("parameters", "")
    text = f"""# rnnkit's embedded English→Spanish translation model

An rnnkit model directory (family `seq2seq`, see `scripts/rnnkit_seq2seq.py`), pretrained in
PyTorch by `scripts/pretrain_translation.py` on the verse-aligned Bible, as the starting point for
`rnnkit finetune-seq2seq` (`scripts/demo.sh translation` fine-tunes it on software messages).

| file | what | bytes | sha256 |
|---|---|---|---|
""" + "\n".join(f"| `{n}` | {w} | {files[n][0]:,} | `{files[n][1]}` |" for n, w in (
        ("config.json", "the model (rnnkit config schema)"),
        ("model.safetensors", "the weights (f32); keys `embedding.weight` (also the target embedding and the output weight: tied, stored once), `encoder.*`, `bridge.*`, `decoder.*`, `attention.*`, `output.bias`"),
        ("tokenizer.json", "the joint English/Spanish tokenizer (SentencePiece-style BPE, 8,000 pieces, `[PAD]=0 [BOS]=1 [EOS]=2 [UNK]=3`)"),
        ("pretrain_log.json", "arguments, configuration, per-epoch losses, the validation BLEU, timing"))) + f"""

No `model.pth` (the directory would double; `rnnkit convert model.safetensors model.pth` writes one
that `torch.load(weights_only=True)` reads).""" + (f"\n\nNote: {log['note']}." if log.get("note") else "") + f"""

**Model.** Shared source/target embedding of {cfg['embedding_dim']}, a bidirectional LSTM encoder of
{cfg['encoder']['hidden_size']} per direction, a linear bridge, a one-layer LSTM decoder of
{cfg['seq2seq']['decoder']['hidden_size']} with Luong's general attention and input feeding, the output
projection tied to the embedding; dropout {cfg['dropout']} before it; sources and targets cut to
{cfg['max_length']} tokens. {n_params} parameters.

**Data** (`scripts/fetch_translation_data.py`; docs/FORMATS.md §11.1): the King James Version
(`sword-text-kjv` 14.3-1, public domain) and the Reina-Valera 1909 (`sword-text-sparv` 2.60-1,
public domain), aligned by verse, split by whole books: training {log.get('train_pairs', '')} pairs,
validation {log.get('valid_pairs', '')} (Esther, Lamentations, Obadiah, Micah, Zephaniah, Malachi,
Philippians, Colossians, 2 Thessalonians, James, 2 and 3 John); the test books were not used.
Input sha256: """ + ", ".join(f"`{n}` `{h}`" for n, h in inputs.items()) + f""".

**Training.** Adam (lr {a['lr']}), cross-entropy with label smoothing 0.1 over the non-padding target
tokens, gradient-norm clipping at 1.0, batches of {a['batch_size']} pairs of similar source length
(rnnkit's batching, seed {a['seed']}), {a['threads']} threads, for {a['minutes']} minutes; the epoch
with the lowest validation loss is kept ({log['best_valid_loss']:.3f}, perplexity
{math.exp(log['best_valid_loss']):.1f}). PyTorch {log['torch']}, {log['minutes']:.1f} minutes in all
on a 2-core VM shared with other work.

| epoch | steps | train loss (smoothed) | valid loss | valid perplexity | minutes |
|---|---|---|---|---|---|
{epochs}

Greedy decoding of the first {bleu.get('sentences', 0)} validation verses: BLEU {bleu.get('bleu', 0):.2f}
(sacrebleu, 13a).

**Command.**

    .venv/bin/python scripts/fetch_translation_data.py
    .venv/bin/python scripts/pretrain_translation.py --out weights/translation --minutes {a['minutes']:g} --seed {a['seed']} --threads {a['threads']} --dim {a['dim']}
    .venv/bin/python scripts/pretrain_translation.py --out weights/translation --readme-only   # this file
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "translation"))
    ap.add_argument("--out", default=os.path.join(ROOT, "weights", "translation"))
    ap.add_argument("--minutes", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--bleu-sentences", type=int, default=300)
    ap.add_argument("--readme-only", action="store_true", help="only write OUT/README.md from its log")
    ap.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (or --minutes)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank under torchrun)")
    args = ap.parse_args()
    if args.readme_only:
        write_readme(args.out, args.data)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = torch.device(args.device)
    if world > 1:
        import torch.distributed as dist
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    tok_path = os.path.join(args.data, "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    cfg = config(args.dim, tok.get_vocab_size(), args.max_length)
    model = s2s.Seq2Seq(cfg).to(device)
    # Under torchrun, DistributedDataParallel all-reduces the gradients in backward().
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    bos, eos, pad = 1, 2, 0
    train = read(os.path.join(args.data, "bible", "train.jsonl"), tok, args.max_length, eos)
    valid = read(os.path.join(args.data, "bible", "valid.jsonl"), tok, args.max_length, eos)
    n_params = sum(p.numel() for p in model.parameters())
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"pretrain_translation: {len(train)} train / {len(valid)} valid pairs, {n_params} parameters, "
        f"{args.threads} threads, {args.minutes} minutes, {world} process(es)", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    lengths = [len(x) for x, _ in train]
    start = time.time()
    log = {"config": cfg, "args": vars(args), "torch": torch.__version__, "epochs": [],
           "parameters": n_params, "train_pairs": len(train), "valid_pairs": len(valid), "world_size": world}

    def stop():
        """Time or steps up, agreed on by every rank."""
        done = time.time() >= deadline or (args.max_steps is not None and step >= args.max_steps)
        if world > 1:
            flag = torch.tensor([1.0 if done else 0.0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            done = bool(flag.item())
        return done

    best, best_sd, step, epoch = math.inf, None, 0, 0
    deadline = start + 60 * args.minutes
    model.train()
    while not stop():
        losses = []
        batches = epoch_batches(lengths, args.batch_size, True, True, args.seed, epoch)
        for idx in batches[:len(batches) // world * world][rank::world]:
            if stop():
                break
            src, src_len, tin, tout = (t.to(device) for t in batch(train, idx, bos, pad))
            loss = s2s.loss(model, net(src, src_len.cpu(), tin), tout, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % 100 == 0:
                say(f"  epoch {epoch + 1} step {step} loss {sum(losses[-100:]) / len(losses[-100:]):.3f} "
                      f"({(time.time() - start) / 60:.1f} min)", flush=True)
        epoch += 1
        vl = valid_loss(model, valid, bos, pad, device)
        log["epochs"].append({"epoch": epoch, "steps": step, "train_loss": sum(losses) / max(len(losses), 1),
                              "valid_loss": vl, "minutes": (time.time() - start) / 60})
        say(f"epoch {epoch}: valid loss {vl:.4f} (ppl {math.exp(vl):.1f})", flush=True)
        if vl < best:
            best = vl
            best_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_sd)
    model.eval()
    model.cpu()
    digest = hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for v in model.state_dict().values())).hexdigest()
    log["replica_sha256"] = [digest]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, digest)
        log["replica_sha256"] = gathered
        dist.destroy_process_group()
        if rank != 0:
            return
        if len(set(gathered)) != 1:
            raise SystemExit(f"the ranks ended with different weights: {gathered}")
    import sacrebleu
    sub = valid[:args.bleu_sentences]
    refs = [json.loads(line)["tgt"] for line in open(os.path.join(args.data, "bible", "valid.jsonl"), encoding="utf-8")]
    hyps = []
    for i in range(0, len(sub), 32):
        chunk = sub[i:i + 32]
        n = max(len(x) for x, _ in chunk)
        src = torch.zeros(len(chunk), n, dtype=torch.int64)
        for r, (x, _) in enumerate(chunk):
            src[r, :len(x)] = torch.tensor(x)
        src_len = torch.tensor([len(x) for x, _ in chunk])
        out, _ = s2s.greedy(model, src, src_len, s2s.max_lengths(src_len.tolist(), 2.0, 10.0, args.max_length))
        hyps += [tok.decode([t for t in o if t != eos]) for o in out]
    bleu = sacrebleu.corpus_bleu(hyps, [refs[:len(hyps)]]).score
    log["valid_bleu_greedy"] = {"sentences": len(hyps), "bleu": bleu, "examples": list(zip(hyps[:5], refs[:5]))}
    log["best_valid_loss"] = best
    log["minutes"] = (time.time() - start) / 60
    print(f"best valid loss {best:.4f}; greedy BLEU on {len(hyps)} valid sentences {bleu:.2f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    save_file(s2s.file_state_dict(model), os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copyfile(tok_path, os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "pretrain_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    write_readme(args.out, args.data)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        print(f"  {name}  sha256 {sha256(os.path.join(args.out, name))}")


if __name__ == "__main__":
    main()
