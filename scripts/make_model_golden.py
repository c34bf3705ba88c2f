#!/usr/bin/env python3
"""Model directories + PyTorch reference logits for rnnkit's model-family parity tests.

Writes OUT_DIR/<case>/{config.json, model.safetensors, reference.safetensors} with
scripts/rnnkit_export.py, one case per pooling and family variant. Run by scripts/test.sh:
  .venv/bin/python scripts/make_model_golden.py tests/golden/models
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_export  # noqa: E402
import rnnkit_models  # noqa: E402


def cfg(family, mode="LSTM", pooling="last", bidirectional=False, num_layers=1, proj_size=0, tie=False,
        prefixes=None, hidden=12, emb=8):
    c = {"family": family, "vocab_size": 40, "embedding_dim": emb, "padding_idx": 0,
         "encoder": {"mode": mode, "input_size": emb, "hidden_size": hidden, "num_layers": num_layers,
                     "bidirectional": bidirectional, "proj_size": proj_size},
         "dropout": 0.3, "pooling": pooling, "attention_size": 6, "tie_weights": tie}
    if family == "classifier":
        c["num_classes"] = 3
        c["labels"] = ["neg", "neu", "pos"]
    if prefixes:
        c["prefixes"] = prefixes
    return c


CASES = {
    "clf_lstm_last": cfg("classifier"),
    "clf_lstm_bi_last_l2": cfg("classifier", bidirectional=True, num_layers=2),
    "clf_gru_mean": cfg("classifier", mode="GRU", pooling="mean"),
    "clf_gru_bi_max": cfg("classifier", mode="GRU", pooling="max", bidirectional=True),
    "clf_lstm_concat_l2": cfg("classifier", pooling="concat", num_layers=2),
    "clf_lstm_bi_attention": cfg("classifier", pooling="attention", bidirectional=True),
    "clf_rnn_relu_attention": cfg("classifier", mode="RNN_RELU", pooling="attention"),
    "clf_lstm_proj_concat": cfg("classifier", pooling="concat", proj_size=5),
    "clf_user_prefixes": cfg("classifier", mode="GRU", pooling="mean",
                             prefixes={"embedding": "emb.", "encoder": "rnn.", "head": "fc."}),
    "lm_lstm_tied": cfg("language_model", tie=True, hidden=8),
    "lm_gru_l2": cfg("language_model", mode="GRU", num_layers=2),
}


TEXTS = [
    "A gripping, funny movie -- really!",
    "the plot is thin and the acting is worse .",
    "",
    "   ",
    "an unexpectedly moving portrait of grief , told with restraint and wit .",
    "Bad. Bad. Bad.",
    "il était une fois… naïve café crème 🎬",
    "x " * 300,
    "nothing much happens , but it happens beautifully",
    "12 angry men , 2 hours , 0 regrets",
]


def tokenizer_case(out):
    """A classifier over the embedded tokenizer: probabilities PyTorch computes for raw texts,
    one text at a time (so Rust's batching cannot hide behind the reference's)."""
    from tokenizers import Tokenizer
    import json
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tok_path = os.path.join(root, "weights", "sentiment", "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    c = cfg("classifier", pooling="attention", bidirectional=True, hidden=16, emb=12)
    c.update(vocab_size=tok.get_vocab_size(), max_length=64, labels=["negative", "neutral", "positive"])
    torch.manual_seed(42)
    model = rnnkit_models.build(c)
    model.eval()
    d = os.path.join(out, "clf_tokenizer_attention")
    ids, lengths = rnnkit_export.random_inputs(c, batch=4, seq_len=7, seed=42)
    rnnkit_export.export(model, c, d, ids, lengths, tokenizer_path=tok_path,
                         state_dict=rnnkit_models.renamed_state_dict(model))
    preds = []
    with torch.no_grad():
        for text in TEXTS:
            t_ids = tok.encode(text, add_special_tokens=False).ids[: c["max_length"]] or [c["padding_idx"]]
            logits = model(torch.tensor([t_ids]), torch.tensor([len(t_ids)]))
            preds.append({"text": text, "ids": t_ids, "probabilities": torch.softmax(logits, -1)[0].tolist()})
    with open(os.path.join(d, "predictions.json"), "w") as f:
        json.dump({"torch_version": torch.__version__, "predictions": preds}, f, indent=1)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/models"
    tokenizer_case(out)
    for i, (name, c) in enumerate(CASES.items()):
        torch.manual_seed(i)
        model = rnnkit_models.build(c)
        ids, lengths = rnnkit_export.random_inputs(c, batch=5, seq_len=9, seed=i)
        rnnkit_export.export(model, c, os.path.join(out, name), ids, lengths,
                             state_dict=rnnkit_models.renamed_state_dict(model))
    print(f"make_model_golden: wrote {len(CASES) + 1} model directories to {out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
