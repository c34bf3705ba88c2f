#!/usr/bin/env python3
"""Runs rnnkit and PyTorch on the same benchmark specs, interleaved process by process (ROUNDS
pairs: rnnkit then PyTorch, PyTorch then rnnkit, and so on), and prints one table with medians
over the rounds, ratios (PyTorch time / rnnkit time: > 1 means rnnkit is faster; the median of
the per-pair ratios and their range), rnnkit's best GFLOP/s and its share of the best sgemm
sample of the same run and of the cores' multiply-add peak (`rnnkit bench` kind "fma":
registers only, no memory). The recurrent-kernel rows add ONNX Runtime as a third side
(scripts/bench_onnxruntime.py: the same torch module exported with torch.onnx.export), in rounds
whose order rotates over the three, and their ratio is against the faster of the two peers.
Called by scripts/bench.sh.

Like for like: both sides get the same --threads; the end-to-end row batches both sides the
same way (see PREDICT_POLICY); every pair, the cold-start pairs included, alternates which side
runs first.

Environment: THREADS (2), ROUNDS (5), BUDGET seconds per timing (2), SENTENCES for the end-to-end
row (1000), TRANSLATE_SENTENCES for the translation rows (500), SPEECH_FILES for the speech rows (100);
ONLY=translation or ONLY=speech runs those rows alone. SMOKE=1 checks that both sides run and the table prints, in about a minute: one tiny
row of each kind, and unless set, ROUNDS 2, BUDGET 0 and SENTENCES 8. Its times mean nothing.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNNKIT = os.path.join(ROOT, "target", "release", "rnnkit")
PY = os.path.join(ROOT, ".venv", "bin", "python")
BENCH_PY = os.path.join(ROOT, "scripts", "bench_pytorch.py")
BENCH_ORT = os.path.join(ROOT, "scripts", "bench_onnxruntime.py")
SMOKE = os.environ.get("SMOKE", "") not in ("", "0")
THREADS = os.environ.get("THREADS", "2")
ROUNDS = int(os.environ.get("ROUNDS", "2" if SMOKE else "5"))
BUDGET = os.environ.get("BUDGET", "0" if SMOKE else "2")
NAME_W = 38  # the configuration column
SGEMM_N = 64 if SMOKE else 1024
SENTENCES = int(os.environ.get("SENTENCES", "8" if SMOKE else "1000"))
TRANSLATE_SENTENCES = int(os.environ.get("TRANSLATE_SENTENCES", "500"))
ONLY = os.environ.get("ONLY", "")  # "translation" or "speech": those rows alone
SPEECH_FILES = int(os.environ.get("SPEECH_FILES", "100"))
# The end-to-end row's batching, on both sides: `rnnkit bench`'s predict kind runs rnnkit's
# Predictor with max_batch 32 (src/cli/bench.rs), which sorts a request's sequences by length
# and runs them in chunks of 32; scripts/bench_pytorch.py's predict_texts does the same.
PREDICT_BATCH = 32
PREDICT_POLICY = (f"both sides tokenize every sentence on one thread, sort them by token count "
                  f"(longest first, ties in file order)\n  and run batches of {PREDICT_BATCH} in that order, "
                  f"each padded to its longest; model loading excluded")


def rss_of(cmd, stdin=None):
    """Wall seconds, stdout and peak RSS (MiB) of one child process (wait4's own rusage)."""
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        if stdin:
            p.stdin.write(stdin)
        p.stdin.close()
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited with {p.returncode}: {err.read().strip()[-2000:]}")
    return wall, out, ru.ru_maxrss / 1024


def one(side, spec, extra=()):
    s = json.dumps(spec)
    cmd = {"rnnkit": [RNNKIT, "bench", "--spec", s], "pytorch": [PY, BENCH_PY, "--spec", s],
           "onnxruntime": [PY, BENCH_ORT, "--spec", s]}[side]
    cmd += ["--threads", THREADS, "--budget", BUDGET, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
    return json.loads(r.stdout)


def rounds(*runners):
    """ROUNDS rounds of one result per runner, the order rotating by one each round (two sides:
    rnnkit, PyTorch, then PyTorch, rnnkit, …): a drift within a round then favours no side.
    Returns one list of results per runner."""
    out = [[] for _ in runners]
    for k in range(ROUNDS):
        for i in [(k + j) % len(runners) for j in range(len(runners))]:
            out[i].append(runners[i]())
    return out


def pairs(run_rnnkit, run_pytorch):
    """ROUNDS pairs of (rnnkit, PyTorch) results, which side goes first alternating."""
    return rounds(run_rnnkit, run_pytorch)


def compare(spec, extra=()):
    """Median times of both sides, the median and range of the per-pair ratios (each pair ran
    back to back, so slow drifts of a shared machine cancel within a pair), and rnnkit's GFLOP/s."""
    r, p = pairs(lambda: one("rnnkit", spec, extra), lambda: one("pytorch", spec, extra))
    rm = statistics.median(x["median_ms"] for x in r)
    pm = statistics.median(x["median_ms"] for x in p)
    ratios = [b["median_ms"] / a["median_ms"] for a, b in zip(r, p)]
    g = [best_gflops(x) for x in r if x.get("gflops")]
    return rm, pm, ratios, (max(g) if g else None)


def compare_peers(spec):
    """rnnkit, PyTorch and ONNX Runtime on one spec: ROUNDS rounds of one process each, the
    order rotating (rnnkit, PyTorch, ORT; PyTorch, ORT, rnnkit; ...). Returns the three medians,
    the per-round ratios against the faster peer of that round, against PyTorch and against ORT,
    and rnnkit's GFLOP/s."""
    res = rounds(*(lambda side=side: one(side, spec) for side in ("rnnkit", "pytorch", "onnxruntime")))
    r, p, o = ([x["median_ms"] for x in side] for side in res)
    best = [min(b, c) / a for a, b, c in zip(r, p, o)]
    g = [best_gflops(x) for x in res[0] if x.get("gflops")]
    return (statistics.median(r), statistics.median(p), statistics.median(o), best,
            [b / a for a, b in zip(r, p)], [c / a for a, c in zip(r, o)], max(g) if g else None)


def fma_sample():
    """rnnkit's register-only multiply-add rate, or None where it cannot run (no AVX2, or
    not x86_64): the table then goes without its % FMA column."""
    try:
        return best_gflops(one("rnnkit", {"kind": "fma"}))
    except subprocess.CalledProcessError as e:
        print(f"no FMA peak: {e.stderr.strip()}", file=sys.stderr)
        return None


GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def working_sets(spec):
    """Bytes of recurrent weights a row's layers read at every step, all directions: D·G·H·H·4
    (the same for every layer of a row)."""
    d = 2 if spec.get("bidirectional") else 1
    return d * GATES[spec["mode"]] * spec["H"] * spec["H"] * 4


def rnn_limit(spec, fma_gflops, gbytes_per_s, barrier_ns):
    """The least time a recurrent row can take on this machine (docs/PERFORMANCE.md, "The limit
    column"), per layer: max(arithmetic, recurrent-weight traffic) + synchronisation, where
    arithmetic = the layer's FLOPs at the FMA peak, traffic = T steps of D·G·H·H·4 bytes at the
    bandwidth measured for that working set, synchronisation = T barrier crossings for a
    unidirectional layer on two or more threads (a bidirectional layer runs one direction per
    thread, no barrier). Returns (ms, the term that dominates)."""
    g, h, b, t = GATES[spec["mode"]], spec["H"], spec["B"], spec["T"]
    d = 2 if spec.get("bidirectional") else 1
    total, terms = 0.0, {"arithmetic": 0.0, "bandwidth": 0.0, "sync": 0.0}
    for layer in range(spec.get("layers", 1)):
        inp = spec["I"] if layer == 0 else h * d
        arith = 2.0 * g * h * (inp + h) * b * t * d / (fma_gflops * 1e9)
        traffic = t * working_sets(spec) / (gbytes_per_s * 1e9)
        sync = t * barrier_ns * 1e-9 if d == 1 and int(THREADS) >= 2 else 0.0
        total += max(arith, traffic) + sync
        terms["arithmetic" if arith >= traffic else "bandwidth"] += max(arith, traffic)
        terms["sync"] += sync
    return total * 1e3, max(terms, key=terms.get)


def best_gflops(result):
    """The rate of a process's fastest iteration: what the hardware allows when the shared
    machine is quiet, for rnnkit's rows and the sgemm peak alike."""
    return result["gflops"] * result["median_ms"] / result["min_ms"]


def ratio_cols(ratios):
    return f"{statistics.median(ratios):6.2f} {min(ratios):5.2f}-{max(ratios):<5.2f}"


def name(spec):
    if spec["kind"] == "rnn":
        return (f"{spec['mode']} B={spec['B']} T={spec['T']} H={spec['H']} L={spec.get('layers', 1)}"
                + (" bi" if spec.get("bidirectional") else ""))
    if spec["kind"] == "train_step":
        return f"train step B={spec['B']} T={spec['T']} H={spec['H']}"
    if spec["kind"] == "seq2seq_train_step":
        return f"seq2seq train step B={spec['B']} T={spec['T']}"
    return spec["kind"]


def translation_rows():
    """weights/translation: a teacher-forced training step, and greedy and beam-5 decoding of the
    first TRANSLATE_SENTENCES held-out software messages (batches of 32 sorted by length, alpha
    0.6, texts in and texts out on both sides; the PyTorch side is scripts/rnnkit_seq2seq.py's
    reference decoder under torch.inference_mode); each decoding row again with rnnkit's --fused,
    and --fused --workers THREADS."""
    model = os.path.join(ROOT, "weights", "translation")
    test = os.path.join(ROOT, "data", "translation", "gettext", "test.jsonl")
    if not os.path.exists(test):
        print(f"\ntranslation rows not run: {test} is missing (scripts/fetch_translation_data.py makes it)")
        return
    n = 8 if SMOKE else TRANSLATE_SENTENCES
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        texts = [json.loads(l)["src"] for l in open(test)][:n]
        f.write("\n".join(texts) + "\n")
    # Seconds per iteration: a few timed iterations after one warm-up.
    few = ("--warmup", "1", "--iters", "2" if SMOKE else "3")
    train = {"kind": "seq2seq_train_step", "model": model, "B": 2 if SMOKE else 64, "T": 4 if SMOKE else 24}
    rows = [(name(train), train, ())]
    for beam in (0, 5):
        spec = {"kind": "translate", "model": model, "input": f.name, "B": 32, "beam": beam}
        rows.append((f"translate {len(texts)} {'greedy' if beam == 0 else f'beam {beam}'} (sent/s)", spec, few))
        # rnnkit translate --fused (its own kernels, not PyTorch's bits), and with --workers
        # THREADS too (as many batches at once, each on one libtorch thread), against the same
        # PyTorch side (one batch at a time on THREADS threads).
        rows.append(("  the same, --fused", dict(spec, fused=True), few))
        rows.append((f"  the same, --fused --workers {THREADS}", dict(spec, fused=True, workers=int(THREADS)), few))
    print(f"\n{'weights/translation':<{NAME_W}} {'PyTorch ms':>11} {'rnnkit ms':>10} {'ratio':>6} {'pairs':>11}")
    for label, spec, extra in rows:
        print(f"[{label}]", file=sys.stderr, flush=True)
        rm, pm, ratios, _ = compare(spec, extra)
        speed = ""
        if spec["kind"] == "translate":
            speed = f"   {len(texts) / (pm / 1e3):7.1f} vs {len(texts) / (rm / 1e3):7.1f} sentences/s"
        print(f"{label:<{NAME_W}} {pm:11.1f} {rm:10.1f} {ratio_cols(ratios)}{speed}", flush=True)
    os.unlink(f.name)


def speech_rows():
    """weights/speech: transcribing the first SPEECH_FILES human test recordings end to end (read,
    resample, log-mel, the model in batches of 16 in file order, greedy decoding; rnnkit_ctc.py on
    the PyTorch side under torch.inference_mode) with the real-time factor, rnnkit on libtorch's
    kernels and on its fused kernel, and a training step (B=16, T=400 feature frames)."""
    model = os.path.join(ROOT, "weights", "speech")
    test = os.path.join(ROOT, "data", "speech", "asterisk", "test.jsonl")
    if not os.path.exists(test):
        print(f"\nspeech rows not run: {test} is missing (scripts/fetch_speech_data.py makes it)")
        return
    n = 4 if SMOKE else SPEECH_FILES
    rows_in = [json.loads(l) for l in open(test)][:n]
    seconds = sum(r["seconds"] for r in rows_in)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(os.path.join(os.path.dirname(test), r["wav"]) for r in rows_in) + "\n")
    few = ("--warmup", "1", "--iters", "2" if SMOKE else "3")
    train = {"kind": "ctc_train_step", "model": model, "B": 2 if SMOKE else 16, "T": 40 if SMOKE else 400}
    # rnnkit transcribes on libtorch's kernels by default (PyTorch's bits), on its fused kernel
    # with --fused: one row each, against the same PyTorch side.
    exact = {"kind": "transcribe", "model": model, "input": f.name, "B": 16, "exact": True}
    fused = dict(exact, exact=False)
    label = f"transcribe {n} recordings ({seconds:.0f} s)"
    rows = [(name(train), train, ()), (label, exact, few), (f"  the same, --fused", fused, few)]
    print(f"\n{'weights/speech':<{NAME_W}} {'PyTorch ms':>11} {'rnnkit ms':>10} {'ratio':>6} {'pairs':>11}")
    for label, spec, extra in rows:
        print(f"[{label}]", file=sys.stderr, flush=True)
        rm, pm, ratios, _ = compare(spec, extra)
        speed = ""
        if spec["kind"] == "transcribe":
            speed = f"   real-time factor {pm / 1e3 / seconds:.4f} vs {rm / 1e3 / seconds:.4f}"
        print(f"{label:<{NAME_W}} {pm:11.1f} {rm:10.1f} {ratio_cols(ratios)}{speed}", flush=True)
    os.unlink(f.name)


def main():
    if ONLY == "translation":
        translation_rows()
        return
    if ONLY == "speech":
        speech_rows()
        return
    model = sys.argv[1] if len(sys.argv) > 1 else None
    specs = []
    for mode in ("LSTM", "GRU", "RNN_TANH"):
        specs += [
            {"kind": "rnn", "mode": mode, "B": 1, "T": 32, "I": 128, "H": 256},
            {"kind": "rnn", "mode": mode, "B": 32, "T": 64, "I": 128, "H": 256, "layers": 2},
        ]
    specs += [
        {"kind": "rnn", "mode": "LSTM", "B": 8, "T": 256, "I": 128, "H": 128, "bidirectional": True},
        {"kind": "rnn", "mode": "LSTM", "B": 64, "T": 32, "I": 512, "H": 512},
        {"kind": "rnn", "mode": "GRU", "B": 64, "T": 256, "I": 128, "H": 128, "layers": 2, "bidirectional": True},
        {"kind": "train_step", "B": 32, "T": 64, "V": 8000, "E": 128, "H": 256},
    ]
    if SMOKE:
        specs = [{"kind": "rnn", "mode": "LSTM", "B": 2, "T": 4, "I": 8, "H": 16},
                 {"kind": "train_step", "B": 2, "T": 4, "V": 50, "E": 8, "H": 16}]
    # The peak: the best of the sgemm samples taken on both sides before every row (the machine
    # is shared: samples in one run spread over ±30% and more). A row's share of it is of
    # rnnkit's best rate, a best case too; the ratios compare medians.
    # The multiply-add peak likewise (one sample per row); sgemm cannot exceed it, but on AMD
    # CPUs MKL's generic path stays well below it, and rnnkit's kernels can exceed sgemm.
    rows, sgemm, fma = [], [], []
    # The limit column's probes (SMOKE skips them): the bandwidth of each row's working set and
    # the barrier's cost, one sample per row, the fastest kept.
    bandwidth, barrier = {}, []
    for k, spec in enumerate(specs):
        print(f"[{k + 1}/{len(specs)}] {name(spec)}", file=sys.stderr, flush=True)
        sgemm += [best_gflops(one(side, {"kind": "sgemm", "N": SGEMM_N})) for side in ("rnnkit", "pytorch")]
        if fma is not None:
            f = fma_sample()
            fma = None if f is None else fma + [f]
        if spec["kind"] == "rnn":
            if fma is not None and not SMOKE:
                ws = working_sets(spec)
                bandwidth.setdefault(ws, []).append(one("rnnkit", {"kind": "bandwidth", "N": ws})["gbytes_per_s"])
                if int(THREADS) >= 2:
                    barrier.append(one("rnnkit", {"kind": "barrier", "N": 100000})["barrier_ns"])
            rows.append((spec, compare_peers(spec)))
        else:
            rm, pm, ratios, g = compare(spec)
            rows.append((spec, (rm, pm, None, ratios, ratios, None, g)))
    peak = max(sgemm)
    fma_peak = max(fma) if fma else None
    fma_line = (f";\nFMA: fastest of {len(fma)} samples of register-only multiply-adds, {fma_peak:.1f} GFLOP/s "
                f"(samples {min(fma):.0f}-{fma_peak:.0f})" if fma_peak else " (no FMA peak: rnnkit cannot measure it here)")
    print(("SMOKE RUN: tiny sizes, the times mean nothing\n" if SMOKE else "")
          + f"threads {THREADS} on both sides; {ROUNDS} alternating process pairs (or rotating triples) per row; times: medians; ratio: median of "
          f"the pairs' ratios, pairs: their range;\nGFLOP/s: rnnkit's fastest iteration; peak: fastest of {len(sgemm)} sgemm "
          f"{SGEMM_N}^3 samples through the run, {peak:.1f} GFLOP/s (samples {min(sgemm):.0f}-{peak:.0f}){fma_line}\n")
    limits = bool(bandwidth) and fma_peak is not None
    if limits:
        bw_text = ", ".join(f"{ws / 2**20:g} MiB {max(v):.0f} GB/s ({min(v):.0f}-{max(v):.0f})"
                            for ws, v in sorted(bandwidth.items()))
        barrier_ns = min(barrier) if barrier else 0.0
        print(f"limit: per layer max(FLOPs at the FMA peak, T · recurrent weights at the bandwidth of their working set)\n"
              f"  + T barrier crossings (unidirectional, 2+ threads); % limit = limit / rnnkit's median;\n"
              f"  bandwidth (fastest of the samples, `rnnkit bench` kind bandwidth): {bw_text};\n"
              f"  barrier (fastest of {len(barrier)} samples, kind barrier): {barrier_ns:.1f} ns per crossing\n")
    print("ratio: against the faster peer of each round (ONNX Runtime or PyTorch); vs PT, vs ORT: medians "
          "of the rounds' ratios against each;\nONNX Runtime: the same torch module exported by torch.onnx.export "
          "(scripts/bench_onnxruntime.py), rounds rotating over the three sides;\nno ORT column where the model "
          "cannot be exported\n")
    print(f"{'configuration':<{NAME_W}} {'PyTorch ms':>11} {'ORT ms':>8} {'rnnkit ms':>10} {'ratio':>6} {'pairs':>11} "
          f"{'vs PT':>6} {'vs ORT':>6} {'GFLOP/s':>8} {'% peak':>7}" + (f" {'% FMA':>6}" if fma_peak else "")
          + (f" {'limit ms':>9} {'bound':>10} {'% limit':>7}" if limits else ""))
    for spec, (rm, pm, om, ratios, rp, ro, g) in rows:
        gs = f"{g:8.1f} {100 * g / peak:6.0f}%" if g else ""
        if g and fma_peak:
            gs += f" {100 * g / fma_peak:5.0f}%"
        oms = f"{om:8.3f}" if om is not None else f"{'':8}"
        vs = f"{statistics.median(rp):6.2f} " + (f"{statistics.median(ro):6.2f}" if ro else f"{'':6}")
        if limits and spec["kind"] == "rnn":
            lim, bound = rnn_limit(spec, fma_peak, max(bandwidth[working_sets(spec)]), barrier_ns)
            gs += f" {lim:9.3f} {bound:>10} {100 * lim / rm:6.0f}%"
        print(f"{name(spec):<{NAME_W}} {pm:11.3f} {oms} {rm:10.3f} {ratio_cols(ratios)} {vs} {gs}".rstrip(), flush=True)
    if model:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            sentences = [json.loads(l)["text"] for l in open(os.path.join(ROOT, "data/mr/test.jsonl"))][:SENTENCES]
            f.write("\n".join(sentences) + "\n")
        spec = {"kind": "predict", "model": model, "input": f.name}
        rm, pm, ratios, _ = compare(spec)
        print(f"{f'predict {len(sentences)} sentences (end to end) ¹':<{NAME_W}} {pm:11.3f} {rm:10.3f} {ratio_cols(ratios)}".rstrip())
        # The cost of batch-invariant answers (rnnkit serve's default, the row above): rnnkit
        # against itself with them off, alternating which goes first, like the pairs above.
        off = dict(spec, batch_invariant=False)
        on_r, off_r = pairs(lambda: one("rnnkit", spec), lambda: one("rnnkit", off))
        cost = [a["median_ms"] / b["median_ms"] for a, b in zip(on_r, off_r)]
        print(f"{'  the same, batch-invariant off ³':<{NAME_W}} {'':11} "
              f"{statistics.median(x['median_ms'] for x in off_r):10.3f}   cost of invariance: "
              f"{100 * (statistics.median(cost) - 1):+.1f}% (pairs {100 * (min(cost) - 1):+.1f}% to {100 * (max(cost) - 1):+.1f}%)")
        text = "a gripping , funny and moving film"
        # The same process on each side as in the row above, started cold: same threads,
        # same batch size (one sentence: one batch).
        predict = [RNNKIT, "predict", "--model", model, "--device", "cpu", "--threads", THREADS,
                   "--batch-size", str(PREDICT_BATCH)]
        r, p = pairs(lambda: rss_of(predict, stdin=text + "\n"),
                     lambda: rss_of([PY, BENCH_PY, "--threads", THREADS, "--cold", model, text]))
        cr, cp = [w * 1e3 for w, _, _ in r], [w * 1e3 for w, _, _ in p]
        rm, pm = statistics.median(cr), statistics.median(cp)
        print(f"{'cold start → first prediction ²':<{NAME_W}} {pm:11.1f} {rm:10.1f} {ratio_cols([b / a for a, b in zip(cr, cp)])}".rstrip())
        _, _, big_r = rss_of(predict + ["--input", f.name])
        print(f"\n¹ {PREDICT_POLICY}.\n"
              f"² wall time of a whole process that loads the model and predicts one sentence: `rnnkit predict "
              f"--threads {THREADS}`\n  against `bench_pytorch.py --threads {THREADS} --cold`; the order alternates "
              f"per pair as above.\n"
              f"³ rnnkit alone, batch_invariant false against the row above's true (rnnkit serve's default: a text's "
              f"probabilities bitwise the same alone or in any batch); cost = median of the pairs' time ratios - 1.")
        print(f"\npeak RSS, cold start + 1 prediction: rnnkit {statistics.median(m for _, _, m in r):.0f} MiB, "
              f"Python {statistics.median(m for _, _, m in p):.0f} MiB; "
              f"rnnkit predicting {len(sentences)} sentences {big_r:.0f} MiB")
        os.unlink(f.name)
    translation_rows()
    speech_rows()


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(f"{' '.join(e.cmd)} exited with {e.returncode}: {e.stderr.strip()[-2000:]}")
