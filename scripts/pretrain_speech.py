#!/usr/bin/env python3
"""Pretrains the embedded speech model (weights/speech) in PyTorch on synthetic speech
(scripts/synth_speech.py): a ctc model (rnnkit_ctc.CtcModel) trained with CTC loss, Adam, batches
bucketed by length, gradient clipping; validation loss and greedy WER on a held-out synthetic set
after every epoch; the best epoch's weights are written as an rnnkit model directory.

  .venv/bin/python scripts/pretrain_speech.py SYNTH_DIR OUT_DIR [--epochs N] [--minutes M] [--seed S]
"""
import argparse
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_ctc as ctc  # noqa: E402
import jiwer  # noqa: E402

ALPHABET = list(" 'abcdefghijklmnopqrstuvwxyz")
CONFIG = {
    "family": "ctc",
    "features": {"sample_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 40},
    "subsampling": {"num_layers": 1, "channels": 128, "kernel_size": 3, "stride": 2},
    "encoder": {"mode": "LSTM", "input_size": 128, "hidden_size": 128, "num_layers": 3, "bidirectional": True,
                "dropout": 0.1},
    "dropout": 0.1,
    "alphabet": ALPHABET,
}


def encode(text):
    return [ALPHABET.index(c) + 1 for c in text]


def batches(items, batch_frames, r):
    """Length-sorted buckets of at most batch_frames padded frames, in shuffled order."""
    order = sorted(range(len(items)), key=lambda i: items[i][0].shape[0])
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * items[i][0].shape[0] > batch_frames:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    r.shuffle(out)
    return out


def evaluate(model, items, beam=0):
    model.eval()
    refs, hyps, losses = [], [], []
    with torch.no_grad():
        for i in range(0, len(items), 32):
            chunk = items[i:i + 32]
            feats = [f for f, _, _ in chunk]
            batch, lengths = ctc.batch_features(feats)
            logits, out_lens = model(batch, lengths)
            losses.append(float(ctc.ctc_loss(logits, out_lens, [t for _, t, _ in chunk])) * len(chunk))
            lps = [lp[:n].tolist() for lp, n in zip(logits.log_softmax(-1).double(), out_lens)]
            hyps += [t["text"] for t in ctc.transcribe(model, lps, beam)]
            refs += [s for _, _, s in chunk]
    w, c = jiwer.wer(refs, hyps), jiwer.cer(refs, hyps)
    return sum(losses) / len(items), w, c, hyps


def load(manifest_dir, fe, rows=None):
    rows = rows or [json.loads(ln) for ln in open(f"{manifest_dir}/manifest.jsonl")]
    items = []
    for row in rows:
        x, rate = ctc.read_wav(os.path.join(manifest_dir, row["wav"]))
        items.append((fe.audio_features(x, rate), encode(row["text"]), row["text"]))
    return items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("synth")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=50.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-frames", type=int, default=6000)
    ap.add_argument("--valid", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    r = random.Random(a.seed)
    t0 = time.time()
    model = ctc.CtcModel(CONFIG)
    fe = ctc.Frontend(model.cfg["features"])
    items = load(a.synth, fe)
    valid, train = items[:a.valid], items[a.valid:]
    print(f"{len(train)} training, {len(valid)} validation utterances; features in {time.time() - t0:.0f} s",
          flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    best, log, step = None, [], 0
    for epoch in range(a.epochs):
        model.train()
        total, n = 0.0, 0
        for b in batches(train, a.batch_frames, r):
            batch, lengths = ctc.batch_features([train[i][0] for i in b])
            logits, out_lens = model(batch, lengths)
            loss = ctc.ctc_loss(logits, out_lens, [train[i][1] for i in b])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total, n, step = total + float(loss), n + 1, step + 1
        vloss, vwer, vcer, hyps = evaluate(model, valid)
        row = {"epoch": epoch + 1, "steps": step, "train_loss": total / n, "valid_loss": vloss, "valid_wer": vwer,
               "valid_cer": vcer, "minutes": (time.time() - t0) / 60}
        log.append(row)
        print(json.dumps(row), "|", hyps[0], "|", valid[0][2], flush=True)
        if best is None or vloss < best:
            best = vloss
            ctc.save_dir(a.out, model)
        if (time.time() - t0) / 60 > a.minutes:
            break
    with open(f"{a.out}/pretrain_log.json", "w") as f:
        json.dump({"args": vars(a), "epochs": log, "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
