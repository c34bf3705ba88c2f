#!/usr/bin/env python3
"""The seq2seq fine-tuning of `rnnkit finetune-seq2seq` in plain PyTorch: the reference for
trajectory parity (same weights, data order, per-step seeds, frozen parameters, optimizer,
schedule and clipping give the same per-step losses and final weights, bit for bit).

    python scripts/seq2seq_finetune_reference.py --config finetune_seq2seq.json [--out DIR]

The config has the field names of rnnkit's Seq2SeqFinetuneConfig (model, train, valid, out,
epochs, max_steps, batch_size, lr, optimizer, schedule, clip_grad_norm, label_smoothing, freeze,
dropout, seed, shuffle, bucket). Pairs are JSONL {"src", "tgt"} (tokenised with the model
directory's tokenizers) or {"src_ids", "tgt_ids"}; per pair x = src[:max_length] (an empty source:
[padding_idx]),
y = tgt[:max_length - 1] + [eos], y_in = [bos] + y[:-1]. Writes OUT/metrics.jsonl (one
{"step", "epoch", "loss"} per step) and OUT/model.safetensors.
"""
import argparse
import fnmatch
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_models  # noqa: E402
import rnnkit_seq2seq as s2s  # noqa: E402
from finetune_reference import epoch_batches, schedule_factor, step_seed  # noqa: E402


def load_dir(path):
    """A seq2seq model directory as a Seq2Seq module (keys mapped back through `prefixes`; tied
    matrices may be stored once)."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    return s2s.load_file_state_dict(s2s.Seq2Seq(cfg), load_file(os.path.join(path, "model.safetensors")))


def read_pairs(path, model_dir, cfg):
    from tokenizers import Tokenizer
    s = cfg["seq2seq"]
    toks = {}
    for side, name in (("src", cfg.get("tokenizer", "tokenizer.json")),
                       ("tgt", s.get("tgt_tokenizer") or cfg.get("tokenizer", "tokenizer.json"))):
        p = os.path.join(model_dir, name)
        toks[side] = Tokenizer.from_file(p) if os.path.exists(p) else None
    m = cfg["max_length"]
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)

            def ids(side):
                if side + "_ids" in d:
                    return list(d[side + "_ids"])
                return toks[side].encode(d[side], add_special_tokens=False).ids

            pairs.append((ids("src")[:m] or [cfg.get("padding_idx") or 0], ids("tgt")[:m - 1] + [s["eos_id"]]))
    return pairs


def batch(pairs, idx, bos, pad):
    rows = [pairs[i] for i in idx]
    S, T = max(len(x) for x, _ in rows), max(len(y) for _, y in rows)
    src = torch.full((len(rows), S), pad, dtype=torch.int64)
    tin = torch.full((len(rows), T), pad, dtype=torch.int64)
    tout = torch.full((len(rows), T), pad, dtype=torch.int64)
    for r, (x, y) in enumerate(rows):
        src[r, :len(x)] = torch.tensor(x)
        tin[r, :len(y)] = torch.tensor([bos] + y[:-1])
        tout[r, :len(y)] = torch.tensor(y)
    return src, torch.tensor([len(x) for x, _ in rows]), tin, tout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    if args.out:
        cfg["out"] = args.out
    model = load_dir(cfg["model"])
    mcfg = model.cfg
    if cfg.get("dropout") is not None:
        model.dropout.p = cfg["dropout"]
    train = read_pairs(cfg["train"], cfg["model"], mcfg)
    bos, pad = mcfg["seq2seq"]["bos_id"], mcfg.get("padding_idx") or 0
    seed, bs = cfg.get("seed", 0), cfg.get("batch_size", 32)
    shuffle, bucket = cfg.get("shuffle", True), cfg.get("bucket", True)
    lengths = [len(x) for x, _ in train]
    per_epoch = len(epoch_batches(lengths, bs, shuffle, bucket, seed, 0))
    epochs = cfg.get("epochs", 1)
    total = min(cfg.get("max_steps") or per_epoch * epochs, per_epoch * epochs)
    # Parameters once each, under their first state_dict key, as rnnkit names them.
    pre = mcfg["prefixes"]
    named = []
    for k, p in model.named_parameters():
        head, rest = k.split(".", 1)
        named.append((pre[head] + rest, p))
    frozen = [p for k, p in named if any(fnmatch.fnmatchcase(k, g) for g in cfg.get("freeze", []))]
    for p in frozen:
        p.requires_grad_(False)
    params = [p for _, p in named if p.requires_grad]
    o = cfg.get("optimizer", {"name": "adam"})
    assert o["name"] in ("adam", "adamw"), "the reference covers Adam and AdamW"
    cls = torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW
    wd = o.get("weight_decay", 0.0 if o["name"] == "adam" else 0.01)
    lr = cfg.get("lr", 1e-3)
    opt = cls(params, lr=lr, betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)), eps=o.get("eps", 1e-8),
              weight_decay=wd)
    sched = cfg.get("schedule", {"name": "constant"})
    smoothing = cfg.get("label_smoothing", 0.1)
    os.makedirs(cfg["out"], exist_ok=True)
    log = open(os.path.join(cfg["out"], "metrics.jsonl"), "w")
    step = 0
    for epoch in range(epochs):
        model.train()
        for idx in epoch_batches(lengths, bs, shuffle, bucket, seed, epoch):
            if step >= total:
                break
            torch.manual_seed(step_seed(seed, step))
            src, src_len, tin, tout = batch(train, idx, bos, pad)
            loss = s2s.loss(model, model(src, src_len, tin), tout, label_smoothing=smoothing)
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
    print(json.dumps({"steps": step, "frozen": len(frozen), "trained": len(params)}))


if __name__ == "__main__":
    main()
