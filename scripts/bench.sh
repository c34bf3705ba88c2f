#!/usr/bin/env bash
# rnnkit against PyTorch on the same libtorch, side by side in one run (interleaved processes):
# recurrent inference (with ONNX Runtime as a third side: torch.onnx.export's graphs), a training
# step, end-to-end prediction (and the cost of batch-invariant answers), cold start, peak RSS,
# then the translation and speech rows. Like for
# like: every process on both sides gets --threads THREADS, the end-to-end row batches both
# sides alike (length-sorted batches of 32), and each pair alternates which side runs first.
# Usage: scripts/bench.sh [MODEL_DIR]   (default: the demo's fine-tuned classifier, if present)
# Environment: THREADS (2), ROUNDS (5), BUDGET seconds per timing (2), SENTENCES (1000);
# SMOKE=1: tiny sizes, to check that both sides run and the table prints (times meaningless).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh >/dev/null
cargo build --release --bin rnnkit 2>&1 | tail -1
model=${1:-runs/demo/classifier}
[ -f "$model/config.json" ] || model=
exec .venv/bin/python scripts/bench_compare.py $model
