#!/usr/bin/env python3
"""The path a user takes when pretraining outgrows one process: pretrain a (tiny) translation model
with PyTorch's distributed data parallel, two processes under torchrun with the gloo backend on the
CPU, then load the checkpoint in rnnkit, fine-tune it and translate with it. Run by scripts/test.sh.

    .venv/bin/python scripts/ddp_smoke.py [--out target/ddp_smoke]

Data: 96 training and 16 validation pairs of English and Spanish number words ("two one four" /
"dos uno cuatro"), written here, with weights/translation's tokenizer. Checks: both ranks ran
(world size 2 in pretrain_log.json) and ended with the same weights (their sha256 agree); the
directory rank 0 wrote loads in `rnnkit finetune-seq2seq`, which trains on it, and `rnnkit
translate` translates with the result. Exits 1 on a failed check.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, ".venv", "bin", "python")
RNNKIT = os.path.join(ROOT, "target", "release", "rnnkit")
WORDS = [("one", "uno"), ("two", "dos"), ("three", "tres"), ("four", "cuatro"), ("five", "cinco"),
         ("six", "seis"), ("seven", "siete"), ("eight", "ocho"), ("nine", "nueve"), ("ten", "diez")]


def pairs(n, rng):
    out = []
    for _ in range(n):
        ws = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        out.append({"src": " ".join(e for e, _ in ws), "tgt": " ".join(s for _, s in ws)})
    return out


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, **kw)
    if r.returncode != 0:
        sys.exit(f"ddp_smoke: FAILED: {cmd[0]} exited with {r.returncode}")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "ddp_smoke"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    data, model, tuned = (os.path.join(args.out, d) for d in ("data", "pretrained", "finetuned"))
    rng = random.Random(0)
    write_jsonl(os.path.join(data, "bible", "train.jsonl"), pairs(96, rng))
    write_jsonl(os.path.join(data, "bible", "valid.jsonl"), pairs(16, rng))
    shutil.copyfile(os.path.join(ROOT, "weights", "translation", "tokenizer.json"), os.path.join(data, "tokenizer.json"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run([os.path.join(ROOT, ".venv", "bin", "torchrun"), "--standalone", "--nproc_per_node", "2",
         "scripts/pretrain_translation.py", "--data", data, "--out", model, "--max-steps", "12", "--minutes", "10",
         "--dim", "32", "--batch-size", "8", "--threads", "1", "--max-length", "32", "--bleu-sentences", "8"], env=env)
    with open(os.path.join(model, "pretrain_log.json")) as f:
        log = json.load(f)
    shas = log.get("replica_sha256", [])
    steps = log["epochs"][-1]["steps"]
    if log.get("world_size") != 2 or len(shas) != 2 or shas[0] != shas[1]:
        sys.exit(f"ddp_smoke: FAILED: world size {log.get('world_size')}, replica sha256 {shas}")
    if steps != 12:
        sys.exit(f"ddp_smoke: FAILED: {steps} steps, expected 12")
    print(f"ddp_smoke: 2 ranks (gloo), {steps} steps of 2 x 8 pairs, identical weights (sha256 {shas[0][:16]}...)")
    cfg = {"model": model, "train": os.path.join(data, "bible", "train.jsonl"),
           "valid": os.path.join(data, "bible", "valid.jsonl"), "out": tuned, "epochs": 2, "batch_size": 16,
           "device": "cpu", "save_pth": False}
    cfg_path = os.path.join(args.out, "finetune.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    report = json.loads(run([RNNKIT, "finetune-seq2seq", "--config", cfg_path], capture_output=True, text=True).stdout)
    if report["steps"] != 12:
        sys.exit(f"ddp_smoke: FAILED: rnnkit took {report['steps']} steps, expected 12")
    out = run([RNNKIT, "translate", "--model", tuned, "--greedy", "--device", "cpu"], input="two one four\n",
              capture_output=True, text=True).stdout
    print(f"ddp_smoke: rnnkit fine-tuned it ({report['steps']} steps, valid loss "
          f"{report['valid'][0][1]:.3f} -> {report['valid'][-1][1]:.3f}) and translates: {out.strip()}")
    print("ddp_smoke: ok")


if __name__ == "__main__":
    main()
