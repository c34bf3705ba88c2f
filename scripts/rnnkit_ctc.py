"""The PyTorch side of rnnkit's `ctc` family: audio in, log-mel features, the acoustic model, CTC
loss, and the reference decoders (greedy, prefix beam search with an optional word list, word
times) that rnnkit's Rust code must match bit for bit.

config.json (family "ctc"):
  features      {"sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min" (0),
                 "f_max" (sample_rate / 2), "log_floor" (1e-6), "normalize" ("utterance" | "none")}
  subsampling   optional {"num_layers", "channels", "kernel_size" (3), "stride" (2)}
  encoder       {"mode", "input_size", "hidden_size", ...} torch.nn.LSTM's arguments, run batch-first;
                input_size = n_mels, or subsampling.channels
  dropout       before the output layer (default 0)
  alphabet      the output symbols; class 0 is the blank, class i + 1 is alphabet[i]; " " separates words
  prefixes      {"subsampling", "encoder", "output"} -> state_dict key prefix

Audio: WAV PCM 8/16/24/32-bit integer (v / 2^(bits-1); 8-bit: byte - 128 over 128) or 32-bit float;
channels averaged (torch.mean(x (L, C), dim=1)); resampled to sample_rate with the sinc_interp_hann
kernel (lowpass_filter_width 6, rolloff 0.99; torchaudio's formula, written out in `resample`).

Features (T, M), T = L // hop + 1:
  x_pad = reflect-pad by n_fft // 2; S = stft(x_pad, n_fft, hop, win, hann_window(win), center=False)
  mel = |S|^2 .T @ fb; y = log(max(mel, log_floor)); utterance normalisation (y - mean) / (std + 1e-5)
  fb: HTK mel scale 2595 log10(1 + f / 700), triangles between n_mels + 2 points, in f64, then f32

Model: [relu(conv_k), zero past each row's length] -> encoder (packed) -> dropout -> output.
loss = ctc_loss(log_softmax(logits).transpose(0, 1), targets, T', S, blank=0, reduction='mean',
       zero_infinity=True)
"""
import copy
import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import rnnkit_models

DEFAULT_PREFIXES = {"subsampling": "subsampling.", "encoder": "encoder.", "output": "output."}


def full_config(cfg):
    out = copy.deepcopy(cfg)
    out.setdefault("format", "rnnkit-model")
    out.setdefault("format_version", 1)
    f = out["features"]
    f.setdefault("f_min", 0.0)
    f.setdefault("f_max", None)
    f.setdefault("log_floor", 1e-6)
    f.setdefault("normalize", "utterance")
    if out.get("subsampling"):
        out["subsampling"].setdefault("kernel_size", 3)
        out["subsampling"].setdefault("stride", 2)
    out.setdefault("dropout", 0.0)
    out["prefixes"] = {**DEFAULT_PREFIXES, **cfg.get("prefixes", {})}
    enc = out["encoder"]
    for k, v in (("num_layers", 1), ("bias", True), ("dropout", 0.0), ("bidirectional", False),
                 ("proj_size", 0), ("nonlinearity", "tanh")):
        enc.setdefault(k, v)
    enc["batch_first"] = True
    return out


# --- audio -------------------------------------------------------------------------------------

def read_wav(path):
    """(samples (L,) float32 tensor, mono; sample_rate). RIFF PCM (1), float (3) or extensible."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    pos, fmt, pcm = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            tag, ch, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, ch, rate, bits)
        elif cid == b"data":
            pcm = body
        pos += 8 + size + (size & 1)
    tag, ch, rate, bits = fmt
    width = (bits + 7) // 8
    n = len(pcm) // (width * ch) * ch
    pcm = pcm[:n * width]
    if tag == 3 and bits == 32:
        x = np.frombuffer(pcm, "<f4").astype(np.float32)
    elif tag == 1 and bits == 8:
        x = (np.frombuffer(pcm, np.uint8).astype(np.int32) - 128).astype(np.float32) / np.float32(128)
    elif tag == 1 and bits == 16:
        x = np.frombuffer(pcm, "<i2").astype(np.float32) / np.float32(32768)
    elif tag == 1 and bits == 24:
        b = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / np.float32(1 << 23)
    elif tag == 1 and bits == 32:
        x = np.frombuffer(pcm, "<i4").astype(np.float32) / np.float32(2.0 ** 31)
    else:
        raise ValueError(f"{path}: format {tag}, {bits} bits is not supported")
    t = torch.from_numpy(np.ascontiguousarray(x))
    if ch > 1:
        t = t.view(-1, ch).mean(1)
    return t, rate


def write_wav(path, samples, rate, bits=16, channels=1, float32=False):
    """samples: int or float numpy array (frames * channels, interleaved) already in the stored type."""
    raw = np.ascontiguousarray(samples).tobytes()
    if bits == 24:
        v = np.asarray(samples, np.int32).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        raw = v.tobytes()
    tag = 3 if float32 else 1
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(raw)) + raw
    if len(raw) & 1:
        body += b"\0"
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def resample(x, orig, new):
    """x (L,) float32 from orig Hz to new Hz: torchaudio's sinc_interp_hann (width 6, rolloff 0.99)."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    if o == n:
        return x
    lpw = 6.0
    base = min(o, n) * 0.99
    width = math.ceil(lpw * o / base)
    idx = torch.arange(-width, width + o, dtype=torch.float64).view(1, 1, -1) / o
    t = torch.arange(0, -n, -1, dtype=torch.float64).view(-1, 1, 1) / n + idx
    t = (t * base).clamp(-lpw, lpw)
    window = torch.square(torch.cos(t * (math.pi / lpw / 2.0)))
    t = t * math.pi
    scale = base / o
    sinc = torch.sin(t) / t
    kernels = torch.where(t != 0, sinc, torch.ones_like(t))
    kernels = (kernels * (window * scale)).to(torch.float32)
    padded = torch.constant_pad_nd(x.view(1, 1, -1), [width, width + o])
    y = F.conv1d(padded, kernels, None, [o], [0], [1], 1)
    y = y.transpose(1, 2).reshape(-1)
    target = (n * x.shape[0] + o - 1) // o
    return y[:min(target, y.shape[0])]


# --- features ----------------------------------------------------------------------------------

def hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(fc):
    n_freqs = fc["n_fft"] // 2 + 1
    nyquist = fc["sample_rate"] / 2.0
    f_max = fc["f_max"] if fc["f_max"] is not None else nyquist
    m = fc["n_mels"]
    all_freqs = torch.linspace(0.0, nyquist, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(hz_to_mel(fc["f_min"]), hz_to_mel(f_max), m + 2, dtype=torch.float64)
    f_pts = (torch.pow(10.0, m_pts / 2595.0) - 1.0) * 700.0
    f_diff = f_pts[1:m + 2] - f_pts[0:m + 1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, 0:m] / f_diff[0:m]
    up = slopes[:, 2:m + 2] / f_diff[1:m + 1]
    return torch.minimum(down, up).clamp_min(0.0).to(torch.float32)


class Frontend:
    def __init__(self, fc):
        self.fc = fc
        self.fb = mel_filterbank(fc)
        self.window = torch.hann_window(fc["win_length"], periodic=True, dtype=torch.float32)

    def features(self, x):
        fc = self.fc
        pad = fc["n_fft"] // 2
        if x.shape[0] <= pad:
            raise ValueError(f"{x.shape[0]} samples is too short")
        padded = F.pad(x.view(1, 1, -1), (pad, pad), mode="reflect").view(-1)
        spec = torch.stft(padded, fc["n_fft"], fc["hop_length"], fc["win_length"], self.window,
                          center=False, normalized=False, onesided=True, return_complex=True)
        power = torch.square(spec.abs())
        mel = power.transpose(0, 1).matmul(self.fb)
        y = mel.clamp_min(fc["log_floor"]).log()
        if fc["normalize"] == "utterance":
            std, mean = torch.std_mean(y, dim=[0], correction=0, keepdim=True)
            y = (y - mean) / (std + 1e-5)
        return y

    def audio_features(self, x, rate):
        return self.features(resample(x, rate, self.fc["sample_rate"]))


# --- model -------------------------------------------------------------------------------------

def conv_out(length, k, s, p):
    span = length + 2 * p - k
    return 0 if span < 0 else span // s + 1


class CtcModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg = full_config(cfg)
        sub = cfg.get("subsampling")
        self.subsampling = nn.ModuleList()
        if sub:
            for k in range(sub["num_layers"]):
                cin = cfg["features"]["n_mels"] if k == 0 else sub["channels"]
                self.subsampling.append(nn.Conv1d(cin, sub["channels"], sub["kernel_size"], sub["stride"],
                                                  sub["kernel_size"] // 2))
        self.encoder = rnnkit_models.make_encoder(cfg["encoder"])
        self.dropout = nn.Dropout(cfg["dropout"])
        self.output = nn.Linear(rnnkit_models.encoder_output_size(cfg["encoder"]), len(cfg["alphabet"]) + 1)

    def output_lengths(self, lengths):
        out = []
        for length in lengths:
            for c in self.subsampling:
                length = conv_out(length, c.kernel_size[0], c.stride[0], c.padding[0])
            out.append(length)
        return out

    def forward(self, x, lengths):
        """x (N, T, n_mels) zero-padded, lengths list -> logits (N, T', V), output lengths (list)."""
        lens = list(lengths)
        z = x
        if len(self.subsampling):
            z = z.transpose(1, 2)
            for conv in self.subsampling:
                z = torch.relu(conv(z))
                lens = [conv_out(n, conv.kernel_size[0], conv.stride[0], conv.padding[0]) for n in lens]
                steps = torch.arange(z.shape[2]).unsqueeze(0)
                pad = (steps >= torch.tensor(lens).unsqueeze(1)).unsqueeze(1)
                z = z.masked_fill(pad, 0.0)
            z = z.transpose(1, 2)
        h, _ = rnnkit_models.run_encoder(self.encoder, z, torch.tensor(lens))
        return self.output(self.dropout(h)), lens


def ctc_loss(logits, out_lengths, targets):
    log_probs = logits.log_softmax(-1).transpose(0, 1)
    flat = torch.tensor([c for t in targets for c in t], dtype=torch.int64)
    return F.ctc_loss(log_probs, flat, torch.tensor(out_lengths), torch.tensor([len(t) for t in targets]),
                      blank=0, reduction="mean", zero_infinity=True)


def batch_features(feats):
    lengths = [f.shape[0] for f in feats]
    batch = torch.zeros(len(feats), max(lengths), feats[0].shape[1])
    for i, f in enumerate(feats):
        batch[i, :lengths[i]] = f
    return batch, lengths


def log_probs(model, feats):
    """Per utterance, its (T'_n, V) log-probabilities as lists of Python floats (f64)."""
    batch, lengths = batch_features(feats)
    with torch.no_grad():
        logits, out_lens = model(batch, lengths)
        lp = logits.log_softmax(-1).to(torch.float64)
    return [lp[i, :n].tolist() for i, n in enumerate(out_lens)]


# --- decoding ----------------------------------------------------------------------------------

NEG_INF = float("-inf")


def log_add(a, b):
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def greedy(lp):
    tokens, frames, score, prev = [], [], 0.0, 0
    for t, row in enumerate(lp):
        k = 0
        for v, x in enumerate(row):
            if x > row[k]:
                k = v
        score += row[k]
        if k != 0 and k != prev:
            tokens.append(k)
            frames.append(t)
        prev = k
    return tokens, frames, score


class WordList:
    def __init__(self, words):
        self.children, self.complete = [{}], [False]
        for w in words:
            node = 0
            for c in w:
                if c not in self.children[node]:
                    self.children.append({})
                    self.complete.append(False)
                    self.children[node][c] = len(self.children) - 1
                node = self.children[node][c]
            self.complete[node] = True

    def node(self, prefix, space):
        start = 0
        for i in range(len(prefix) - 1, -1, -1):
            if prefix[i] == space:
                start = i + 1
                break
        node = 0
        for c in prefix[start:]:
            node = self.children[node].get(c)
            if node is None:
                return None
        return node

    def allows(self, prefix, c, space):
        node = self.node(prefix, space)
        if node is None:
            return False
        if c == space:
            return node != 0 and self.complete[node]
        return c in self.children[node]

    def ends_well(self, prefix, space):
        node = self.node(prefix, space)
        return node is not None and (node == 0 or self.complete[node])


def prefix_beam_search(lp, beam, n_best=1, words=None, space=None):
    """[(tokens, frames, score)] best first; the same arithmetic in the same order as rnnkit."""
    beams = [[(), [], 0.0, NEG_INF]]  # prefix, frames, p_b, p_nb
    for t, row in enumerate(lp):
        nxt, index = [], {}

        def slot(prefix, frames):
            if prefix not in index:
                index[prefix] = len(nxt)
                nxt.append([prefix, frames, NEG_INF, NEG_INF])
            return nxt[index[prefix]]

        for prefix, frames, p_b, p_nb in beams:
            total = log_add(p_b, p_nb)
            last = prefix[-1] if prefix else None
            for c, p in enumerate(row):
                if c == 0:
                    e = slot(prefix, list(frames))
                    e[2] = log_add(e[2], p + total)
                    continue
                if c == last:
                    e = slot(prefix, list(frames))
                    e[3] = log_add(e[3], p + p_nb)
                if words is not None and not words.allows(prefix, c, space):
                    continue
                e = slot(prefix + (c,), frames + [t])
                e[3] = log_add(e[3], p + (p_b if c == last else total))
        nxt.sort(key=lambda e: -log_add(e[2], e[3]))
        beams = nxt[:max(beam, 1)]
    out = [(list(p), f, log_add(pb, pnb)) for p, f, pb, pnb in beams
           if words is None or words.ends_well(p, space)]
    if not out:
        out = [([], [], NEG_INF)]
    return out[:max(n_best, 1)]


def words_of(tokens, frames, alphabet, seconds_per_step):
    out, cur = [], None
    for k, f in zip(tokens, frames):
        ch = alphabet[k - 1]
        if ch == " ":
            if cur:
                out.append(cur)
            cur = None
            continue
        if cur is None:
            cur = [ch, f, f]
        else:
            cur[0] += ch
            cur[2] = f
    if cur:
        out.append(cur)
    return [{"word": w, "start": s * seconds_per_step, "end": (e + 1) * seconds_per_step} for w, s, e in out]


def seconds_per_step(cfg):
    sub = cfg.get("subsampling")
    red = sub["stride"] ** sub["num_layers"] if sub else 1
    return (cfg["features"]["hop_length"] * red) / cfg["features"]["sample_rate"]


def transcribe(model, lps, beam=0, words=None):
    cfg = model.cfg
    space = cfg["alphabet"].index(" ") + 1 if " " in cfg["alphabet"] else None
    out = []
    for lp in lps:
        if beam == 0:
            tokens, frames, score = greedy(lp)
        else:
            tokens, frames, score = prefix_beam_search(lp, beam, 1, words, space)[0]
        out.append({"text": "".join(cfg["alphabet"][k - 1] for k in tokens), "score": score,
                    "words": words_of(tokens, frames, cfg["alphabet"], seconds_per_step(cfg))})
    return out


def load_dir(path):
    return rnnkit_models.load_dir(path)


def save_dir(path, model):
    import os
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    cfg = {k: v for k, v in model.cfg.items()}
    with open(f"{path}/config.json", "w") as f:
        json.dump(cfg, f, indent=2)
    sd = {k: v.contiguous() for k, v in rnnkit_models.renamed_state_dict(model).items()}
    save_file(sd, f"{path}/model.safetensors", metadata={"format": "pt"})
