"""Builds the hostile inputs of tests/fuzz_regressions/ (committed; rerun only to change them):
    .venv/bin/python tests/fuzz_regressions/make_corpus.py tests/fuzz_regressions
"""
import io, json, os, struct, sys, zipfile
import torch

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

def saved(obj):
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()

def torch_zip(pkl, extra=()):
    """A torch.save-style zip (stored records) around a hand-written data.pkl."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for n, d in extra:
            z.writestr(n, d)
        z.writestr("archive/version", b"3\n")
    return b.getvalue()

def write(name, data):
    assert len(data) <= 16384, (name, len(data))
    open(os.path.join(out, name), "wb").write(data)
    print(f"{name}: {len(data)} bytes")

# 1. A real torch.save file cut after 60% of its bytes (the central directory is gone).
full = saved({"w": torch.arange(16, dtype=torch.float32), "b": torch.ones(3)})
write("truncated_zip.pth", full[: len(full) * 6 // 10])

# 2. Bad pickle opcodes: 0xff and 0xfe are no opcode of any protocol; in a zip and bare
#    (a bare pickle is read as a legacy file).
write("bad_opcode_zip.pth", torch_zip(b"\x80\x02}q\x00(X\x01\x00\x00\x00a\xff\xfeK\x01u."))
write("bad_opcode_legacy.pth", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02\xff\xfe.")

# 3. Memo bomb: a tensor, then 64 levels of {"a": level i-1, "b": level i-1} through the memo
#    (2^64 tensor names when flattened; torch.load(weights_only=True) loads it at once).
one_tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
              b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89"
              b"ccollections\nOrderedDict\n)RtR")
p = bytearray(b"\x80\x02" + one_tensor + b"q\x00")
for i in range(64):
    p += b"}q" + bytes([i + 1]) + b"(X\x01\x00\x00\x00ah" + bytes([i]) + b"X\x01\x00\x00\x00bh" + bytes([i]) + b"u"
p += b"."
write("memo_bomb.pth", torch_zip(bytes(p), [("archive/data/0", b"\0" * 4)]))

# 4. Deep nesting: 4000 lists inside each other, and 4000 MARKs of nested tuples.
n = 4000
write("deep_nesting_lists.pth", torch_zip(b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."))
write("deep_nesting_tuples.pth", torch_zip(b"\x80\x02" + b"(" * n + b"t" * n + b"."))

# 5. safetensors headers: two tensors over the same bytes; a header length of 2^63; a shape
#    whose element count overflows 64 bits.
def st(header, data):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data
write("overlapping_offsets.safetensors", st({
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12))
write("huge_header_length.safetensors", struct.pack("<Q", 1 << 63) + b"{}")
write("numel_overflow.safetensors", st({
    "a": {"dtype": "F32", "shape": [1 << 32, 1 << 32, 1 << 32], "data_offsets": [0, 4]}}, b"\0" * 4))

# 6. A stride-0 view: one float expanded to 2^24 x 2^24 (2^48 elements, 1 PiB materialised)
#    from a 4-byte storage.
write("expand_stride0.pth", saved(torch.zeros(1).expand(2 ** 24, 2 ** 24)))
