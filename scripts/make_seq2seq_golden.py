#!/usr/bin/env python3
"""Golden files for rnnkit's seq2seq family: what PyTorch computes, for Rust to match bit for bit.

Writes OUT_DIR/<case>/ for each case of CASES:
  config.json, model.safetensors   the model directory: seeded random weights trained for
                                   TRAIN_STEPS Adam steps on a toy task (reverse the source, token s
                                   becoming s mod 22 + 3), so that decoders meet peaked and flat
                                   distributions, reordered beams and outputs of varied lengths
  reference.safetensors            src, src_len, tgt_in, tgt_out (int64); logits (N, T, V) in eval
                                   mode; loss (cross-entropy, label smoothing 0.1, padding ignored)
                                   and grad.<key> of every parameter under its state_dict key
  decode.json                      greedy, beam search and sampling outputs of rnnkit_seq2seq.py's
                                   reference decoders on src; scores as the bits of their f64 value
  tokenizer files, translate.json  (WITH_TOKENIZER cases) the tokenizers (one for both sides, or one each), and
                                   TEXTS translated by rnnkit_seq2seq.translate_texts (rnnkit's
                                   Translator with its defaults: beam 5, alpha 0.6, batches of 32)
Run by scripts/test.sh:
  .venv/bin/python scripts/make_seq2seq_golden.py tests/golden/seq2seq
"""
import json
import os
import shutil
import struct
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_models  # noqa: E402
import rnnkit_seq2seq as s2s  # noqa: E402

# Decoding settings the golden files use (the Rust test reads them from decode.json).
MAX_LEN = {"a": 1.5, "b": 3.0, "cap": 16}
# Beam searches: every (beam, alpha) pair; n_best = min(beam, 3).
BEAMS = [(1, 0.0), (1, 0.6), (4, 0.0), (4, 0.6), (8, 0.0), (8, 0.6)]
SENTENCES = 17
SAMPLE = {"seed": 7, "temperature": 0.8, "top_k": 6, "top_p": 0.9}


def cfg(enc_mode="LSTM", bi=True, enc_layers=1, proj=0, dec_mode="LSTM", dec_layers=1, hidden=12,
        attention="general", feed=True, bridge="linear", share=False, tie=False, prefixes=None,
        vocab=30, tgt_vocab=25, emb=8, tgt_emb=None, dec_dropout=0.0):
    c = {"family": "seq2seq", "vocab_size": vocab, "embedding_dim": emb, "padding_idx": 0,
         "encoder": {"mode": enc_mode, "input_size": emb, "hidden_size": 10, "num_layers": enc_layers,
                     "bidirectional": bi, "proj_size": proj},
         "dropout": 0.2,
         "seq2seq": {"tgt_vocab_size": tgt_vocab, "tgt_embedding_dim": tgt_emb or emb,
                     "share_embeddings": share, "tie_output": tie,
                     "decoder": {"mode": dec_mode, "hidden_size": hidden, "num_layers": dec_layers,
                                 "dropout": dec_dropout},
                     "attention": attention, "attention_size": 7, "input_feeding": feed, "bridge": bridge,
                     "bos_id": 1, "eos_id": 2}}
    if prefixes:
        c["prefixes"] = prefixes
    return c


CASES = {
    "s2s_lstm_bi_general_feed": cfg(),
    "s2s_gru_l2_additive": cfg(enc_mode="GRU", bi=False, enc_layers=2, dec_mode="GRU", dec_layers=2,
                               attention="additive", feed=False),
    "s2s_lstm_proj_dot_nobridge": cfg(bi=False, proj=6, hidden=6, attention="dot", bridge="none"),
    "s2s_shared_tied_gru_dec": cfg(dec_mode="GRU", attention="additive", share=True, tie=True,
                                   vocab=30, tgt_vocab=30, emb=12, tgt_emb=12),
    "s2s_rnn_enc_lstm_dec_prefixes": cfg(enc_mode="RNN_TANH", dec_mode="LSTM", dec_layers=2,
                                         prefixes={"embedding": "src_emb.", "tgt_embedding": "tgt_emb.",
                                                   "encoder": "enc.", "decoder": "dec.", "output": "generator."}),
    "s2s_gru_bi_dot_feed": cfg(enc_mode="GRU", dec_mode="GRU", hidden=20, attention="dot"),
    "s2s_lstm_l2_bi_additive_feed": cfg(enc_layers=2, attention="additive"),
    "s2s_rnn_relu_general_nofeed_nobridge": cfg(enc_mode="RNN_RELU", bi=False, dec_mode="GRU", feed=False,
                                                bridge="none"),
    "s2s_lstm_tied_output": cfg(hidden=8, tie=True, tgt_emb=8),
    "s2s_gru_bi_enc_lstm_dec_additive": cfg(enc_mode="GRU", attention="additive"),
    "s2s_lstm_l2_dec_dropout_dot": cfg(bi=False, hidden=10, dec_layers=2, attention="dot", dec_dropout=0.3),
    "s2s_tokenizer_wordpiece": cfg(share=True, tie=True, vocab=8000, tgt_vocab=8000, emb=16, tgt_emb=16,
                                   hidden=16, attention="additive"),
    "s2s_two_tokenizers": {**cfg(tie=True, vocab=8000, tgt_vocab=8000, emb=16, tgt_emb=16, hidden=16,
                                 attention="additive"),
                           "tokenizer": "src_tokenizer.json"},
}
CASES["s2s_two_tokenizers"]["seq2seq"]["tgt_tokenizer"] = "tgt_tokenizer.json"
# Cases whose directory gets tokenizers and a translate.json (texts translated as rnnkit's Translator
# does, with its default settings): the embedded WordPiece tokenizer (weights/sentiment/tokenizer.json)
# for both sides, or that one for the source and the translation model's BPE
# (weights/translation/tokenizer.json) for the target.
WITH_TOKENIZER = {"s2s_tokenizer_wordpiece": ("tokenizer.json", None),
                  "s2s_two_tokenizers": ("src_tokenizer.json", "tgt_tokenizer.json")}
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Done.", "use -f to force removal",
         "Could not open %s for writing: %s", "a", "Ünïcödé and émojis 🎬 are fine",
         "the the the the the the the the", "Press any key to continue", "x " * 40,
         "Translated text keeps its order in the output"]


def batch(c, seed, n=SENTENCES, s=7, t=6):
    g = torch.Generator().manual_seed(seed + 100)
    src_len = torch.randint(1, s + 1, (n,), generator=g)
    src_len[0] = s
    src = torch.randint(3, c["vocab_size"], (n, s), generator=g)
    for i, k in enumerate(src_len.tolist()):
        src[i, k:] = 0
    tgt_len = torch.randint(1, t, (n,), generator=g)
    tgt_len[1] = t - 1
    tgt = torch.randint(3, c["seq2seq"]["tgt_vocab_size"], (n, t), generator=g)
    tgt_in = tgt.clone()
    tgt_in[:, 0] = 1
    tgt_out = torch.zeros_like(tgt)
    for i, k in enumerate(tgt_len.tolist()):
        tgt_out[i, :k] = tgt[i, 1:k + 1]
        tgt_out[i, k] = 2
        tgt_in[i, k + 1:] = 0
        tgt_out[i, k + 1:] = 0
    return src, src_len, tgt_in, tgt_out


TRAIN_STEPS = 150


def toy_batch(g, c, n=32, s=7):
    """Sources of lengths 1..s; targets the reversed sources, token x becoming x mod 22 + 3."""
    lens = torch.randint(1, s + 1, (n,), generator=g)
    src = torch.zeros(n, s, dtype=torch.int64)
    tgt_in = torch.zeros(n, s + 1, dtype=torch.int64)
    tgt_out = torch.zeros(n, s + 1, dtype=torch.int64)
    for i, k in enumerate(lens.tolist()):
        x = torch.randint(3, c["vocab_size"], (k,), generator=g)
        y = x.flip(0) % 22 + 3
        src[i, :k] = x
        tgt_in[i, 0] = 1
        tgt_in[i, 1:k + 1] = y
        tgt_out[i, :k] = y
        tgt_out[i, k] = 2
    return src, lens, tgt_in, tgt_out


def train(model, seed):
    """A few Adam steps on the toy task; returns the last loss."""
    g = torch.Generator().manual_seed(seed + 1000)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(TRAIN_STEPS):
        src, lens, tgt_in, tgt_out = toy_batch(g, model.cfg)
        loss = s2s.loss(model, model(src, lens, tgt_in), tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def write_case(out, name, c, seed):
    torch.manual_seed(seed)
    model = s2s.Seq2Seq(c)
    toy_loss = train(model, seed)
    model.zero_grad()
    src, src_len, tgt_in, tgt_out = batch(model.cfg, seed)
    logits = model(src, src_len, tgt_in)
    loss = s2s.loss(model, logits, tgt_out, label_smoothing=0.1)
    loss.backward()
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    sd = {k: v.detach().contiguous().clone() for k, v in rnnkit_models.renamed_state_dict(model).items()}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    pre = model.cfg["prefixes"]
    ref = {"src": src, "src_len": src_len, "tgt_in": tgt_in, "tgt_out": tgt_out,
           "logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for k, p in model.named_parameters():  # shared parameters appear once, under their first name
        head, rest = k.split(".", 1)
        ref["grad." + pre[head] + rest] = p.grad.contiguous()
    save_file(ref, os.path.join(d, "reference.safetensors"),
              metadata={"torch_version": torch.__version__, "label_smoothing": "0.1"})
    max_len = s2s.max_lengths(src_len.tolist(), MAX_LEN["a"], MAX_LEN["b"], MAX_LEN["cap"])
    g_out, g_scores = s2s.greedy(model, src, src_len, max_len)
    beams = [(b, a, min(b, 3), s2s.beam_search(model, src, src_len, b, max_len, a, min(b, 3))) for b, a in BEAMS]
    samples = s2s.sample(model, src, src_len, max_len, **SAMPLE)
    decode = {
        "torch_version": torch.__version__, "max_len": MAX_LEN, "max_lengths": max_len,
        "sample": SAMPLE,
        "greedy": [{"tokens": t, "score_bits": bits(s)} for t, s in zip(g_out, g_scores)],
        "beam_search": [{"beam": b, "alpha": a, "n_best": nb,
                         "outputs": [[{"tokens": t, "score_bits": bits(s), "raw_score_bits": bits(r)} for t, s, r in hyps]
                                     for hyps in out]} for b, a, nb, out in beams],
        "sampling": samples,
    }
    with open(os.path.join(d, "decode.json"), "w") as f:
        json.dump(decode, f, indent=1)
    if name in WITH_TOKENIZER:
        from tokenizers import Tokenizer
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        src_name, tgt_name = WITH_TOKENIZER[name]
        tok_path = os.path.join(root, "weights", "sentiment", "tokenizer.json")
        shutil.copyfile(tok_path, os.path.join(d, src_name))
        tgt_tok = None
        if tgt_name:
            tgt_path = os.path.join(root, "weights", "translation", "tokenizer.json")
            shutil.copyfile(tgt_path, os.path.join(d, tgt_name))
            tgt_tok = Tokenizer.from_file(tgt_path)
        out = s2s.translate_texts(model, Tokenizer.from_file(tok_path), TEXTS, tgt_tok=tgt_tok)
        with open(os.path.join(d, "translate.json"), "w") as f:
            json.dump([{"text": t, "translation": tr, "score_bits": bits(sc)} for t, (tr, sc) in zip(TEXTS, out)],
                      f, indent=1, ensure_ascii=False)
    lengths = [len(t) for t in g_out]
    return toy_loss, lengths, [[len(h[0]) for h in b] for b in beams[3][3]]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/seq2seq"
    for i, (name, c) in enumerate(CASES.items()):
        toy_loss, greedy, beams = write_case(out, name, c, seed=i)
        print(f"  {name}: toy loss {toy_loss:.3f}; greedy lengths {greedy}; beam lengths {beams}")
    print(f"make_seq2seq_golden: wrote {len(CASES)} model directories to {out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
