#!/usr/bin/env bash
# The main job on what exists so far: a recurrent layer built and run by PyTorch is loaded into
# rnnkit and run again; the two outputs are compared bit for bit.
# Usage: scripts/demo.sh [--device auto|cpu|cuda[:N]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
device=auto
if [ "${1:-}" = "--device" ]; then device=${2:?--device needs a value}; fi

scripts/setup.sh
echo "== build"
cargo build --release --example golden_parity
./target/release/rnnkit doctor
echo "== PyTorch builds and runs the reference layers"
.venv/bin/python scripts/make_golden.py tests/golden/rnn
for case in lstm_big_b32_t64_h256 gru_l3_bi_bf_init_f64 lstm_proj_l3_bi_init_train rnn_relu_default; do
  ./target/release/examples/golden_parity "tests/golden/rnn/$case.safetensors" --device "$device"
done
