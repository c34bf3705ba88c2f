#!/usr/bin/env python3
"""The experiment table of docs/EXPERIMENTS.md: MR test accuracy, mean ± std over seeds, of
  (a) TF-IDF (1-2 grams) + logistic regression            scripts/baseline_tfidf.py
  (b) the same recurrent classifier trained from scratch in Rust (random init, all layers
      trainable from the start)                            rnnkit finetune
  (c) the model pretrained in PyTorch (weights/sentiment/: LM, then LM + auxiliary sentiment objective),
      fine-tuned in Rust with the demo's recipe
                                                          rnnkit finetune --config scripts/demo_finetune.json
  (d) the same recipe in PyTorch                          scripts/finetune_reference.py
and, with --only ... c0, the ablation
  (c0) phase 1's weights alone (the language model before the auxiliary sentiment objective, written by
      pretrain.py to data/pretrain_phase1), fine-tuned in Rust with the same recipe
Each neural run selects its best epoch on the validation split and is scored once on test.

    .venv/bin/python scripts/experiments.py [--seeds 0 1 2] [--out runs/experiments] [--only a b c d c0]

--valid-only MODEL_DIR...: fine-tune each model directory with the recipe and print its mean best
*validation* accuracy, never touching test (how pretrain.py's phase-2 step count was chosen).

--cv-soft-scale S...: 5-fold cross-validation of the recipe (seed 0) on MR train + valid, never
test, with the training rows' soft targets at each scale S (prepare_data.py's SOFT_SCALE; 0: hard
labels): per scale, the accuracy over all 9,509 held-out sentences of the last epoch and of each
fold's best epoch (how SOFT_SCALE was chosen). Ratings come from data/raw/mr.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
RNNKIT = os.path.join(ROOT, "target", "release", "rnnkit")


def sh(cmd, capture=True):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=capture, text=True)
    return r.stdout if capture else ""


def rust_finetune(cfg_path, model, out, seed):
    """Fine-tunes; returns the best of its epochs' validation accuracies (metrics.jsonl). A rerun
    replaces this script's own earlier run in `out` (rnnkit refuses to start over one)."""
    shutil.rmtree(out, ignore_errors=True)
    sh([RNNKIT, "finetune", "--config", cfg_path, "--model", model, "--out", out, "--seed", str(seed),
        "--device", "cpu"], capture=False)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        epochs = [json.loads(line) for line in f if '"valid"' in line]
    return max(e["valid"]["accuracy"] for e in epochs)


def rust_run(cfg_path, model, out, seed):
    rust_finetune(cfg_path, model, out, seed)
    m = json.loads(sh([RNNKIT, "eval", "--model", os.path.join(out, "best"), "--data", "data/mr/test.jsonl",
                       "--device", "cpu", "--json"]))
    return m["accuracy"]


def cross_validate_soft_scale(recipe, scales, out, folds=5):
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import prepare_data  # noqa: E402
    rating = prepare_data.first_ratings(
        prepare_data.read_mr(os.path.join(ROOT, "data", "raw", "mr", prepare_data.MR_FILE)))
    rows = []
    for split in ("train", "valid"):
        with open(os.path.join(ROOT, "data", "mr", f"{split}.jsonl")) as f:
            rows += [{"text": d["text"], "label": d["label"]} for d in map(json.loads, f)]
    order = list(range(len(rows)))
    random.Random(42).shuffle(order)
    with open(recipe) as f:
        rcfg = json.load(f)
    table = {}
    for scale in scales:
        last, best, n = 0.0, 0.0, 0
        for k in range(folds):
            held = set(order[k::folds])
            d = os.path.join(out, f"cv_s{scale:g}_f{k}")
            os.makedirs(d, exist_ok=True)
            train = [dict(r, probs=prepare_data.soft_target(rating[r["text"]], scale)) if scale > 0 else r
                     for i, r in enumerate(rows) if i not in held]
            for name, items in (("train", train), ("valid", [rows[i] for i in sorted(held)])):
                with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
                    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in items)
            cfg_path = os.path.join(d, "finetune.json")
            with open(cfg_path, "w") as f:
                json.dump(dict(rcfg, train=os.path.join(d, "train.jsonl"), valid=os.path.join(d, "valid.jsonl")), f)
            rust_finetune(cfg_path, "weights/sentiment", os.path.join(d, "run"), 0)
            with open(os.path.join(d, "run", "metrics.jsonl")) as f:
                accs = [json.loads(line)["valid"]["accuracy"] for line in f if '"valid"' in line]
            size = len(held)
            last, best, n = last + accs[-1] * size, best + max(accs) * size, n + size
            print(json.dumps({"scale": scale, "fold": k, "valid_accuracies": accs}), flush=True)
        table[scale] = (last / n, best / n)
    print(f"\n| soft-target scale | last epoch | best epoch |\n|---|---|---|")
    for scale, (last, best) in table.items():
        print(f"| {scale:g} | {100 * last:.2f} % | {100 * best:.2f} % |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "experiments"))
    ap.add_argument("--only", nargs="+", default=["a", "b", "c", "d"], choices=["a", "b", "c", "d", "c0"])
    ap.add_argument("--phase1", default=os.path.join(ROOT, "data", "pretrain_phase1"))
    ap.add_argument("--valid-only", nargs="+", metavar="MODEL_DIR")
    ap.add_argument("--cv-soft-scale", nargs="+", type=float, metavar="S")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    recipe = os.path.join(ROOT, "scripts", "demo_finetune.json")
    if args.cv_soft_scale:
        cross_validate_soft_scale(recipe, args.cv_soft_scale, args.out)
        return
    if args.valid_only:
        for model in args.valid_only:
            accs = [rust_finetune(recipe, model, os.path.join(args.out, f"v_{os.path.basename(model)}_{seed}"), seed)
                    for seed in args.seeds]
            print(json.dumps({"model": model, "seeds": args.seeds, "best_valid": accs,
                              "mean": statistics.fmean(accs)}), flush=True)
        return
    with open(recipe) as f:
        rcfg = json.load(f)
    # (b): the recipe without the transfer-learning parts, all layers trainable from step one.
    scratch_cfg = dict(rcfg, gradual_unfreezing=False, discriminative_factor=None)
    scratch_path = os.path.join(args.out, "scratch_finetune.json")
    with open(scratch_path, "w") as f:
        json.dump(scratch_cfg, f, indent=1)
    results = {k: [] for k in args.only}
    if "a" in args.only:
        line = sh([PY, "scripts/baseline_tfidf.py", "--seeds", *map(str, args.seeds)]).strip().splitlines()[-1]
        results["a"] = json.loads(line)["test_accuracies"]
    for seed in args.seeds:
        if "b" in args.only:
            init = os.path.join(args.out, f"scratch_init_{seed}")
            sh([PY, "scripts/rnnkit_export.py", "--config", "weights/sentiment/config.json", "--out", init, "--seed", str(seed)])
            shutil.copy(os.path.join(ROOT, "weights", "sentiment", "tokenizer.json"), init)
            results["b"].append(rust_run(scratch_path, init, os.path.join(args.out, f"b_scratch_{seed}"), seed))
        if "c" in args.only:
            results["c"].append(rust_run(recipe, "weights/sentiment", os.path.join(args.out, f"c_rnnkit_{seed}"), seed))
        if "c0" in args.only:
            results["c0"].append(rust_run(recipe, args.phase1, os.path.join(args.out, f"c0_phase1_{seed}"), seed))
        if "d" in args.only:
            out = os.path.join(args.out, f"d_pytorch_{seed}")
            line = sh([PY, "scripts/finetune_reference.py", "--config", recipe, "--out", out, "--seed", str(seed),
                       "--test", "data/mr/test.jsonl", "--select-best"]).strip().splitlines()[-1]
            results["d"].append(json.loads(line)["test"]["accuracy"])
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    names = {"a": "(a) TF-IDF 1-2 grams + logistic regression", "b": "(b) same LSTM classifier from scratch, rnnkit",
             "c": "(c) pretrained (weights/sentiment/) and fine-tuned in rnnkit", "d": "(d) same recipe in PyTorch",
             "c0": "(c0) phase 1 only (LM, no auxiliary objective), fine-tuned in rnnkit"}
    print(f"\n| model | MR test accuracy (mean ± std, seeds {args.seeds}) | runs |\n|---|---|---|")
    for k, accs in results.items():
        if not accs:
            continue
        mean, std = statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)
        print(f"| {names[k]} | {100 * mean:.2f} ± {100 * std:.2f} % | {', '.join(f'{100 * a:.2f}' for a in accs)} |")


if __name__ == "__main__":
    main()
