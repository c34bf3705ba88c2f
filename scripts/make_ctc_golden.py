#!/usr/bin/env python3
"""Golden files for rnnkit's ctc family: what PyTorch computes, for Rust to match bit for bit.

Writes OUT_DIR/:
  wav/*.wav                  WAVS: seeded synthetic audio (tones, a chirp, noise) in every sample
                             layout rnnkit reads: 8/16/24/32-bit integer, 32-bit float, mono and
                             stereo, at 8000, 11025, 16000, 22050, 44100 and 48000 Hz
  train.jsonl                {"wav", "text"} for each WAV: seeded letters, the data of
                             tests/ctc_finetune_parity.rs
  features.safetensors       for each feature set of FEATURES and each WAV: <set>.<wav> (T, n_mels),
                             from rnnkit_ctc.read_wav -> resample -> Frontend.features
  <case>/config.json, model.safetensors
                             CASES: seeded random ctc models (conv subsampling or not, LSTM/GRU/RNN,
                             bidirectional, proj_size, no bias, users' prefixes)
  <case>/reference.safetensors
                             logits (N, T', V) in eval mode on the WAVs' features batched in WAVS
                             order, out_lengths, targets/target_lengths (seeded), loss (CTC, mean,
                             zero_infinity) and grad.<key> of every parameter
  <case>/transcribe.json     rnnkit_ctc.transcribe on the same batch, and on each file alone: greedy
                             and beam 8 (text, f64 bits of the score, words with times)
  decode/lp.safetensors, decode/decode.json
                             UTTERANCES seeded log-probability matrices (peaked and flat), the
                             reference decoders' greedy and prefix beam search (beams 1, 4, 16; a
                             word list) outputs: tokens, frames, the f64 bits of each score
Run by scripts/test.sh:
  .venv/bin/python scripts/make_ctc_golden.py tests/golden/ctc
"""
import json
import os
import random
import shutil
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_ctc as ctc  # noqa: E402
import rnnkit_models  # noqa: E402

ALPHABET = list(" 'abcdefghijklmnopqrstuvwxyz")
# name: (rate, seconds, bits, channels, float)
WAVS = {
    "a_8k_16bit": (8000, 0.61, 16, 1, False),
    "b_16k_16bit": (16000, 0.5, 16, 1, False),
    "c_22050_16bit": (22050, 0.42, 16, 1, False),
    "d_44100_24bit_stereo": (44100, 0.2, 24, 2, False),
    "e_8k_8bit": (8000, 0.33, 8, 1, False),
    "f_48k_float_stereo": (48000, 0.25, 32, 2, True),
    "g_11025_32bit": (11025, 0.3, 32, 1, False),
}
FEATURES = {
    "narrow": {"sample_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 40},
    "wide": {"sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 64,
             "f_min": 20.0, "f_max": 7600.0, "normalize": "none", "log_floor": 1e-10},
}
UTTERANCES = 120
BEAMS = [1, 4, 16]
WORDS = ["abc", "ab", "cab", "bad", "dab", "a"]


def synth(name, rate, seconds, bits, channels, is_float, rng):
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = rng.uniform(120, 300)
    x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.2 * np.sin(2 * np.pi * (400 + 2000 * t) * t)
    x = x + 0.05 * rng.standard_normal(n)
    chans = [x * (1.0 - 0.3 * c) for c in range(channels)]
    inter = np.stack(chans, 1).reshape(-1)
    if is_float:
        return inter.astype("<f4")
    if bits == 8:
        return np.clip(np.round(inter * 127) + 128, 0, 255).astype(np.uint8)
    full = 2 ** (bits - 1) - 1
    v = np.clip(np.round(inter * full), -full, full)
    return v.astype({16: "<i2", 24: np.int32, 32: "<i4"}[bits])


def cfg(feat="narrow", mode="LSTM", layers=1, bi=False, proj=0, hidden=16, sub=None, bias=True,
        prefixes=None, nonlinearity="tanh"):
    fc = dict(FEATURES[feat])
    c = {"family": "ctc", "features": fc, "alphabet": ALPHABET, "dropout": 0.1,
         "encoder": {"mode": mode, "input_size": sub["channels"] if sub else fc["n_mels"], "hidden_size": hidden,
                     "num_layers": layers, "bidirectional": bi, "proj_size": proj, "bias": bias}}
    if mode.startswith("RNN"):
        c["encoder"]["nonlinearity"] = nonlinearity
    if sub:
        c["subsampling"] = sub
    if prefixes:
        c["prefixes"] = prefixes
    return c


CASES = {
    "ctc_lstm_uni": cfg(),
    "ctc_lstm_bi_l2_conv1": cfg(layers=2, bi=True, sub={"num_layers": 1, "channels": 24}),
    "ctc_lstm_proj_conv2": cfg(bi=True, proj=8, sub={"num_layers": 2, "channels": 20, "kernel_size": 3}),
    "ctc_gru_bi_l2": cfg(mode="GRU", layers=2, bi=True),
    "ctc_gru_conv2_k5_wide": cfg(feat="wide", mode="GRU", sub={"num_layers": 2, "channels": 16, "kernel_size": 5}),
    "ctc_rnn_tanh_bi": cfg(mode="RNN_TANH", bi=True),
    "ctc_rnn_relu_conv_s3": cfg(mode="RNN_RELU", sub={"num_layers": 1, "channels": 12, "kernel_size": 3, "stride": 3}),
    "ctc_lstm_prefixes_wide": cfg(feat="wide", layers=2, prefixes={"subsampling": "conv.", "encoder": "rnn.",
                                                                    "output": "fc."},
                                  sub={"num_layers": 1, "channels": 32}),
    "ctc_lstm_nobias_l3": cfg(layers=3, bias=False, hidden=12),
}


def bits64(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def hyp_json(tokens, frames, score):
    return {"tokens": tokens, "frames": frames, "score_bits": bits64(score)}


def main(out):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(f"{out}/wav")
    for name, (rate, sec, b, ch, fl) in WAVS.items():
        ctc.write_wav(f"{out}/wav/{name}.wav", synth(name, rate, sec, b, ch, fl, rng), rate, bits=b,
                      channels=ch, float32=fl)
    audio = {n: ctc.read_wav(f"{out}/wav/{n}.wav") for n in WAVS}
    feats = {}
    fronts = {k: ctc.Frontend(ctc.full_config({"features": dict(v), "encoder": {}})["features"])
              for k, v in FEATURES.items()}
    for fname, fe in fronts.items():
        for n, (x, rate) in audio.items():
            feats[f"{fname}.{n}"] = fe.audio_features(x, rate).contiguous()
    save_file(feats, f"{out}/features.safetensors")
    # Transcripts for the fine-tuning parity test (tests/ctc_finetune_parity.rs): seeded letters.
    tr = random.Random(3)
    with open(f"{out}/train.jsonl", "w") as f:
        for n in WAVS:
            words = ["".join(tr.choice(ALPHABET[2:]) for _ in range(tr.randint(1, 4))) for _ in range(tr.randint(1, 2))]
            f.write(json.dumps({"wav": f"wav/{n}.wav", "text": " ".join(words)}) + "\n")

    for i, (case, c) in enumerate(CASES.items()):
        torch.manual_seed(100 + i)
        model = ctc.CtcModel(c)
        d = f"{out}/{case}"
        ctc.save_dir(d, model)
        feat = "wide" if c["features"]["sample_rate"] == 16000 else "narrow"
        fl = [feats[f"{feat}.{n}"] for n in WAVS]
        batch, lengths = ctc.batch_features(fl)
        model.eval()
        logits, out_lens = model(batch, lengths)
        g = torch.Generator().manual_seed(i)
        targets = [torch.randint(1, len(ALPHABET) + 1, (max(1, n // 3),), generator=g).tolist() for n in out_lens]
        loss = ctc.ctc_loss(logits, out_lens, targets)
        loss.backward()
        ref = {"logits": logits.detach().contiguous(), "out_lengths": torch.tensor(out_lens),
               "targets": torch.tensor([x for t in targets for x in t]),
               "target_lengths": torch.tensor([len(t) for t in targets]), "loss": loss.detach().reshape(1)}
        pre = model.cfg["prefixes"]
        for k, p in model.named_parameters():
            head, rest = k.split(".", 1)
            ref[f"grad.{pre[head]}{rest}"] = p.grad.contiguous()
        save_file(ref, f"{d}/reference.safetensors")
        lps = ctc.log_probs(model, fl)
        res = {"files": [f"{n}.wav" for n in WAVS]}
        for beam in (0, 8):
            res[f"beam{beam}"] = [{**t, "score_bits": bits64(t["score"])} for t in ctc.transcribe(model, lps, beam)]
            # Each file alone (a batch of one, as an HTTP request without micro-batching).
            res[f"single_beam{beam}"] = [{**t, "score_bits": bits64(t["score"])}
                                         for f1 in fl for t in ctc.transcribe(model, ctc.log_probs(model, [f1]), beam)]
        with open(f"{d}/transcribe.json", "w") as f:
            json.dump(res, f, indent=1)

    # Decoders alone, on seeded log-probabilities over a 5-class alphabet (blank, " ", a, b, c, d).
    os.makedirs(f"{out}/decode")
    g = torch.Generator().manual_seed(7)
    lp_t, utts = {}, []
    words = ctc.WordList([[ " abcd".index(ch) + 1 for ch in w] for w in WORDS])
    for u in range(UTTERANCES):
        t = int(torch.randint(1, 40, (1,), generator=g))
        sharp = [0.5, 2.0, 6.0][u % 3]
        logits = torch.randn(t, 6, generator=g) * sharp
        lp = logits.log_softmax(-1)
        lp_t[f"u{u}"] = lp.contiguous()
        rows = lp.to(torch.float64).tolist()
        e = {"greedy": hyp_json(*ctc.greedy(rows))}
        for beam in BEAMS:
            e[f"beam{beam}"] = [hyp_json(*h) for h in ctc.prefix_beam_search(rows, beam, 3)]
        e["words16"] = [hyp_json(*h) for h in ctc.prefix_beam_search(rows, 16, 3, words, 1)]
        utts.append(e)
    save_file(lp_t, f"{out}/decode/lp.safetensors")
    with open(f"{out}/decode/decode.json", "w") as f:
        json.dump({"words": WORDS, "alphabet": list(" abcd"), "beams": BEAMS, "utterances": utts}, f)
    print(f"ctc golden: {len(WAVS)} wavs x {len(FEATURES)} feature sets, {len(CASES)} models, "
          f"{UTTERANCES} decoder utterances -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/ctc")
