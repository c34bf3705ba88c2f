#!/usr/bin/env python3
"""The ONNX Runtime side of scripts/bench.sh: the same specs and the same JSON as `rnnkit bench`
and scripts/bench_pytorch.py, for the kinds a user can export to ONNX.

    python scripts/bench_onnxruntime.py --spec '{"kind": "rnn", "mode": "LSTM", "B": 1, "T": 32, "I": 128, "H": 256}'

kind "rnn": the torch.nn module scripts/bench_pytorch.py builds (LSTM/GRU/RNN, batch_first, f32)
exported once with `torch.onnx.export` (the TorchScript exporter, `dynamo=False`, opset 17; fixed
shapes, the spec's), cached under target/onnx/ by the spec, and run by an InferenceSession on the
CPU execution provider: intra-op threads = --threads, inter-op 1, sequential execution, graph
optimisations on (ORT_ENABLE_ALL), the output of every step fetched (the full sequence output,
as both other sides return it; at export, ORT's output is checked against the module's, max abs
difference < 1e-4). Timed as bench_pytorch.py times: warm-up runs, then the median and
minimum of at least 3 runs within --budget seconds.

Other kinds exit with status 3 and a reason on stderr (scripts/bench_compare.py leaves the cell
empty): the demo classifier has an LSTM with projections, which the TorchScript exporter refuses
("LSTMs with projections") and which torch.export cannot trace with packed sequences; see
docs/PERFORMANCE.md.
"""
import argparse
import hashlib
import json
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pytorch import rnn_flops, rnn_module, timeit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "target", "onnx")


def export_rnn(spec):
    """The spec's module as an ONNX file (cached by the spec), and its input (B, T, I)."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(CACHE, f"rnn-{key}.onnx")
    x = torch.randn(spec["B"], spec["T"], spec["I"])
    if not os.path.exists(path):
        mode = spec["mode"]
        m = rnn_module(spec)
        os.makedirs(CACHE, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x,), tmp, dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"])
        # The exported graph computes what the module computes (else the timing means nothing).
        with torch.inference_mode():
            want = m(x)[0].numpy()
        got = session(tmp, 1).run(["y"], {"x": x.numpy()})[0]
        diff = float(np.abs(got - want).max())
        if not diff < 1e-4:
            sys.exit(f"bench_onnxruntime: the exported {mode} differs from PyTorch's by {diff:.3g}")
        os.replace(tmp, path)  # atomically: a concurrent run never reads half a file
    return path, x.numpy()


def session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(spec, iters, warmup, budget, threads):
    if spec["kind"] != "rnn":
        print(f"bench_onnxruntime: kind {spec['kind']!r} has no ONNX Runtime side", file=sys.stderr)
        sys.exit(3)
    path, x = export_rnn(spec)
    s = session(path, threads)
    feed = {"x": x}
    med, lo, n = timeit(lambda: s.run(["y"], feed), warmup, iters, budget)
    flops = rnn_flops(spec["mode"], spec["B"], spec["T"], spec["I"], spec["H"], spec.get("layers", 1),
                      spec.get("bidirectional", False))
    return {"median_ms": med, "min_ms": lo, "iters": n, "threads": threads,
            "gflops": flops / (med * 1e-3) / 1e9}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    # Exporting runs PyTorch; it gets the same threads (not timed).
    torch.set_num_threads(args.threads)
    print(json.dumps(run(json.loads(args.spec), args.iters, args.warmup, args.budget, args.threads)))


if __name__ == "__main__":
    main()
