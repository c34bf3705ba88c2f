#!/usr/bin/env python3
"""Export a PyTorch model of rnnkit's families to an rnnkit model directory, with a reference file
that lets `rnnkit parity` prove Rust computes the same logits.

As a library (your own trained module, any attribute names):
    from rnnkit_export import export
    export(model, config, "out_dir", ids, lengths, tokenizer_path="tokenizer.json")
  `config` is the config.json dict (scripts/rnnkit_models.py documents it; map your attribute
  names with "prefixes": {"embedding": "emb.", "encoder": "rnn.", "head": "fc."}).
  The model's forward must take (ids (N, L) int64, lengths (N,) int64) and return logits.

From the command line (a randomly initialised model of a given config, for tests and demos):
    python scripts/rnnkit_export.py --config cfg.json --out DIR [--seed 0] [--batch 5] [--pth]
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_models  # noqa: E402


def export(model, config, out_dir, ids, lengths, tokenizer_path=None, also_pth=False, state_dict=None):
    os.makedirs(out_dir, exist_ok=True)
    model.eval()
    with torch.no_grad():
        logits = model(ids, lengths)
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v.detach().contiguous().clone() for k, v in sd.items()}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    if also_pth:
        torch.save(sd, os.path.join(out_dir, "model.pth"))
    if tokenizer_path:
        with open(tokenizer_path, "rb") as src, open(os.path.join(out_dir, "tokenizer.json"), "wb") as dst:
            dst.write(src.read())
    ref = {"ids": ids.contiguous(), "lengths": lengths.to(torch.int64).contiguous(), "logits": logits.contiguous()}
    save_file(ref, os.path.join(out_dir, "reference.safetensors"),
              metadata={"torch_version": torch.__version__, "what": "logits of model(ids, lengths) in eval mode"})
    return logits


def random_inputs(cfg, batch, seq_len, seed):
    g = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=g)
    lengths[0] = seq_len
    ids = torch.randint(1, cfg["vocab_size"], (batch, seq_len), generator=g)
    pad = cfg.get("padding_idx", 0)
    for i, n in enumerate(lengths.tolist()):
        ids[i, n:] = pad if pad is not None else 0
    return ids, lengths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config.json of the model to create")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--seq-len", type=int, default=9)
    ap.add_argument("--pth", action="store_true", help="also write model.pth")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    torch.manual_seed(args.seed)
    model = rnnkit_models.build(cfg)
    ids, lengths = random_inputs(cfg, args.batch, args.seq_len, args.seed)
    export(model, cfg, args.out, ids, lengths, also_pth=args.pth,
           state_dict=rnnkit_models.renamed_state_dict(model))
    print(f"rnnkit_export: wrote {args.out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
