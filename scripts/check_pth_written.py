#!/usr/bin/env python3
"""Checks .pth files that rnnkit wrote: PyTorch must read each with
`torch.load(path, weights_only=True)` (and with mmap=True), see the same structure and
bitwise-identical values, and `load_state_dict(strict=True)` must accept module state_dicts.

    .venv/bin/python scripts/check_pth_written.py DIR

DIR/manifest.json (written by tests/pth_roundtrip.rs) lists entries:
  {"written": "x.pth", "original": "/path/to/torch-written.pth"}  compare with torch's own load
  {"written": "x.pth", "expect": "built"}                         compare with built_checkpoint()
  {"written": "x.pth", "module": "LSTM", "kwargs": {...}}         strict load_state_dict
Exits non-zero listing every difference.
"""

import json
import math
import os
import struct
import sys
import zipfile
from collections import Counter, OrderedDict

import torch


def built_checkpoint():
    """The nested checkpoint tests/pth_roundtrip.rs builds by hand (keep the two in sync)."""
    shared = torch.arange(6.0).reshape(2, 3)
    return {
        "epoch": 3,
        "loss": 0.25,
        "name": "run1",
        "flags": [True, False, None],
        "betas": (0.9, 0.999),
        "big": 2**70,
        "neg": -123456789012,
        "nan": float("nan"),
        "bytes": b"\x00\xffab",
        "cplx": complex(1.0, -2.0),
        "tags": {"b", "a"},
        "device": torch.device("cpu"),
        "dtype": torch.bfloat16,
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": shared}, 1: {"exp_avg": shared}},
        "weights": OrderedDict(
            [
                ("f16", torch.arange(4).to(torch.float16)),
                ("bf16", torch.arange(4).to(torch.bfloat16)),
                ("i8", torch.arange(-2, 2, dtype=torch.int8)),
                ("bool", torch.tensor([True, False])),
                ("c64", torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)),
                ("u16", torch.tensor([1, 65535], dtype=torch.uint16)),
                ("f8", torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn)),
                ("empty", torch.zeros(0, 3)),
                ("scalar", torch.tensor(7, dtype=torch.int64)),
                ("param", torch.nn.Parameter(torch.ones(2, 2))),
            ]
        ),
    }


def same(a, b, at, errs, memo_a, memo_b):
    """Deep comparison: types, order, sharing and bit patterns."""
    if isinstance(a, (torch.Tensor, dict, list)):
        ia, ib = memo_a.get(id(a)), memo_b.get(id(b))
        if ia is not None or ib is not None:
            if ia != ib:
                errs.append(f"{at}: sharing differs")
            return
        memo_a[id(a)] = memo_b[id(b)] = len(memo_a)
    if type(a) is not type(b):
        errs.append(f"{at}: type {type(b).__name__}, expected {type(a).__name__}")
        return
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            errs.append(f"{at}: {b.dtype}{list(b.shape)}, expected {a.dtype}{list(a.shape)}")
            return
        if a.requires_grad != b.requires_grad:
            errs.append(f"{at}: requires_grad {b.requires_grad}, expected {a.requires_grad}")
        x = a.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
        y = b.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
        if x.numel() and not torch.equal(x.view(torch.uint8), y.view(torch.uint8)):
            errs.append(f"{at}: values differ")
    elif isinstance(a, dict):
        if list(map(repr, a.keys())) != list(map(repr, b.keys())):
            errs.append(f"{at}: keys {list(b.keys())[:10]}, expected {list(a.keys())[:10]}")
            return
        for k in a:
            same(a[k], b[k], f"{at}.{k}", errs, memo_a, memo_b)
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            errs.append(f"{at}: length {len(b)}, expected {len(a)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{at}[{i}]", errs, memo_a, memo_b)
    elif isinstance(a, float):
        if struct.pack(">d", a) != struct.pack(">d", b):
            errs.append(f"{at}: {b!r}, expected {a!r}")
    elif isinstance(a, (set, frozenset)):
        if a != b:
            errs.append(f"{at}: {b!r}, expected {a!r}")
    elif a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b)):
        errs.append(f"{at}: {b!r}, expected {a!r}")


def check_alignment(path, errs):
    with open(path, "rb") as f:
        raw = f.read()
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            n, m = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
            start = info.header_offset + 30 + n + m
            if info.compress_type != zipfile.ZIP_STORED or start % 64:
                errs.append(f"{os.path.basename(path)}: entry {info.filename} not stored at a 64-byte boundary ({start})")


def main():
    d = sys.argv[1]
    manifest = json.load(open(os.path.join(d, "manifest.json")))
    errs = []
    for entry in manifest:
        path = os.path.join(d, entry["written"])
        name = entry["written"]
        try:
            got = torch.load(path, weights_only=True)
            got_mmap = torch.load(path, weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001
            errs.append(f"{name}: torch.load(weights_only=True) failed: {type(e).__name__}: {e}"[:800])
            continue
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        if unsafe:
            errs.append(f"{name}: non-allowlisted globals {unsafe}")
        check_alignment(path, errs)
        if "original" in entry:
            want = torch.load(entry["original"], weights_only=True)
        elif entry.get("expect") == "built":
            want = built_checkpoint()
        else:
            want = None
        if want is not None:
            for label, value in (("", got), (" (mmap)", got_mmap)):
                e = []
                same(want, value, name + label, e, {}, {})
                errs.extend(e)
        if "module" in entry:
            module = getattr(torch.nn, entry["module"])(**entry["kwargs"])
            try:
                module.load_state_dict(got, strict=True)
            except Exception as e:  # noqa: BLE001
                errs.append(f"{name}: {entry['module']}.load_state_dict(strict=True) failed: {e}"[:800])
            for k, v in module.state_dict().items():
                if not torch.equal(v, got[k]):
                    errs.append(f"{name}: {k} not loaded exactly")
    if errs:
        print("\n".join(errs))
        print(f"{len(errs)} problem(s) in {len(manifest)} rnnkit-written files")
        sys.exit(1)
    print(f"{len(manifest)} rnnkit-written files load in torch {torch.__version__} with weights_only=True, identically")


if __name__ == "__main__":
    main()
