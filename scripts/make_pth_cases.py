#!/usr/bin/env python3
"""Writes the .pth reader's test cases (FORMATS.md §6 and more) into OUT_DIR, with what
`torch.load(path, weights_only=True)` makes of each, so tests/pth_golden.rs can compare rnnkit's
reader against PyTorch itself.

    .venv/bin/python scripts/make_pth_cases.py tests/golden/pth

OUT_DIR/cases.json lists every case:
  {"name", "file", "torch": "ok" | "error", "torch_error", "rnnkit": "ok" | "error",
   "error_contains": [..],  # substrings rnnkit's error must contain (besides the file name)
   "why",                   # for cases where rnnkit deliberately differs from torch
   "tree"}                  # the value torch.load returned, encoded by `encode` below
Tensor values live in OUT_DIR/<case>.values.safetensors as uint8 bytes (`t<N>` keys) of the
*logical* value (neg/conj resolved, C-contiguous, little-endian), so any dtype compares bitwise.
"""

import io
import json
import os
import struct
import sys
import zipfile
import zlib
from collections import Counter, OrderedDict

import torch
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/pth"
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
CASES = []


# ---------------------------------------------------------------------------------------------
# Encoding torch.load's result
# ---------------------------------------------------------------------------------------------

class Encoder:
    def __init__(self):
        self.values = {}
        self.ids = {}  # id(obj) -> n, for tensors, dicts and lists (identity is meaningful)
        self.storages = {}

    def storage_id(self, t):
        s = t.untyped_storage()
        if s.nbytes() == 0:
            return None
        key = (s.data_ptr(), s.nbytes())
        return self.storages.setdefault(key, len(self.storages))

    def encode(self, v, keep):
        if id(v) in self.ids:
            return {"ref": self.ids[id(v)]}
        if isinstance(v, torch.Tensor):
            n = len(self.ids)
            self.ids[id(v)] = n
            keep.append(v)
            logical = v.detach()
            if logical.is_quantized:
                logical = logical.int_repr()
            if logical.layout != torch.strided:
                logical = logical.to_dense()
            logical = logical.resolve_conj().resolve_neg().contiguous().reshape(-1)
            name = f"t{len(self.values)}"
            self.values[name] = logical.view(torch.uint8).clone() if logical.numel() else torch.zeros(0, dtype=torch.uint8)
            return {
                "t": "tensor", "id": n, "data": name,
                "dtype": str(v.dtype).removeprefix("torch."),
                "shape": list(v.shape),
                "stride": list(v.stride()) if v.layout == torch.strided else None,
                "offset": v.storage_offset() if v.layout == torch.strided else None,
                "storage": self.storage_id(v) if v.layout == torch.strided else None,
                "param": isinstance(v, torch.nn.Parameter), "requires_grad": v.requires_grad,
                "neg": v.is_neg(), "conj": v.is_conj(),
            }
        if isinstance(v, (dict, OrderedDict, Counter)):
            n = len(self.ids)
            self.ids[id(v)] = n
            keep.append(v)
            kind = "Counter" if isinstance(v, Counter) else "OrderedDict" if isinstance(v, OrderedDict) else "dict"
            return {
                "t": kind, "id": n,
                "items": [[self.encode(k, keep), self.encode(x, keep)] for k, x in v.items()],
                "attrs": sorted(vars(v).keys()) if kind != "dict" and hasattr(v, "__dict__") else [],
            }
        if isinstance(v, list):
            n = len(self.ids)
            self.ids[id(v)] = n
            keep.append(v)
            return {"t": "list", "id": n, "items": [self.encode(x, keep) for x in v]}
        if isinstance(v, torch.Size):
            return {"t": "size", "v": list(v)}
        if isinstance(v, tuple):
            return {"t": "tuple", "items": [self.encode(x, keep) for x in v]}
        if isinstance(v, (set, frozenset)):
            items = [self.encode(x, keep) for x in v]
            return {"t": "set", "items": sorted(items, key=lambda j: json.dumps(j, sort_keys=True))}
        if v is None:
            return {"t": "none"}
        if isinstance(v, bool):
            return {"t": "bool", "v": v}
        if isinstance(v, int):
            return {"t": "int", "v": str(v)}
        if isinstance(v, float):
            return {"t": "float", "bits": struct.pack(">d", v).hex()}
        if isinstance(v, complex):
            return {"t": "complex", "re": struct.pack(">d", v.real).hex(), "im": struct.pack(">d", v.imag).hex()}
        if isinstance(v, str):
            return {"t": "str", "v": v}
        if isinstance(v, (bytes, bytearray)):
            return {"t": type(v).__name__, "hex": bytes(v).hex()}
        if isinstance(v, torch.device):
            return {"t": "device", "v": str(v)}
        if isinstance(v, torch.dtype):
            return {"t": "global", "v": str(v)}
        raise TypeError(f"cannot encode {type(v)}")


def add(name, make, *, rnnkit=None, error_contains=(), why=None, ext="pth"):
    """Writes OUT/name.ext with make(path), records what torch.load(weights_only=True) says."""
    path = os.path.join(OUT, f"{name}.{ext}")
    if os.path.exists(path):
        os.remove(path)
    make(path)
    case = {"name": name, "file": f"{name}.{ext}", "error_contains": list(error_contains)}
    try:
        v = torch.load(path, weights_only=True)
        enc = Encoder()
        keep = []
        case["torch"] = "ok"
        case["tree"] = enc.encode(v, keep)
        save_file(enc.values, os.path.join(OUT, f"{name}.values.safetensors"))
    except Exception as e:  # noqa: BLE001 — recording torch's refusal is the point
        case["torch"] = "error"
        case["torch_error"] = f"{type(e).__name__}: {e}"[:600]
    case["rnnkit"] = rnnkit or case["torch"]
    if why:
        case["why"] = why
    CASES.append(case)
    print(f"{name:28s} torch={case['torch']:5s} rnnkit={case['rnnkit']}")


def save(obj, **kw):
    return lambda p: torch.save(obj, p, **kw)


# ---------------------------------------------------------------------------------------------
# Zip surgery helpers (torch writes native byte order; other variants are crafted)
# ---------------------------------------------------------------------------------------------

def zip_records(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def write_zip(path, records, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in records:
            z.writestr(zipfile.ZipInfo(name), data, compress_type=compress)


def rewrite(src_obj, edit, **kw):
    def make(path):
        torch.save(src_obj, path, **kw)
        write_zip(path, edit(zip_records(path)))
    return make


def replace_pickle(pkl):
    def edit(records):
        return [(n, pkl if n.endswith("/data.pkl") else d) for n, d in records]
    return edit


DTYPE_SWAP = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
              "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "ComplexFloatStorage": 4,
              "ComplexDoubleStorage": 8}


def to_big_endian(records):
    """byteorder=big with every typed storage swapped per element (complex per component), as a
    big-endian torch would write it. UntypedStorage (v3 dtypes) is left alone: torch never swaps it."""
    import pickletools
    pkl = next(d for n, d in records if n.endswith("/data.pkl"))
    units = {}
    ops = list(pickletools.genops(pkl))
    for i, (op, arg, _) in enumerate(ops):
        if op.name == "GLOBAL" and arg.startswith("torch ") and arg.split(" ")[1] in DTYPE_SWAP:
            # ... GLOBAL <type>, [BINPUT], BINUNICODE key
            for op2, arg2, _ in ops[i + 1:i + 4]:
                if op2.name == "BINUNICODE":
                    units[arg2] = DTYPE_SWAP[arg.split(" ")[1]]
                    break
    out = []
    for n, d in records:
        if n.endswith("/byteorder"):
            d = b"big"
        elif "/data/" in n and n.split("/data/")[1] in units:
            u = units[n.split("/data/")[1]]
            d = b"".join(d[i:i + u][::-1] for i in range(0, len(d), u))
        out.append((n, d))
    return out


# ---------------------------------------------------------------------------------------------
# FORMATS.md §6
# ---------------------------------------------------------------------------------------------

lin = torch.nn.Linear(4, 3)
add("c01_linear_state_dict", save(lin.state_dict()))
add("c02_data_parallel", save(torch.nn.DataParallel(torch.nn.Linear(4, 3)).state_dict()))
add("c03_compiled", save(torch.compile(torch.nn.Linear(4, 3)).state_dict()))
m4 = torch.nn.Linear(4, 4)
add("c04_shared_parameter", save({"enc.weight": m4.weight, "dec.weight": m4.weight}))
w5 = torch.arange(12.0)
add("c05_views_of_one_storage", save({"full": w5, "mat": w5.view(3, 4), "tail": w5[4:]}))
add("c07_transposed", save({"t": torch.arange(12.0).reshape(3, 4).t()}))
add("c10_half_bfloat16", save({"h": torch.randn(4).half(), "b": torch.randn(4).bfloat16()}))
add("c11_dtypes", save({
    "f64": torch.randn(2).double(), "i64": torch.arange(2), "i32": torch.arange(2, dtype=torch.int32),
    "i16": torch.arange(2, dtype=torch.int16), "i8": torch.arange(2, dtype=torch.int8),
    "u8": torch.arange(2, dtype=torch.uint8), "bool": torch.tensor([True, False]),
    "c64": torch.randn(2, dtype=torch.complex64)}))
add("c13_zero_dim", save({"s": torch.tensor(3.5), "step": torch.tensor(10)}))
m15 = torch.nn.Linear(2, 2)
o15 = torch.optim.Adam(m15.parameters())
m15(torch.ones(1, 2)).sum().backward()
o15.step()
add("c15_training_checkpoint", save({"epoch": 3, "model_state_dict": m15.state_dict(),
                                     "optimizer_state_dict": o15.state_dict(), "loss": 0.25, "name": "run1"}))
add("c16_lists_tuples", save({"list": [torch.ones(2), torch.zeros(3)], "tuple": (torch.ones(1), 7)}))
add("c17_parameter", save({"p": torch.nn.Parameter(torch.ones(2)), "rg": torch.ones(2, requires_grad=True)}))
add("c20_legacy", save(torch.nn.Linear(2, 2).state_dict(), _use_new_zipfile_serialization=False))
add("c21_whole_module", save(torch.nn.Linear(2, 2)),
    error_contains=["torch.nn.modules.linear.Linear"])


class _Evil:
    def __reduce__(self):
        return (os.system, (f"echo PWNED > {os.path.join(os.path.abspath(OUT), 'pwned.txt')}",))


add("c22_os_system", save({"x": _Evil()}), error_contains=["posix.system", "blocked"])


def truncated(path):
    torch.save({"w": torch.ones(100)}, path)
    d = open(path, "rb").read()
    open(path, "wb").write(d[: len(d) // 2])


add("c24_truncated", truncated, error_contains=["truncated or corrupt"])

# ---------------------------------------------------------------------------------------------
# More: layouts, dtypes, byte order, bits, containers
# ---------------------------------------------------------------------------------------------

add("channels_last", save({"w": torch.randn(8, 3, 3, 3).to(memory_format=torch.channels_last)}))
add("expand_stride0", save({"e": torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)}))
e = torch.arange(4.0)
add("empty_tensors", save({"e0": torch.zeros(0), "e23": torch.zeros(2, 0, 3), "at_end": e[4:], "full": e}))
add("strided_slices", save({"every_other": torch.arange(20.0).reshape(4, 5)[:, ::2],
                            "col": torch.arange(20.0).reshape(4, 5)[:, 3],
                            "permuted": torch.randn(2, 3, 4).permute(2, 0, 1)}))
x = torch.tensor([1.0, 2.0, 3.0, -4.0])
add("neg_conj_bits", save({
    "neg": torch._neg_view(x)[1::2],
    "conj": torch.randn(3, dtype=torch.complex64).conj(),
    "conj_f64": torch.randn(2, 2, dtype=torch.complex128).conj().t(),
    "neg_int": torch._neg_view(torch.tensor([1, -2, 3], dtype=torch.int64)),
    "plain_of_same": x}))
add("v3_dtypes", save({
    "u16": torch.tensor([1, 2, 65535], dtype=torch.uint16),
    "u32": torch.tensor([1, 2, 4294967295], dtype=torch.uint32),
    "u64": torch.tensor([1, 2, 2**63], dtype=torch.uint64),
    "f8e4m3": torch.randn(5).to(torch.float8_e4m3fn),
    "f8e5m2": torch.randn(5).to(torch.float8_e5m2),
    "f8e4m3fnuz": torch.randn(5).to(torch.float8_e4m3fnuz),
    "f8e5m2fnuz": torch.randn(5).to(torch.float8_e5m2fnuz),
    "f8e8m0": torch.rand(5).to(torch.float8_e8m0fnu),
    "c32": torch.randn(3, dtype=torch.complex64).to(torch.complex32),
    "c128": torch.randn(3, dtype=torch.complex128),
    "u16_view": torch.tensor([1, 2, 3, 4, 5, 6], dtype=torch.uint16)[2:].reshape(2, 2).t()}))
add("unsupported_float4", save({"f4": torch.zeros(4, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)}),
    rnnkit="error", error_contains=["float4_e2m1fn_x2"],
    why="rnnkit has no float4_e2m1fn_x2 dtype; it says so instead of guessing")
mixed = {"f32": torch.randn(2, 3), "f16": torch.randn(5).half(), "bf16": torch.randn(3).bfloat16(),
         "i64": torch.arange(-3, 3), "i32": torch.arange(4, dtype=torch.int32), "i16": torch.arange(3, dtype=torch.int16),
         "c64": torch.randn(2, dtype=torch.complex64), "c128": torch.randn(2, dtype=torch.complex128),
         "f64_view": torch.randn(4, 4).double().t(), "u8": torch.arange(3, dtype=torch.uint8),
         "bool": torch.tensor([True, False, True]), "u16": torch.tensor([1, 258], dtype=torch.uint16)}
add("big_endian", rewrite(mixed, to_big_endian))


class Recurrent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True, proj_size=5)
        self.gru = torch.nn.GRU(5, 7, batch_first=True)
        self.rnn = torch.nn.RNN(3, 4, num_layers=3, bias=False, nonlinearity="relu")
        self.cell = torch.nn.LSTMCell(6, 8)
        self.head = torch.nn.Linear(7, 2)


add("recurrent_modules", save({"model_state_dict": torch.nn.DataParallel(Recurrent()).state_dict(), "epoch": 1}))
add("many_keys_1500", save(OrderedDict((f"layer{i}.weight", torch.full((2,), float(i))) for i in range(1500))))
add("misc_values", save({
    1: "int key", -5: None, 2**70: "big int key", "big": 2**100, "neg_big": -(2**80), "minus_one": -1,
    "i255": 255, "i256": 256, "i65536": 65536, "i_neg": -70000, "i64max": 2**63 - 1,
    "nan": float("nan"), "inf": float("-inf"), "neg_zero": -0.0, "cplx": complex(1.5, -2.0),
    "bytes": b"\x00\xff\x80abc", "empty_bytes_in_list": [bytearray(b"xy")], "set": {3, 1, 2},
    "counter": Counter({"a": 2, "b": 1}), "device": torch.device("cpu"), "dtype": torch.float16,
    "size": torch.Size([2, 3]), "nested": {"a": [1, (2.5, "x", None, True, False)], "b": ()},
    "unicode": "héllo ✓ 🙂", (1, "tuple key"): 3}))
t_attr = torch.ones(2)
t_attr.note = "python attribute"
add("tensor_with_attributes", save({"t": t_attr, "p": torch.nn.Parameter(torch.zeros(2), requires_grad=False)}))
legacy_nested = {"model": OrderedDict(w=w5.view(3, 4), b=w5[2:5]), "step": 7, "opt": {"state": {0: {"m": torch.ones(3)}}},
                 "dtypes": [torch.ones(2, dtype=torch.float16), torch.arange(3, dtype=torch.int16), torch.tensor([True])]}
add("legacy_nested_views", save(legacy_nested, _use_new_zipfile_serialization=False))
add("legacy_truncated", lambda p: (torch.save({"w": torch.ones(50)}, p, _use_new_zipfile_serialization=False),
                                     open(p, "r+b").truncate(os.path.getsize(p) - 10)),
    error_contains=["truncated"])
add("protocol4", save({"w": torch.ones(2)}, pickle_protocol=4), error_contains=["FRAME"])
add("protocol3_bytes", save({"b": b"abc", "w": torch.ones(2)}, pickle_protocol=3), error_contains=["BINBYTES"])
add("protocol3_plain", save({"w": torch.ones(2), "n": 3}, pickle_protocol=3))


def set_crc_off(p):
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.randn(3)}, p)
    finally:
        torch.serialization.set_crc32_options(True)


add("crc_disabled", set_crc_off)
add("deflated", lambda p: (torch.save({"w": torch.randn(50), "i": torch.arange(7)}, p),
                          write_zip(p, zip_records(p), zipfile.ZIP_DEFLATED)))
add("renamed_archive_prefix", lambda p: (torch.save({"w": torch.ones(2)}, os.path.join(OUT, "orig.name.pth")),
                                           os.replace(os.path.join(OUT, "orig.name.pth"), p)))

# ---------------------------------------------------------------------------------------------
# Hostile and broken files
# ---------------------------------------------------------------------------------------------

add("empty_file", lambda p: open(p, "wb").close(), error_contains=["empty"])
add("not_a_checkpoint", lambda p: open(p, "wb").write(b"hello world, certainly not a checkpoint\n"),
    error_contains=["not a torch.save file"])
add("eval_global", rewrite({"w": torch.ones(1)}, replace_pickle(
    b"\x80\x02c__builtin__\neval\nX\x0b\x00\x00\x00print('hi')\x85R.")), error_contains=["builtins.eval"])
add("getattr_global", rewrite({"w": torch.ones(1)}, replace_pickle(
    b"\x80\x02cbuiltins\ngetattr\ncbuiltins\nlist\nX\x06\x00\x00\x00append\x86R.")),
    error_contains=["builtins.getattr"])
add("os_system_direct", rewrite({"w": torch.ones(1)}, replace_pickle(
    b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.")), error_contains=["os.system", "blocked"])
add("setitems_on_list", rewrite({"w": torch.ones(1)}, replace_pickle(b"\x80\x02](K\x01K\x02u.")),
    error_contains=["SETITEMS"])
add("build_on_dict", rewrite({"w": torch.ones(1)}, replace_pickle(b"\x80\x02}}b.")),
    error_contains=["build"])
add("string_persistent_id", rewrite({"w": torch.ones(1)}, replace_pickle(
    b"\x80\x02X\x06\x00\x00\x00moduleQ.")), error_contains=["persistent"])

# 2^60 memo bomb: torch loads it in milliseconds because references are shared; so must we.
bomb = bytearray(b"\x80\x02]q\x00")
for i in range(60):
    bomb += b"]q" + bytes([i + 1]) + b"(h" + bytes([i]) + b"h" + bytes([i]) + b"e"
bomb += b"."
add("memo_bomb", rewrite({"w": torch.ones(1)}, replace_pickle(bytes(bomb))))
# The same with a tensor at the bottom: loading is cheap, but 2^60 tensor *names* are not.
one_tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
              b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89"
              b"ccollections\nOrderedDict\n)RtR")
bomb = bytearray(b"\x80\x02" + one_tensor + b"q\x00")
for i in range(60):
    bomb += b"]q" + bytes([i + 1]) + b"(h" + bytes([i]) + b"h" + bytes([i]) + b"e"
bomb += b"."
add("memo_bomb_with_tensor", rewrite({"w": torch.ones(1)}, replace_pickle(bytes(bomb))))


def failed_save(p):
    full = io.BytesIO()
    torch.save({"w": torch.ones(1)}, full)
    recs = zip_records_from_bytes(full.getvalue())
    write_zip(p, [(n, d) for n, d in recs if n.split("/", 1)[1] in ("version", "byteorder", ".data/serialization_id")])


def zip_records_from_bytes(b):
    with zipfile.ZipFile(io.BytesIO(b)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


add("failed_save_no_data_pkl", failed_save, error_contains=["data.pkl"])
add("version_out_of_range", rewrite({"w": torch.ones(1)}, lambda r: [(n, b"11\n" if n.endswith("/version") else d) for n, d in r]),
    error_contains=["version"])
add("bad_byteorder", rewrite({"w": torch.ones(1)}, lambda r: [(n, b"middle" if n.endswith("/byteorder") else d) for n, d in r]),
    error_contains=["endianness"])
add("record_too_long", rewrite({"w": torch.ones(6)}, lambda r: [(n, d + b"\0" * 4 if n.endswith("/data/0") else d) for n, d in r]),
    error_contains=["record size does not match"])
add("record_too_short", rewrite({"w": torch.ones(6)}, lambda r: [(n, d[:-4] if n.endswith("/data/0") else d) for n, d in r]),
    error_contains=["record size does not match"])
add("entry_outside_prefix", rewrite({"w": torch.ones(1)}, lambda r: r + [("other/x", b"1")]),
    error_contains=["not in a subdirectory"])


def duplicate_entry(p):
    torch.save({"w": torch.ones(2)}, p)
    recs = zip_records(p)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(p, "a") as z:
            data = next(d for n, d in recs if n.endswith("/data/0"))
            z.writestr(next(n for n, d in recs if n.endswith("/data/0")), b"\x11" * len(data))


add("duplicate_entry", duplicate_entry, rnnkit="error", error_contains=["duplicate"],
    why="torch silently uses the first of two same-named entries (Python's zipfile the last); rnnkit refuses")


def two_dtypes_one_key(p):
    torch.save({"a": torch.ones(2), "b": torch.ones(2, dtype=torch.float16)}, p)
    recs = zip_records(p)
    pkl = next(d for n, d in recs if n.endswith("/data.pkl"))
    pkl = pkl.replace(b"X\x01\x00\x00\x001", b"X\x01\x00\x00\x000")  # b's storage key "1" -> "0"
    write_zip(p, [(n, pkl if n.endswith("/data.pkl") else d) for n, d in recs if not n.endswith("/data/1")])


add("same_key_two_dtypes", two_dtypes_one_key, rnnkit="error", error_contains=["used as both"],
    why="torch silently reinterprets the storage with the first dtype; rnnkit refuses")


def flipped_byte(p):
    torch.save({"w": torch.ones(8)}, p)
    recs = zip_records(p)
    # Keep the original CRC so the corruption is detectable: write, then patch the data byte.
    write_zip(p, recs)
    raw = bytearray(open(p, "rb").read())
    orig = next(d for n, d in recs if n.endswith("/data/0"))
    at = raw.find(orig)
    raw[at] ^= 1
    open(p, "wb").write(bytes(raw))


add("flipped_data_byte", flipped_byte, rnnkit="error", error_contains=["CRC"],
    why="torch ignores CRCs and loads corrupt data silently; rnnkit checks non-zero CRCs")


def torchscript(p):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), p)


add("torchscript", torchscript, error_contains=["TorchScript"])


def tar_file(p):
    import tarfile
    with tarfile.open(p, "w") as t:
        info = tarfile.TarInfo("pickle")
        info.size = 2
        t.addfile(info, io.BytesIO(b"\x80\x02"))


add("legacy_tar", tar_file, error_contains=["tar"])
add("sparse", save({"s": torch.eye(3).to_sparse()}), rnnkit="error", error_contains=["sparse"],
    why="sparse tensors are out of scope; rnnkit says so")
add("quantized", save({"q": torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)}), rnnkit="error",
    error_contains=["quantized"], why="quantized tensors are out of scope; rnnkit says so")

with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump({"torch": torch.__version__, "cases": CASES}, f, indent=1)
assert not os.path.exists(os.path.join(OUT, "pwned.txt")), "torch.load executed a payload?!"
print(f"{len(CASES)} cases in {OUT}")
