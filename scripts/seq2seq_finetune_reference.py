#!/usr/bin/env python3
"""The seq2seq fine-tuning of `rnnkit finetune-seq2seq` in plain PyTorch: the reference for
trajectory parity (same weights, data order, per-step seeds, frozen parameters, optimizer,
schedule and clipping give the same per-step losses and final weights, bit for bit).

    python scripts/seq2seq_finetune_reference.py --config finetune_seq2seq.json [--out DIR]

The config has the field names of rnnkit's Seq2SeqFinetuneConfig (model, train, valid, out,
epochs, max_steps, batch_size, lr, optimizer, schedule, clip_grad_norm, label_smoothing, freeze,
dropout, seed, shuffle, bucket, gradual_unfreezing, discriminative_factor). Layer groups, bottom to
top: embedding, encoder.l0 ... encoder.l{K-1}, decoder (tgt_embedding, bridge, decoder, attention),
output; a tensor under several keys (shared, tied) belongs to the highest group of its keys. Pairs are JSONL {"src", "tgt"} (tokenised with the model
directory's tokenizers) or {"src_ids", "tgt_ids"}; per pair x = src[:max_length] (an empty source
is an error),
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
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            d = json.loads(line)

            def ids(side):
                if side + "_ids" in d:
                    return list(d[side + "_ids"])
                return toks[side].encode(d[side], add_special_tokens=False).ids

            src = ids("src")[:m]
            if not src:
                raise SystemExit(f"{path} line {no}: the source is empty (no tokens)")
            pairs.append((src, ids("tgt")[:m - 1] + [s["eos_id"]]))
    return pairs


def layer_groups(model):
    """rnnkit's layer groups, bottom to top, each parameter once under its first key (as
    rnnkit names it through `prefixes`) in the highest group of its keys."""
    cfg = model.cfg
    pre = cfg["prefixes"]
    K = cfg["encoder"]["num_layers"]
    names = [("embedding", [])] + [(f"encoder.l{k}", []) for k in range(K)] + [("decoder", []), ("output", [])]
    top = len(names) - 1

    def group_of(key):
        if key.startswith(pre["output"]):
            return top
        if key.startswith(pre["embedding"]):
            return 0
        if key.startswith(pre["encoder"]):
            return 1 + int(key.rsplit("_l", 1)[1].removesuffix("_reverse"))
        return top - 1

    first, best = {}, {}
    for k, p in model.named_parameters(remove_duplicate=False):
        head, rest = k.split(".", 1)
        key = pre[head] + rest
        first.setdefault(id(p), (key, p))
        best[id(p)] = max(best.get(id(p), 0), group_of(key))
    for i, (key, p) in first.items():
        names[best[i]][1].append((key, p))
    return names


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
    groups = layer_groups(model)
    G = len(groups)
    frozen = [k for _, ps in groups for k, _ in ps if any(fnmatch.fnmatchcase(k, g) for g in cfg.get("freeze", []))]
    factor = cfg.get("discriminative_factor") or 1.0
    lr = cfg.get("lr", 1e-3)
    base_lrs = [lr / factor ** (G - 1 - g) for g in range(G)]
    pg = [{"params": [p for k, p in ps if k not in frozen], "lr": glr} for (_, ps), glr in zip(groups, base_lrs)]
    all_params = [p for _, ps in groups for _, p in ps]
    o = cfg.get("optimizer", {"name": "adam"})
    assert o["name"] in ("adam", "adamw"), "the reference covers Adam and AdamW"
    cls = torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW
    wd = o.get("weight_decay", 0.0 if o["name"] == "adam" else 0.01)
    opt = cls(pg, betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)), eps=o.get("eps", 1e-8), weight_decay=wd)
    sched = cfg.get("schedule", {"name": "constant"})
    smoothing = cfg.get("label_smoothing", 0.1)
    os.makedirs(cfg["out"], exist_ok=True)
    log = open(os.path.join(cfg["out"], "metrics.jsonl"), "w")
    step = 0
    for epoch in range(epochs):
        for g, (_, ps) in enumerate(groups):
            open_ = not cfg.get("gradual_unfreezing") or (G - 1 - g) <= epoch
            for k, p in ps:
                p.requires_grad_(open_ and k not in frozen)
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
                torch.nn.utils.clip_grad_norm_([p for p in all_params if p.grad is not None], cfg["clip_grad_norm"])
            f = schedule_factor(sched, step, total)
            for g, glr in zip(opt.param_groups, base_lrs):
                g["lr"] = glr * f
            opt.step()
            step += 1
            log.write(json.dumps({"step": step, "epoch": epoch + 1, "loss": loss.item()}) + "\n")
    log.close()
    sd = rnnkit_models.renamed_state_dict(model)
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, os.path.join(cfg["out"], "model.safetensors"))
    print(json.dumps({"steps": step, "frozen": len(frozen), "trained": len(all_params) - len(frozen)}))


if __name__ == "__main__":
    main()
