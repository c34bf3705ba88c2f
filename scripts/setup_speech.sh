#!/usr/bin/env bash
# What re-making weights/speech needs beyond scripts/setup.sh: espeak-ng 1.51 (Debian bookworm's
# package, pinned) to synthesise training speech (scripts/synth_speech.py). Installing needs root
# (or sudo). The demo and the tests do not need it: they use the committed weights/speech.
set -euo pipefail
version=1.51+dfsg-10+deb12u2
say() { printf '[setup_speech] %s\n' "$*"; }
if command -v espeak-ng >/dev/null && dpkg-query -W -f='${Version}' espeak-ng 2>/dev/null | grep -qx "$version"; then
  say "espeak-ng $version present"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { say "error: installing espeak-ng needs root or sudo"; exit 2; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "espeak-ng=$version"; then
  say "apt-get install failed; refreshing the package lists once"
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "espeak-ng=$version" || {
    say "error: could not install espeak-ng=$version (is the Debian bookworm mirror reachable?)"; exit 2; }
fi
say "espeak-ng $(espeak-ng --version | head -1)"
