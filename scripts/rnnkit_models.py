"""The PyTorch side of rnnkit's model families, and the config.json schema they share with Rust.

A model directory holds:
  config.json        this schema (see DEFAULTS and docs/FORMATS.md, "Model directory")
  model.safetensors  and/or model.pth: the state_dict
  tokenizer.json     a Hugging Face `tokenizers` file (same ids in Rust and Python)

Families (ids are batch-first (N, L) int64, lengths (N,) int64):
  classifier      embedding -> recurrent encoder (packed by lengths) -> pooling -> dropout -> head
                  pooling: last | mean | max | concat ([last, max, mean]) | attention
  language_model  embedding -> encoder -> dropout -> decoder (optionally tied to the embedding)
  seq2seq         encoder-decoder with attention: scripts/rnnkit_seq2seq.py

`prefixes` maps each submodule to its state_dict key prefix, so a user's own module names
(`emb.`, `rnn.`, `fc.`) work without renaming the file.
"""
import copy
import json

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

DEFAULT_PREFIXES = {"embedding": "embedding.", "encoder": "encoder.", "attention": "attention.",
                    "head": "head.", "decoder": "decoder."}
DEFAULTS = {
    "format": "rnnkit-model",
    "format_version": 1,
    "padding_idx": 0,
    "dropout": 0.0,
    "pooling": "last",
    "attention_size": 64,
    "tie_weights": False,
    "labels": None,
    "tokenizer": "tokenizer.json",
    "max_length": 256,
    "prefixes": DEFAULT_PREFIXES,
}


MASK64 = (1 << 64) - 1


class SplitMix64:
    """SplitMix64 (Steele, Lea and Flood 2014), as rnnkit's src/rng.rs: the data order of the
    fine-tuning references and seq2seq sampling. uniform() = (next >> 11) * 2**-53, in [0, 1)."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53

    def shuffle(self, v):
        """Fisher-Yates from the end: j = next() % (i + 1)."""
        for i in range(len(v) - 1, 0, -1):
            j = self.next() % (i + 1)
            v[i], v[j] = v[j], v[i]


def full_config(cfg):
    out = copy.deepcopy(DEFAULTS)
    out.update(copy.deepcopy(cfg))
    out["prefixes"] = {**DEFAULT_PREFIXES, **cfg.get("prefixes", {})}
    enc = out["encoder"]
    enc.setdefault("num_layers", 1)
    enc.setdefault("bias", True)
    enc.setdefault("dropout", 0.0)
    enc.setdefault("bidirectional", False)
    enc.setdefault("proj_size", 0)
    enc.setdefault("nonlinearity", "tanh")
    enc["batch_first"] = True  # models always feed (N, L, E)
    enc.setdefault("input_size", out["embedding_dim"])
    return out


def make_encoder(enc):
    kw = dict(input_size=enc["input_size"], hidden_size=enc["hidden_size"], num_layers=enc["num_layers"],
              bias=enc["bias"], batch_first=True, dropout=enc["dropout"], bidirectional=enc["bidirectional"])
    mode = enc["mode"]
    if mode == "LSTM":
        return nn.LSTM(**kw, proj_size=enc["proj_size"])
    if mode == "GRU":
        return nn.GRU(**kw)
    return nn.RNN(**kw, nonlinearity="relu" if mode == "RNN_RELU" else enc["nonlinearity"])


def encoder_output_size(enc):
    return (enc["proj_size"] or enc["hidden_size"]) * (2 if enc["bidirectional"] else 1)


class AdditiveAttention(nn.Module):
    """score_t = v . tanh(W o_t + b); alpha = masked softmax over t; pooled = sum_t alpha_t o_t."""

    def __init__(self, dim, attention_size):
        super().__init__()
        self.proj = nn.Linear(dim, attention_size)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def forward(self, out, mask):  # out (N, L, D), mask (N, L) bool
        scores = self.v(torch.tanh(self.proj(out))).squeeze(-1)
        scores = scores.masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=1)
        return (alpha.unsqueeze(-1) * out).sum(1)


def run_encoder(encoder, x, lengths):
    """(N, L, E) padded -> outputs (N, L, D*H_out) zero past each length, h_n (D*layers, N, H_out)."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out_p, state = encoder(packed)
    out, _ = pad_packed_sequence(out_p, batch_first=True, total_length=x.size(1))
    h_n = state[0] if isinstance(state, tuple) else state
    return out, h_n


def last_state(h_n, bidirectional):
    return torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]


class SequenceClassifier(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg = full_config(cfg)
        enc = cfg["encoder"]
        self.embedding = nn.Embedding(cfg["vocab_size"], cfg["embedding_dim"], padding_idx=cfg["padding_idx"])
        self.encoder = make_encoder(enc)
        d = encoder_output_size(enc)
        if cfg["pooling"] == "attention":
            self.attention = AdditiveAttention(d, cfg["attention_size"])
        self.dropout = nn.Dropout(cfg["dropout"])
        pooled = 3 * d if cfg["pooling"] == "concat" else d
        self.head = nn.Linear(pooled, cfg["num_classes"])

    def forward(self, ids, lengths):
        out, h_n = run_encoder(self.encoder, self.embedding(ids), lengths)
        pooled = pool(out, h_n, lengths, self.cfg["pooling"], self.cfg["encoder"]["bidirectional"],
                      getattr(self, "attention", None))
        return self.head(self.dropout(pooled))


def pool(out, h_n, lengths, pooling, bidirectional, attention=None):
    """The classifier's pooling of encoder outputs (N, L, D) (zero past each length) and h_n:
    last (N, D), mean, max, concat [last, max, mean] (N, 3D), or attention."""
    mask = torch.arange(out.size(1), device=out.device)[None, :] < lengths.to(out.device)[:, None]
    last = last_state(h_n, bidirectional)
    m = mask.unsqueeze(-1)
    if pooling in ("mean", "concat"):
        mean = (out * m).sum(1) / lengths.to(out.device, out.dtype)[:, None]
    if pooling in ("max", "concat"):
        mx = out.masked_fill(~m, float("-inf")).max(1).values
    if pooling == "last":
        return last
    if pooling == "mean":
        return mean
    if pooling == "max":
        return mx
    if pooling == "concat":
        return torch.cat([last, mx, mean], dim=1)
    if pooling == "attention":
        return attention(out, mask)
    raise ValueError(f"unknown pooling {pooling}")


class LanguageModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg = full_config(cfg)
        enc = cfg["encoder"]
        self.embedding = nn.Embedding(cfg["vocab_size"], cfg["embedding_dim"], padding_idx=cfg["padding_idx"])
        self.encoder = make_encoder(enc)
        self.dropout = nn.Dropout(cfg["dropout"])
        self.decoder = nn.Linear(encoder_output_size(enc), cfg["vocab_size"])
        if cfg["tie_weights"]:
            self.decoder.weight = self.embedding.weight

    def forward(self, ids, lengths):
        out, _ = run_encoder(self.encoder, self.embedding(ids), lengths)
        return self.decoder(self.dropout(out))


def build(cfg):
    if cfg["family"] == "seq2seq":
        import rnnkit_seq2seq
        return rnnkit_seq2seq.Seq2Seq(cfg)
    if cfg["family"] == "ctc":
        import rnnkit_ctc
        return rnnkit_ctc.CtcModel(cfg)
    cfg = full_config(cfg)
    return SequenceClassifier(cfg) if cfg["family"] == "classifier" else LanguageModel(cfg)


def renamed_state_dict(model):
    """state_dict with the config's prefixes instead of the attribute names (tied decoder weight
    saved under its own key too, as torch does)."""
    pre = model.cfg["prefixes"]
    out = {}
    for k, v in model.state_dict().items():
        head, rest = k.split(".", 1)
        out[pre[head] + rest] = v
    return out


def load_dir(path):
    from safetensors.torch import load_file
    with open(f"{path}/config.json") as f:
        cfg = json.load(f)
    model = build(cfg)
    sd = load_file(f"{path}/model.safetensors")
    inv = {v: k + "." for k, v in model.cfg["prefixes"].items()}
    renamed = {}
    for k, v in sd.items():
        for p, attr in inv.items():
            if k.startswith(p):
                renamed[attr + k[len(p):]] = v
                break
    model.load_state_dict(renamed, strict=True)
    return model
