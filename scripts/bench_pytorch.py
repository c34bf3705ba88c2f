#!/usr/bin/env python3
"""The PyTorch side of scripts/bench.sh: the same specs and the same JSON as `rnnkit bench`.

    python scripts/bench_pytorch.py --spec '{"kind": "rnn", "mode": "LSTM", "B": 1, "T": 32, "I": 128, "H": 256}'

Eval mode under torch.inference_mode(), batch_first, f32; the training step uses autograd and
torch.optim.Adam. `--cold MODEL_DIR TEXT` times process start → first prediction instead
(the caller measures the wall time of the whole process).

Predictions batch as rnnkit's Predictor does (src/serve/predictor.rs, run_batch): every text is
tokenized on the calling thread, the sequences are sorted by token count, longest first (ties
in input order), and run in chunks of PREDICT_BATCH, each padded to its longest; results come
back in input order.
"""
import argparse
import json
import os
import statistics
import sys
import time

# rnnkit tokenizes on one thread; the tokenizers library's encode_batch would otherwise use a
# thread per core (whatever --threads says).
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def timeit(f, warmup, iters, budget):
    for _ in range(warmup):
        f()
    ms = []
    start = time.perf_counter()
    while len(ms) < iters and (len(ms) < 3 or time.perf_counter() - start < budget):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ms), min(ms), len(ms)


def rnn_flops(mode, b, t, i, h, layers, bi):
    g = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    d = 2 if bi else 1
    return sum(2.0 * g * h * ((i if l == 0 else h * d) + h) * b * t * d for l in range(layers))


def rnn_module(spec):
    """The spec's torch.nn recurrent module (batch_first, eval mode); also scripts/bench_onnxruntime.py's."""
    mode = spec["mode"]
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(mode, torch.nn.RNN)
    kw = dict(num_layers=spec.get("layers", 1), bidirectional=spec.get("bidirectional", False), batch_first=True)
    if cls is torch.nn.RNN:
        kw["nonlinearity"] = "relu" if mode == "RNN_RELU" else "tanh"
    return cls(spec["I"], spec["H"], **kw).eval()


def run(spec, iters, warmup, budget):
    kind = spec["kind"]
    flops = None
    if kind == "rnn":
        m = rnn_module(spec)
        x = torch.randn(spec["B"], spec["T"], spec["I"])
        with torch.inference_mode():
            med, lo, n = timeit(lambda: m(x), warmup, iters, budget)
        flops = rnn_flops(spec["mode"], spec["B"], spec["T"], spec["I"], spec["H"], m.num_layers, m.bidirectional)
    elif kind == "sgemm":
        a, b = torch.randn(spec["N"], spec["N"]), torch.randn(spec["N"], spec["N"])
        with torch.inference_mode():
            med, lo, n = timeit(lambda: a @ b, warmup, iters, budget)
        flops = 2.0 * spec["N"] ** 3
    elif kind == "train_step":
        import rnnkit_models
        cfg = {"family": "classifier", "vocab_size": spec["V"], "embedding_dim": spec["E"], "padding_idx": 0,
               "encoder": {"mode": "LSTM", "hidden_size": spec["H"], "num_layers": spec.get("layers", 1)},
               "pooling": "last", "num_classes": 2}
        model = rnnkit_models.build(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ids = torch.randint(1, spec["V"], (spec["B"], spec["T"]))
        lengths = torch.tensor([spec["T"] - (k % max(spec["T"] // 2, 1)) for k in range(spec["B"])])
        y = torch.randint(0, 2, (spec["B"],))
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            loss = loss_fn(model(ids, lengths), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        med, lo, n = timeit(step, warmup, iters, budget)
    elif kind == "predict":
        med, lo, n = predict_bench(spec, warmup, iters, budget)
    elif kind == "translate":
        import rnnkit_seq2seq as s2s
        from seq2seq_finetune_reference import load_dir
        from tokenizers import Tokenizer
        model = load_dir(spec["model"]).eval()
        cfg = model.cfg
        tok = Tokenizer.from_file(os.path.join(spec["model"], cfg.get("tokenizer", "tokenizer.json")))
        tgt_name = cfg["seq2seq"].get("tgt_tokenizer")
        tgt_tok = Tokenizer.from_file(os.path.join(spec["model"], tgt_name)) if tgt_name else None
        with open(spec["input"]) as f:
            texts = [l.rstrip("\n") for l in f if l.strip()]
        with torch.inference_mode():
            med, lo, n = timeit(lambda: s2s.translate_texts(model, tok, texts, beam=spec.get("beam", 0), alpha=0.6,
                                                            batch_size=spec["B"], tgt_tok=tgt_tok),
                                warmup, iters, budget)
    elif kind == "seq2seq_train_step":
        import rnnkit_seq2seq as s2s
        from seq2seq_finetune_reference import load_dir
        model = load_dir(spec["model"]).train()
        cfg = model.cfg
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        b, t = spec["B"], spec["T"]
        lengths = torch.tensor([t - (k % max(t // 2, 1)) for k in range(b)])
        mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
        pad = cfg.get("padding_idx") or 0

        def ids(v):
            return torch.randint(3, v, (b, t)).masked_fill(~mask, pad)
        src, tgt_in, tgt_out = ids(cfg["vocab_size"]), ids(cfg["seq2seq"]["tgt_vocab_size"]), ids(cfg["seq2seq"]["tgt_vocab_size"])

        def step():
            loss = s2s.loss(model, model(src, lengths, tgt_in), tgt_out, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        med, lo, n = timeit(step, warmup, iters, budget)
    elif kind == "transcribe":
        import rnnkit_ctc as ctc
        import rnnkit_models
        model = rnnkit_models.load_dir(spec["model"]).eval()
        fe = ctc.Frontend(model.cfg["features"])
        with open(spec["input"]) as f:
            files = [l.strip() for l in f if l.strip()]

        def transcribe_all():
            for s0 in range(0, len(files), spec["B"]):
                feats = [fe.audio_features(*ctc.read_wav(p)) for p in files[s0:s0 + spec["B"]]]
                ctc.transcribe(model, ctc.log_probs(model, feats))
        with torch.inference_mode():
            med, lo, n = timeit(transcribe_all, warmup, iters, budget)
    elif kind == "ctc_train_step":
        import rnnkit_ctc as ctc
        import rnnkit_models
        model = rnnkit_models.load_dir(spec["model"]).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        b, t = spec["B"], spec["T"]
        lengths = [t - (k % max(t // 2, 1)) for k in range(b)]
        x = torch.randn(b, t, model.cfg["features"]["n_mels"])
        v = len(model.cfg["alphabet"]) + 1
        targets = [[1 + (k * 7 + j * 3) % (v - 1) for j in range(t // 8)] for k in range(b)]

        def step():
            logits, out_lens = model(x, lengths)
            loss = ctc.ctc_loss(logits, out_lens, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        med, lo, n = timeit(step, warmup, iters, budget)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return {"median_ms": med, "min_ms": lo, "iters": n, "threads": torch.get_num_threads(),
            "gflops": flops / (med * 1e-3) / 1e9 if flops else None}


def load_predictor(model_dir):
    import rnnkit_models
    from tokenizers import Tokenizer
    model = rnnkit_models.load_dir(model_dir).eval()
    tok = Tokenizer.from_file(os.path.join(model_dir, model.cfg.get("tokenizer", "tokenizer.json")))
    return model, tok


# The max_batch of `rnnkit bench`'s predict kind (src/cli/bench.rs), whose spec has no batch key.
PREDICT_BATCH = 32


def predict_texts(model, tok, texts, batch=PREDICT_BATCH):
    """Probabilities (len(texts), classes) in input order: tokenize all (truncated to
    max_length; an empty text is one padding token) → sort by length, longest first, ties in
    input order → chunks of `batch`, each padded to its longest → softmax."""
    pad, max_len = model.cfg["padding_idx"] or 0, model.cfg["max_length"]
    enc = [(e.ids[:max_len] or [pad]) for e in tok.encode_batch(texts, add_special_tokens=False)]
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))  # stable, as Rust's sort_by_key
    out = None
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            part = order[s:s + batch]
            n = len(enc[part[0]])
            ids = torch.tensor([enc[i] + [pad] * (n - len(enc[i])) for i in part])
            lengths = torch.tensor([len(enc[i]) for i in part])
            probs = torch.softmax(model(ids, lengths), -1)
            if out is None:
                out = torch.empty(len(enc), probs.shape[1])
            out[torch.tensor(part)] = probs
    return out


def predict_bench(spec, warmup, iters, budget):
    model, tok = load_predictor(spec["model"])
    with open(spec["input"]) as f:
        texts = [l.rstrip("\n") for l in f if l.strip()]
    return timeit(lambda: predict_texts(model, tok, texts), warmup, iters, budget)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget", type=float, default=3.0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--cold", nargs=2, metavar=("MODEL_DIR", "TEXT"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cold:
        model, tok = load_predictor(args.cold[0])
        p = predict_texts(model, tok, [args.cold[1]])[0].tolist()
        print(json.dumps({"probabilities": p}))
        return
    print(json.dumps(run(json.loads(args.spec), args.iters, args.warmup, args.budget)))


if __name__ == "__main__":
    main()
