#!/usr/bin/env bash
# Idempotent set-up: a project-local virtual environment with the pinned Python packages
# (scripts/requirements.txt). tch finds libtorch inside it through .cargo/config.toml.
# A second run on a set-up machine only checks the pins and returns in seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/scripts/requirements.txt"
stamp="$venv/.rnnkit-requirements"

say() { printf '[setup] %s\n' "$*"; }

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { say "error: $python not found; install Python 3.10+"; exit 1; }
command -v cargo >/dev/null || { say "error: cargo not found; install Rust (rustup)"; exit 1; }

if [ -f "$stamp" ] && cmp -s "$stamp" "$req" && [ -x "$venv/bin/python" ]; then
  say "venv up to date ($venv)"
else
  if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment $venv with $($python --version 2>&1)"
    "$python" -m venv "$venv"
  fi
  say "installing pinned packages from $req (torch is a ~4.4 GB download the first time)"
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q -r "$req"; then
    say "error: pip could not install $req."
    say "       Is the Python package registry reachable? (pip's message is above.)"
    exit 2
  fi
  cp "$req" "$stamp"
fi

# libtorch as tch sees it: the torch package's own directory.
libtorch=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
[ -f "$libtorch/lib/libtorch_cpu.so" ] || { say "error: $libtorch/lib/libtorch_cpu.so missing"; exit 3; }
# A fixed path for .cargo/config.toml, whatever the Python version.
ln -sfn "$libtorch" "$venv/libtorch"
say "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') at $libtorch"
