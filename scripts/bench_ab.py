"""Two rnnkit binaries side by side on `scripts/bench_compare.py`'s recurrent and training-step
specs, interleaved process by process, alternating which runs first: a before/after check that a
change costs no speed. Prints, per spec, both medians and the median of the per-pair ratios
(before ms / after ms; above 1 means the new binary is faster).

    .venv/bin/python scripts/bench_ab.py OLD_RNNKIT NEW_RNNKIT   # env: THREADS (2), PAIRS (5), BUDGET (1)
"""

import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))

THREADS = os.environ.get("THREADS", "2")
PAIRS = int(os.environ.get("PAIRS", "5"))
BUDGET = os.environ.get("BUDGET", "1")

SPECS = [
    {"kind": "rnn", "mode": m, "B": 1, "T": 32, "I": 128, "H": 256} for m in ("LSTM", "GRU", "RNN_TANH")
] + [
    {"kind": "rnn", "mode": m, "B": 32, "T": 64, "I": 128, "H": 256, "layers": 2} for m in ("LSTM", "GRU", "RNN_TANH")
] + [
    {"kind": "rnn", "mode": "LSTM", "B": 8, "T": 256, "I": 128, "H": 128, "bidirectional": True},
    {"kind": "rnn", "mode": "LSTM", "B": 64, "T": 32, "I": 512, "H": 512},
    {"kind": "rnn", "mode": "GRU", "B": 64, "T": 256, "I": 128, "H": 128, "layers": 2, "bidirectional": True},
    {"kind": "train_step", "B": 32, "T": 64, "V": 8000, "E": 128, "H": 256},
]


def one(binary, spec):
    out = subprocess.run(
        [binary, "bench", "--spec", json.dumps(spec), "--threads", THREADS, "--budget", BUDGET],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["median_ms"]


def name(spec):
    if spec["kind"] == "train_step":
        return f"train step B={spec['B']} T={spec['T']} H={spec['H']}"
    return (f"{spec['mode']} B={spec['B']} T={spec['T']} H={spec['H']} L={spec.get('layers', 1)}"
            + (" bi" if spec.get("bidirectional") else ""))


def main():
    old, new = sys.argv[1], sys.argv[2]
    print(f"{'configuration':<34} {'before ms':>10} {'after ms':>10} {'ratio':>6} {'pairs':>11}")
    for spec in SPECS:
        a, b, ratios = [], [], []
        for k in range(PAIRS):
            if k % 2 == 0:
                x = one(old, spec); y = one(new, spec)
            else:
                y = one(new, spec); x = one(old, spec)
            a.append(x); b.append(y); ratios.append(x / y)
        print(f"{name(spec):<34} {statistics.median(a):10.3f} {statistics.median(b):10.3f} "
              f"{statistics.median(ratios):6.2f} {min(ratios):5.2f}-{max(ratios):4.2f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main()
