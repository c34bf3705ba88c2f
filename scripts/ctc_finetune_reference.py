#!/usr/bin/env python3
"""The ctc fine-tuning of `rnnkit finetune-ctc` in plain PyTorch: the reference for trajectory
parity (same weights, features, data order, per-step seeds, SpecAugment masks, frozen parameters,
layer groups, optimizer, schedule and clipping give the same per-step losses and final weights,
bit for bit), and the (d) row of the speech experiments.

    python scripts/ctc_finetune_reference.py --config finetune_ctc.json [--out DIR]

The config has the field names of rnnkit's CtcFinetuneConfig (model, train, valid, out, epochs,
max_steps, batch_size, lr, optimizer, schedule, clip_grad_norm, freeze, dropout, spec_augment, seed,
shuffle, bucket, gradual_unfreezing, discriminative_factor; from_scratch is rnnkit's alone). Layer
groups, bottom to top: subsampling, encoder.l0 ... encoder.l{K-1}, output. Data: JSONL {"wav",
"text"}, paths relative to the JSONL file's folder. Writes OUT/metrics.jsonl (one {"step", "epoch",
"loss"} per step, and {"epoch", "valid_loss", "valid_wer", "valid_cer"} after each epoch with a
valid set) and OUT as an rnnkit model directory.
"""
import argparse
import fnmatch
import json
import os
import sys

import jiwer
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_ctc as ctc  # noqa: E402
import rnnkit_models  # noqa: E402
from finetune_reference import epoch_batches, schedule_factor, step_seed  # noqa: E402


def read_utterances(path, fe, alphabet):
    base = os.path.dirname(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            d = json.loads(line)
            text = d["text"]
            if not text or any(ch not in alphabet for ch in text):
                raise SystemExit(f"{path} line {no}: empty text or a character outside the alphabet")
            x, rate = ctc.read_wav(os.path.join(base, d["wav"]))
            out.append((fe.audio_features(x, rate), [alphabet.index(ch) + 1 for ch in text], text))
    return out


def spec_augment(x, lengths, s, rng):
    m = x.shape[2]
    for n, length in enumerate(lengths):
        for _ in range(s["freq_masks"]):
            w = rng.next() % (min(s["freq_width"], m) + 1)
            f0 = rng.next() % (m - w + 1)
            x[n, :, f0:f0 + w] = 0.0
        for _ in range(s["time_masks"]):
            w = rng.next() % (min(s["time_width"], length) + 1)
            t0 = rng.next() % (length - w + 1)
            x[n, t0:t0 + w, :] = 0.0


def layer_groups(model):
    pre = model.cfg["prefixes"]
    K = model.cfg["encoder"]["num_layers"]
    names = [("subsampling", [])] + [(f"encoder.l{k}", []) for k in range(K)] + [("output", [])]
    for k, p in model.named_parameters():
        head, rest = k.split(".", 1)
        key = pre[head] + rest
        if key.startswith(pre["output"]):
            g = len(names) - 1
        elif key.startswith(pre["encoder"]):
            g = 1 + int(key.rsplit("_l", 1)[1].removesuffix("_reverse"))
        else:
            g = 0
        names[g][1].append((key, p))
    return names


def evaluate(model, utts, batch_size):
    model.eval()
    lengths = [u[0].shape[0] for u in utts]
    hyps, total = [""] * len(utts), 0.0
    with torch.no_grad():
        for idx in epoch_batches(lengths, batch_size, False, True, 0, 0):
            feats = [utts[i][0] for i in idx]
            batch, lens = ctc.batch_features(feats)
            logits, out_lens = model(batch, lens)
            total += float(ctc.ctc_loss(logits, out_lens, [utts[i][1] for i in idx])) * len(idx)
            lps = [lp[:n].tolist() for lp, n in zip(logits.log_softmax(-1).to(torch.float64), out_lens)]
            for i, t in zip(idx, ctc.transcribe(model, lps)):
                hyps[i] = t["text"]
    refs = [u[2] for u in utts]
    return total / len(utts), jiwer.wer(refs, hyps), jiwer.cer(refs, hyps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    if args.out:
        cfg["out"] = args.out
    assert not cfg.get("from_scratch"), "the reference fine-tunes a pretrained model"
    model = rnnkit_models.load_dir(cfg["model"])
    if cfg.get("dropout") is not None:
        model.dropout.p = cfg["dropout"]
        model.cfg["dropout"] = cfg["dropout"]
    fe = ctc.Frontend(model.cfg["features"])
    alphabet = model.cfg["alphabet"]
    train = read_utterances(cfg["train"], fe, alphabet)
    valid = read_utterances(cfg["valid"], fe, alphabet) if cfg.get("valid") else None
    seed, bs = cfg.get("seed", 0), cfg.get("batch_size", 16)
    shuffle, bucket = cfg.get("shuffle", True), cfg.get("bucket", True)
    lengths = [u[0].shape[0] for u in train]
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
    sa = cfg.get("spec_augment")
    os.makedirs(cfg["out"], exist_ok=True)
    log = open(os.path.join(cfg["out"], "metrics.jsonl"), "w")

    def validate(epoch):
        if valid:
            loss, wer, cer = evaluate(model, valid, bs)
            log.write(json.dumps({"epoch": epoch, "valid_loss": loss, "valid_wer": wer, "valid_cer": cer}) + "\n")

    validate(0)
    step = 0
    for epoch in range(epochs):
        if step >= total:
            break
        for g, (_, ps) in enumerate(groups):
            open_ = not cfg.get("gradual_unfreezing") or (G - 1 - g) <= epoch
            for k, p in ps:
                p.requires_grad_(open_ and k not in frozen)
        model.train()
        batches = epoch_batches(lengths, bs, shuffle, bucket, seed, epoch)
        for idx in batches:
            if step >= total:
                break
            torch.manual_seed(step_seed(seed, step))
            x, lens = ctc.batch_features([train[i][0] for i in idx])
            if sa:
                spec_augment(x, lens, sa, rnnkit_models.SplitMix64(step_seed(seed, step)))
            logits, out_lens = model(x, lens)
            loss = ctc.ctc_loss(logits, out_lens, [train[i][1] for i in idx])
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
        if step == per_epoch * (epoch + 1):
            validate(epoch + 1)
    log.close()
    model.eval()
    ctc.save_dir(cfg["out"], model)
    print(json.dumps({"steps": step, "frozen": len(frozen), "trained": len(all_params) - len(frozen)}))


if __name__ == "__main__":
    main()
