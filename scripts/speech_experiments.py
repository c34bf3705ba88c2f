#!/usr/bin/env python3
"""The speech table of docs/EXPERIMENTS.md: on the human test half of the asterisk recordings
(data/speech/asterisk/test.jsonl, 275 utterances; fetch_speech_data.py), greedy decoding, WER and
CER overall and on the digits-and-numbers subset, for
  (a) weights/speech alone (pretrained in PyTorch on synthetic speech)
  (b) the same model trained from scratch in rnnkit on the adaptation half (from_scratch)
  (c) weights/speech fine-tuned in rnnkit on the adaptation half (scripts/speech_recipe.json)
  (d) the same fine-tuning in PyTorch (scripts/ctc_finetune_reference.py); its weights are
      compared with (c)'s bit for bit
for seeds 0, 1, 2 (b-d). Writes runs/speech_experiments/results.json and prints the table.
  .venv/bin/python scripts/speech_experiments.py [--seeds 0 1 2] [--epochs N]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNNKIT = os.path.join(ROOT, "target/release/rnnkit")
PY = os.path.join(ROOT, ".venv/bin/python")
TEST = "data/speech/asterisk/test.jsonl"


def run(cmd):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return p.stdout


def evaluate(model):
    return json.loads(run([RNNKIT, "eval", "--model", model, "--data", TEST, "--device", "cpu", "--json"]))


def row(m):
    n = m["numbers"] or {}
    return {"wer": m["all"]["wer"], "cer": m["all"]["cer"], "numbers_wer": n.get("wer"), "numbers_cer": n.get("cer"),
            "loss": m["loss"]}


def same_bits(a, b):
    x, y = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k].view(torch.int32), y[k].view(torch.int32)) for k in x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--out", default="runs/speech_experiments")
    a = ap.parse_args()
    run([PY, "scripts/fetch_speech_data.py"])
    out = os.path.join(ROOT, a.out)
    os.makedirs(out, exist_ok=True)
    recipe = json.load(open(os.path.join(ROOT, "scripts/speech_recipe.json")))
    if a.epochs:
        recipe["epochs"] = a.epochs
    results = {"recipe": recipe, "a": row(evaluate("weights/speech")), "b": [], "c": [], "d": [], "c_equals_d_bitwise": []}
    print("a", results["a"], flush=True)
    for seed in a.seeds:
        for kind in ("b", "c", "d"):
            d = os.path.join(out, f"{kind}_seed{seed}")
            subprocess.run(["rm", "-rf", d])
            cfg = dict(recipe, seed=seed, out=d, device="cpu")
            if kind == "b":
                cfg["from_scratch"] = True
            path = os.path.join(out, f"{kind}_seed{seed}.json")
            json.dump(cfg, open(path, "w"))
            if kind == "d":
                run([PY, "scripts/ctc_finetune_reference.py", "--config", path])
            else:
                run([RNNKIT, "finetune-ctc", "--config", path])
            r = dict(row(evaluate(d)), seed=seed)
            results[kind].append(r)
            print(kind, r, flush=True)
        results["c_equals_d_bitwise"].append(same_bits(os.path.join(out, f"c_seed{seed}"), os.path.join(out, f"d_seed{seed}")))
        json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)

    def ms(rows, k):
        v = [r[k] for r in rows if r[k] is not None]
        return f"{100 * statistics.mean(v):6.2f} ± {100 * (statistics.stdev(v) if len(v) > 1 else 0):5.2f}"
    print(f"\n{'(human test half, 275 utterances; %, mean ± sd over seeds)':<44} {'WER':>15} {'CER':>15} {'numbers WER':>15} {'numbers CER':>15}")
    print(f"{'(a) pretrained on synthetic speech':<44} " + " ".join(f"{100 * results['a'][k]:15.2f}" for k in ("wer", "cer", "numbers_wer", "numbers_cer")))
    for kind, name in (("b", "(b) from scratch on the adaptation half"), ("c", "(c) pretrained + fine-tuned in rnnkit"),
                       ("d", "(d) the same in PyTorch")):
        print(f"{name:<44} " + " ".join(f"{ms(results[kind], k):>15}" for k in ("wer", "cer", "numbers_wer", "numbers_cer")))
    print("(c) == (d) bitwise:", results["c_equals_d_bitwise"])


if __name__ == "__main__":
    main()
