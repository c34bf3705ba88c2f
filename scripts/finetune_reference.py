#!/usr/bin/env python3
"""The fine-tuning that `rnnkit finetune` does, in plain PyTorch: the reference for trajectory
parity (same initial weights, data order, per-step seeds, optimizer and schedule give the same
per-step losses and final weights) and for the experiment table.

    python scripts/finetune_reference.py --config finetune.json [--out DIR] [--max-steps N]

The config has the field names of rnnkit's FinetuneConfig (model, train, valid, out, labels,
new_head, pooling, dropout, epochs, max_steps, batch_size, lr, optimizer, schedule, freeze,
gradual_unfreezing, discriminative_factor, clip_grad_norm, clip_grad_value, class_weights,
label_smoothing, seed, shuffle, bucket). Training rows with "probs" are soft targets, as in
rnnkit. Writes OUT/metrics.jsonl (one {"step", "loss"} per step, then one line per epoch with
validation metrics) and OUT/model.safetensors.
"""
import argparse
import fnmatch
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_models  # noqa: E402
from rnnkit_models import SplitMix64  # noqa: E402


def epoch_batches(lengths, batch_size, shuffle, bucket, seed, epoch):
    order = list(range(len(lengths)))
    rng = SplitMix64(seed + epoch)
    if shuffle:
        rng.shuffle(order)
    if bucket:
        chunk = batch_size * 50
        for s in range(0, len(order), chunk):
            order[s:s + chunk] = sorted(order[s:s + chunk], key=lambda i: -lengths[i])
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if shuffle and bucket:
        rng.shuffle(batches)
    return batches


def schedule_factor(s, t, total):
    name = s.get("name", "constant")
    total = max(total, 1)
    if name == "constant":
        return 1.0
    if name == "linear_warmup":
        w = s["warmup_steps"]
        return (t + 1) / w if t < w else max(0.0, (total - t) / max(total - w, 1))
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t / total))
    if name == "slanted_triangular":
        cut_frac, ratio = s.get("cut_frac", 0.1), s.get("ratio", 32.0)
        cut = max(math.floor(total * cut_frac), 1)
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        return (1 + max(p, 0.0) * (ratio - 1)) / ratio
    if name == "one_cycle":
        pct, div, fdiv = s.get("pct_start", 0.3), s.get("div_factor", 25.0), s.get("final_div_factor", 1e4)
        up = max(pct * total, 1)
        cos = lambda a, b, x: b + (a - b) / 2 * (1 + math.cos(math.pi * x))  # noqa: E731
        if t < up:
            return cos(1 / div, 1.0, t / up)
        return cos(1.0, 1 / (div * fdiv), min((t - up) / max(total - up, 1), 1.0))
    raise ValueError(f"unknown schedule {name}")


def step_seed(seed, step):
    """The RNG seed for training step `step` (rnnkit's finetune::step_seed)."""
    return seed * 1000003 + step


def read_jsonl(path, tokenizer):
    """(record, token ids) for every non-blank line: JSONL "ids", or "text" tokenised (as rnnkit)."""
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            yield d, (d["ids"] if "ids" in d else tokenizer.encode(d["text"], add_special_tokens=False).ids)


def read_data(path, labels, tokenizer, max_length):
    out = []
    for d, ids in read_jsonl(path, tokenizer):
        lab = d["label"]
        y = labels.index(lab) if isinstance(lab, str) else int(lab)
        out.append((ids[:max_length] or [0], y, d.get("probs")))
    return out


def soft_targets(data, idx, num_classes):
    """(N, C) class probabilities when any of data[idx] has "probs" (the others one-hot), else None:
    CrossEntropyLoss then takes probabilities as targets, as rnnkit's data::make_batch does."""
    if all(data[i][2] is None for i in idx):
        return None
    rows = [data[i][2] or [float(c == data[i][1]) for c in range(num_classes)] for i in idx]
    return torch.tensor(rows, dtype=torch.float32)


def prepare_model(cfg):
    pre = rnnkit_models.load_dir(cfg["model"])
    pcfg = pre.cfg
    labels = cfg.get("labels")
    same_head = (pcfg["family"] == "classifier" and not cfg.get("new_head", False)
                 and cfg.get("pooling") in (None, pcfg["pooling"]) and labels in (None, pcfg.get("labels")))
    if same_head:
        model = pre
    else:
        labels = labels or pcfg.get("labels")
        ccfg = dict(pcfg, family="classifier", num_classes=len(labels), labels=labels, tie_weights=False,
                    pooling=cfg.get("pooling") or (pcfg["pooling"] if pcfg["family"] == "classifier" else "last"))
        ccfg["prefixes"] = {k: v for k, v in pcfg["prefixes"].items() if k != "decoder"}
        model = rnnkit_models.SequenceClassifier(ccfg)
        model.embedding.load_state_dict(pre.embedding.state_dict())
        model.encoder.load_state_dict(pre.encoder.state_dict())
        # Fresh pooling and head drawn right after the seed, in rnnkit's order.
        torch.manual_seed(cfg.get("seed", 0))
        d = rnnkit_models.encoder_output_size(model.cfg["encoder"])
        if model.cfg["pooling"] == "attention":
            model.attention = rnnkit_models.AdditiveAttention(d, model.cfg["attention_size"])
        pooled = 3 * d if model.cfg["pooling"] == "concat" else d
        model.head = nn.Linear(pooled, len(labels))
    if cfg.get("dropout") is not None:
        model.dropout = nn.Dropout(cfg["dropout"])
        model.cfg["dropout"] = cfg["dropout"]
    return model


def layer_groups(model):
    """embedding, encoder.l0 … encoder.l{K-1}, head (attention + head), as rnnkit groups them."""
    k = model.cfg["encoder"]["num_layers"]
    groups = [("embedding", [])] + [(f"encoder.l{i}", []) for i in range(k)] + [("head", [])]
    pre = model.cfg["prefixes"]
    for name, p in model.named_parameters():
        attr, rest = name.split(".", 1)
        full = pre[attr] + rest
        if attr == "embedding":
            g = 0
        elif attr == "encoder":
            g = 1 + int(rest.rsplit("_l", 1)[1].replace("_reverse", ""))
        else:
            g = len(groups) - 1
        groups[g][1].append((full, p))
    return groups


def make_batch(data, idx, pad):
    """(ids padded with pad, lengths, targets) of the (ids, target) items data[idx]; targets keep their
    type: int class labels -> int64, float ratings (pretrain.py's auxiliary objective) -> float32."""
    n = max(len(data[i][0]) for i in idx)
    ids = torch.full((len(idx), n), pad, dtype=torch.int64)
    for r, i in enumerate(idx):
        ids[r, :len(data[i][0])] = torch.tensor(data[i][0])
    lengths = torch.tensor([len(data[i][0]) for i in idx], dtype=torch.int64)
    return ids, lengths, torch.tensor([data[i][1] for i in idx])


def evaluate(model, data, batch_size, pad, num_classes):
    model.eval()
    conf = [[0] * num_classes for _ in range(num_classes)]
    loss_sum, n = 0.0, 0
    with torch.no_grad():
        for idx in epoch_batches([len(d[0]) for d in data], batch_size, False, True, 0, 0):
            ids, lengths, y = make_batch(data, idx, pad)
            logits = model(ids, lengths)
            loss_sum += nn.functional.cross_entropy(logits, y).item() * len(idx)
            n += len(idx)
            for t, p in zip(y.tolist(), logits.argmax(1).tolist()):
                conf[t][p] += 1
    model.train()
    acc = sum(conf[i][i] for i in range(num_classes)) / n
    f1s = []
    for c in range(num_classes):
        denom = sum(conf[r][c] for r in range(num_classes)) + sum(conf[c])
        f1s.append(2 * conf[c][c] / denom if denom else 0.0)
    return {"loss": loss_sum / n, "accuracy": acc, "macro_f1": sum(f1s) / num_classes, "confusion": conf, "examples": n}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--test", help="labelled JSONL evaluated after training; metrics printed as JSON")
    ap.add_argument("--seed", type=int, help="overrides the config's seed")
    ap.add_argument("--select-best", action="store_true",
                    help="end with the weights of the best validation epoch (as rnnkit's best/)")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    if args.out:
        cfg["out"] = args.out
    if args.max_steps is not None:
        cfg["max_steps"] = args.max_steps
    if args.seed is not None:
        cfg["seed"] = args.seed
    os.makedirs(cfg["out"], exist_ok=True)
    seed = cfg.get("seed", 0)
    model = prepare_model(cfg)
    mc = model.cfg
    tokenizer = None
    tok_path = os.path.join(cfg["model"], mc.get("tokenizer", "tokenizer.json"))
    if os.path.exists(tok_path):
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_file(tok_path)
    labels = mc["labels"] or [str(i) for i in range(mc["num_classes"])]
    train = read_data(cfg["train"], labels, tokenizer, mc["max_length"])
    valid = read_data(cfg["valid"], labels, tokenizer, mc["max_length"]) if cfg.get("valid") else None
    pad = mc["padding_idx"] or 0
    bs, epochs = cfg.get("batch_size", 32), cfg.get("epochs", 3)
    shuffle, bucket = cfg.get("shuffle", True), cfg.get("bucket", True)
    lengths = [len(d[0]) for d in train]
    per_epoch = len(epoch_batches(lengths, bs, shuffle, bucket, seed, 0))
    total = min(cfg.get("max_steps") or 2**62, per_epoch * epochs)

    groups = layer_groups(model)
    G = len(groups)
    factor = cfg.get("discriminative_factor") or 1.0
    base_lrs = [cfg.get("lr", 1e-3) / factor ** (G - 1 - g) for g in range(G)]
    frozen = lambda n: any(fnmatch.fnmatchcase(n, p) for p in cfg.get("freeze", []))  # noqa: E731
    ocfg = cfg.get("optimizer", {"name": "adam"})
    pg = [{"params": [p for _, p in ps], "lr": lr} for (_, ps), lr in zip(groups, base_lrs)]
    name = ocfg["name"]
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        wd = ocfg.get("weight_decay", 0.0 if name == "adam" else 0.01)
        opt = cls(pg, betas=(ocfg.get("beta1", 0.9), ocfg.get("beta2", 0.999)), eps=ocfg.get("eps", 1e-8), weight_decay=wd)
    else:
        opt = torch.optim.SGD(pg, lr=cfg.get("lr", 1e-3), momentum=ocfg.get("momentum", 0.0),
                              dampening=ocfg.get("dampening", 0.0), nesterov=ocfg.get("nesterov", False),
                              weight_decay=ocfg.get("weight_decay", 0.0))
    weights = torch.tensor(cfg["class_weights"], dtype=torch.float32) if cfg.get("class_weights") else None
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.get("label_smoothing", 0.0))
    all_params = [p for _, ps in groups for _, p in ps]
    log = open(os.path.join(cfg["out"], "metrics.jsonl"), "w")
    step = 0
    best, best_state = None, None
    higher = cfg.get("metric", "accuracy") != "loss"
    for epoch in range(epochs):
        if step >= total:
            break
        for g, (_, ps) in enumerate(groups):
            open_ = not cfg.get("gradual_unfreezing") or (G - 1 - g) <= epoch
            for n, p in ps:
                p.requires_grad_(open_ and not frozen(n))
        model.train()
        batches = epoch_batches(lengths, bs, shuffle, bucket, seed, epoch)
        for idx in batches:
            if step >= total:
                break
            torch.manual_seed(step_seed(seed, step))
            ids, lens, y = make_batch(train, idx, pad)
            probs = soft_targets(train, idx, mc["num_classes"])
            loss = loss_fn(model(ids, lens), y if probs is None else probs)
            opt.zero_grad()
            loss.backward()
            if cfg.get("clip_grad_value") is not None:
                torch.nn.utils.clip_grad_value_(all_params, cfg["clip_grad_value"])
            if cfg.get("clip_grad_norm") is not None:
                torch.nn.utils.clip_grad_norm_([p for p in all_params if p.grad is not None], cfg["clip_grad_norm"])
            f = schedule_factor(cfg.get("schedule", {"name": "constant"}), step, total)
            for group, lr in zip(opt.param_groups, base_lrs):
                group["lr"] = lr * f
            opt.step()
            step += 1
            log.write(json.dumps({"step": step, "epoch": epoch + 1, "loss": loss.item()}) + "\n")
        if valid is not None and step % per_epoch == 0:
            m = evaluate(model, valid, bs, pad, mc["num_classes"])
            log.write(json.dumps({"epoch": epoch + 1, "step": step, "valid": m}) + "\n")
            score = m[cfg.get("metric", "accuracy")]
            if best is None or (score > best if higher else score < best):
                best = score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            print(f"epoch {epoch + 1}: valid accuracy {m['accuracy']:.4f} loss {m['loss']:.4f}", file=sys.stderr)
    log.close()
    if args.select_best and best_state is not None:
        model.load_state_dict(best_state)
    sd = {}
    pre = mc["prefixes"]
    for k, v in model.state_dict().items():
        attr, rest = k.split(".", 1)
        sd[pre[attr] + rest] = v.detach().contiguous().clone()
    save_file(sd, os.path.join(cfg["out"], "model.safetensors"), metadata={"format": "pt"})
    print(f"finetune_reference: {step} steps, torch {torch.__version__}, wrote {cfg['out']}", file=sys.stderr)
    if args.test:
        test = read_data(args.test, labels, tokenizer, mc["max_length"])
        print(json.dumps({"test": evaluate(model, test, bs, pad, mc["num_classes"])}))


if __name__ == "__main__":
    main()
