#!/usr/bin/env python3
"""The language-model fine-tuning of `rnnkit finetune-lm` (ULMFiT's second stage) in plain
PyTorch: the reference for trajectory parity (same weights, data order, per-step seeds, AdamW
and schedule give the same per-step losses and final weights).

    python scripts/lm_finetune_reference.py --config lm_finetune.json [--out DIR]

The config has the field names of rnnkit's LmFinetuneConfig (model, train, valid, out, epochs,
max_steps, batch_size, lr, optimizer, schedule, clip_grad_norm, dropout, seed, shuffle, bucket).
Writes OUT/metrics.jsonl (one {"step", "epoch", "loss"} per step) and OUT/model.safetensors.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_models  # noqa: E402
from finetune_reference import epoch_batches, read_jsonl, schedule_factor, step_seed  # noqa: E402


def read_texts(path, tokenizer, max_length):
    """Token ids of every line (labels ignored), cut to max_length + 1, keeping sequences of 2
    or more tokens (as rnnkit)."""
    cut = (ids[:max_length + 1] for _, ids in read_jsonl(path, tokenizer))
    return [ids for ids in cut if len(ids) >= 2]


def lm_batch(data, idx, pad):
    seqs = [data[i] for i in idx]
    L = max(len(s) for s in seqs) - 1
    inp = torch.full((len(seqs), L), pad, dtype=torch.int64)
    tgt = torch.full((len(seqs), L), -100, dtype=torch.int64)
    for r, s in enumerate(seqs):
        t = torch.tensor(s, dtype=torch.int64)
        inp[r, :len(s) - 1] = t[:-1]
        tgt[r, :len(s) - 1] = t[1:]
    return inp, torch.tensor([len(s) - 1 for s in seqs]), tgt.reshape(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    if args.out:
        cfg["out"] = args.out
    model = rnnkit_models.load_dir(cfg["model"])
    mcfg = model.cfg
    if cfg.get("dropout") is not None:
        model.dropout.p = cfg["dropout"]
    tok_path = os.path.join(cfg["model"], mcfg.get("tokenizer", "tokenizer.json"))
    tok = Tokenizer.from_file(tok_path) if os.path.exists(tok_path) else None
    train = read_texts(cfg["train"], tok, mcfg["max_length"])
    pad = mcfg.get("padding_idx") or 0
    seed, bs = cfg.get("seed", 0), cfg.get("batch_size", 32)
    shuffle, bucket = cfg.get("shuffle", True), cfg.get("bucket", True)
    lengths = [len(s) for s in train]
    per_epoch = len(epoch_batches(lengths, bs, shuffle, bucket, seed, 0))
    epochs = cfg.get("epochs", 1)
    total = min(cfg.get("max_steps") or per_epoch * epochs, per_epoch * epochs)
    o = cfg.get("optimizer", {"name": "adamw"})
    assert o["name"] in ("adam", "adamw"), "the reference covers Adam and AdamW"
    cls = torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW
    wd = o.get("weight_decay", 0.0 if o["name"] == "adam" else 0.01)
    params = list(model.parameters())  # a tied decoder weight appears once, as in rnnkit
    lr = cfg.get("lr", 1e-3)
    opt = cls(params, lr=lr, betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)), eps=o.get("eps", 1e-8),
              weight_decay=wd)
    sched = cfg.get("schedule", {"name": "constant"})
    os.makedirs(cfg["out"], exist_ok=True)
    log = open(os.path.join(cfg["out"], "metrics.jsonl"), "w")
    step = 0
    for epoch in range(epochs):
        model.train()
        for idx in epoch_batches(lengths, bs, shuffle, bucket, seed, epoch):
            if step >= total:
                break
            torch.manual_seed(step_seed(seed, step))
            inp, lens, tgt = lm_batch(train, idx, pad)
            logits = model(inp, lens)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            if cfg.get("clip_grad_norm") is not None:
                torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg["clip_grad_norm"])
            for g in opt.param_groups:
                g["lr"] = lr * schedule_factor(sched, step, total)
            opt.step()
            step += 1
            log.write(json.dumps({"step": step, "epoch": epoch + 1, "loss": loss.item()}) + "\n")
    log.close()
    sd = rnnkit_models.renamed_state_dict(model)
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, os.path.join(cfg["out"], "model.safetensors"))
    print(json.dumps({"steps": step}))


if __name__ == "__main__":
    main()
