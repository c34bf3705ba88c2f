#!/usr/bin/env python3
"""The translation table of docs/EXPERIMENTS.md: BLEU and chrF (rnnkit eval --greedy, scored as
sacrebleu does) on the 1,000 held-out software messages, after training on the 3,000 pairs of
gettext/train_small.jsonl with the recipe (--recipe, default scripts/translation_recipe.json), for
  (a) weights/translation alone (pretrained in PyTorch on the Bible),
  (b) the same architecture from PyTorch's random initialisation, trained on the software messages
      in rnnkit with the recipe,
  (c) weights/translation fine-tuned on the software messages in rnnkit with the recipe,
  (d) the same recipe in PyTorch (scripts/seq2seq_finetune_reference.py), scored by rnnkit,
each of (b)-(d) per seed; plus (a) on the Bible test books. Also reports whether (c) and (d) wrote
identical weights (the tensors' bits).

--jobs N runs N seeds at once, each run (rnnkit and PyTorch alike) with one libtorch thread
(OMP_NUM_THREADS=1): on 2 cores that is faster than one seed at a time on 2 threads. The numbers
do not depend on it only as far as libtorch's results do not depend on the thread count; (c) and
(d) always run with the same count, so their comparison holds either way.

Usage: .venv/bin/python scripts/translation_experiments.py [--seeds 0 1 2] [--jobs 1]
       [--out runs/translation_experiments] [--rows a b c d] [--recipe FILE]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnkit_seq2seq as s2s  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, ".venv", "bin", "python")
RNNKIT = os.path.join(ROOT, "target", "release", "rnnkit")
TEST = os.path.join(ROOT, "data", "translation", "gettext", "test.jsonl")
VALID = os.path.join(ROOT, "data", "translation", "gettext", "valid.jsonl")
BIBLE_TEST = os.path.join(ROOT, "data", "translation", "bible", "test.jsonl")


ENV = dict(os.environ)  # --jobs > 1 sets OMP_NUM_THREADS=1 here for every run


def sh(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, cwd=ROOT, env=ENV, **kw)


def evaluate(model, data=TEST, greedy=True):
    # Greedy: chosen on the validation split, where it beats beam 5 (each row's valid_* numbers).
    out = sh([RNNKIT, "eval", "--model", model, "--data", data, "--json", "--device", "cpu"]
             + (["--greedy"] if greedy else ["--beam", "5", "--alpha", "0.6"]),
             capture_output=True, text=True).stdout
    v = json.loads(out)
    return {"bleu": v["bleu"], "chrf": v["chrf"], "loss": v["loss"]}


def with_valid(model, r):
    """r plus the validation BLEU of greedy decoding and of beam 5 (alpha 0.6)."""
    r["valid_bleu_greedy"] = evaluate(model, VALID)["bleu"]
    r["valid_bleu_beam5"] = evaluate(model, VALID, greedy=False)["bleu"]
    return r


def recipe(path, seed, model, out):
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(model=model, out=out, seed=seed, device="cpu", log_every=0)
    return cfg


INIT_LOCK = threading.Lock()  # torch's global generator: one initialisation at a time


def random_init(seed, path):
    """weights/translation's architecture with PyTorch's initialisation after manual_seed(seed)."""
    src = os.path.join(ROOT, "weights", "translation")
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    with INIT_LOCK:
        torch.manual_seed(seed)
        model = s2s.Seq2Seq(cfg)
    os.makedirs(path, exist_ok=True)
    save_file(s2s.file_state_dict(model), os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(os.path.join(src, name), os.path.join(path, name))


def run_seed(args, seed):
    """Rows b-d of one seed: {row: result, "c_equals_d_bitwise": bool}."""
    out = {}
    for row in ("b", "c", "d"):
        if row not in args.rows:
            continue
        d = os.path.join(args.out, f"{row}_{seed}")
        shutil.rmtree(d, ignore_errors=True)
        model = "weights/translation"
        if row == "b":
            model = os.path.join(args.out, f"init_{seed}")
            shutil.rmtree(model, ignore_errors=True)
            random_init(seed, model)
        cfg_path = os.path.join(args.out, f"{row}_{seed}.json")
        with open(cfg_path, "w") as f:
            json.dump(recipe(args.recipe, seed, model, d), f)
        start = time.time()
        if row == "d":
            sh([PY, "scripts/seq2seq_finetune_reference.py", "--config", cfg_path])
            for name in ("config.json", "tokenizer.json"):
                shutil.copyfile(os.path.join(model, name), os.path.join(d, name))
        else:
            sh([RNNKIT, "finetune-seq2seq", "--config", cfg_path], capture_output=True)
        r = with_valid(d, evaluate(d))
        r["train_minutes"] = (time.time() - start) / 60
        out[row] = r
        print(row, seed, r, flush=True)
    if "c" in args.rows and "d" in args.rows:
        a, b = (load_file(os.path.join(args.out, f"{r}_{seed}", "model.safetensors")) for r in ("c", "d"))
        out["c_equals_d_bitwise"] = a.keys() == b.keys() and all(
            torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)) for k in a)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=["a", "b", "c", "d"])
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "translation_experiments"))
    ap.add_argument("--jobs", type=int, default=1, help="seeds run at once, each on one thread")
    ap.add_argument("--recipe", default=os.path.join(ROOT, "scripts", "translation_recipe.json"),
                    help="the fine-tuning config of rows b-d (model, out and seed are set per run)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.jobs > 1:
        ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(args.recipe) as f:
        results = {"seeds": args.seeds, "torch": torch.__version__, "recipe": json.load(f)}
    t0 = time.time()
    if "a" in args.rows:
        results["a"] = with_valid("weights/translation", evaluate("weights/translation"))
        results["a_bible_test"] = evaluate("weights/translation", BIBLE_TEST)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for per_seed in pool.map(lambda seed: run_seed(args, seed), args.seeds):
            for key, value in per_seed.items():
                results.setdefault(key, []).append(value)
    results["minutes"] = (time.time() - t0) / 60
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
