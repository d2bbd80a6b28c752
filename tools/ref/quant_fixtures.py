#!/usr/bin/env python3
"""Write tests/fixtures/quant.bin: raw GGML blocks and their dequantized values, per type, from
the `gguf` Python package (gguf.quants), an implementation independent of llama.cpp's C code.
Run by hand (not by CI):  pip install gguf numpy && python3 tools/ref/quant_fixtures.py
(written with gguf 0.19.0, numpy 2.4.6; the output is deterministic). `--check [FILE]` only reads
an existing fixture back and checks it.

Per type: 2 rows of 512 values. Where gguf can quantize in Python the rows are random floats
quantized by it; otherwise (some K-quants, IQ4_NL) the blocks are random bytes with finite,
moderate f16 scales. Either way the expected floats are gguf.quants.dequantize of the bytes.

Format (little-endian): b"FTQF", u32 count; per entry: u32 ggml type, u32 rows, u32 cols,
u32 n_bytes, the bytes, then rows*cols float32.
"""
import struct, sys, os
import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf import quants

TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
         T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL]
ROWS, COLS = 2, 512

def f16_bytes(rng, n, lo, hi):
    return np.asarray(rng.uniform(lo, hi, n), dtype=np.float16).view(np.uint8)

def random_blocks(rng, t, nblocks):
    """random block bytes whose f16 scale fields are finite and moderate"""
    bs, ts = GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(nblocks, ts), dtype=np.uint8)
    # offsets of the f16 fields in each block layout
    f16_fields = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2],
                  T.Q6_K: [208], T.IQ4_NL: [0]}[t]
    for off in f16_fields:
        raw[:, off:off + 2] = f16_bytes(rng, nblocks, -0.1, 0.1).reshape(nblocks, 2)
    return raw.reshape(-1)

def main():
    out = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "quant.bin")
    rng = np.random.default_rng(20261128)
    entries = []
    for t in TYPES:
        x = rng.standard_normal((ROWS, COLS)).astype(np.float32) * 0.05
        try:
            q = quants.quantize(x, t)
            raw = np.ascontiguousarray(q).view(np.uint8).reshape(-1)
            how = "quantized"
        except (NotImplementedError, quants.QuantError, Exception):
            bs, ts = GGML_QUANT_SIZES[t]
            raw = random_blocks(rng, t, ROWS * COLS // bs)
            how = "random blocks"
        deq = quants.dequantize(raw.reshape(ROWS, -1), t).astype(np.float32).reshape(ROWS, COLS)
        assert np.all(np.isfinite(deq)), t
        entries.append((int(t), raw.tobytes(), deq))
        print(f"{t.name:7s} {how:14s} {len(raw):6d} bytes", file=sys.stderr)
    with open(out, "wb") as f:
        f.write(b"FTQF" + struct.pack("<I", len(entries)))
        for t, raw, deq in entries:
            f.write(struct.pack("<IIII", t, ROWS, COLS, len(raw)))
            f.write(raw)
            f.write(deq.astype("<f4").tobytes())
    print(f"wrote {out} ({os.path.getsize(out)} bytes)", file=sys.stderr)
    check(out)

def check(path):
    """read the file back: layout, block sizes, and bytes that dequantize to the stored floats"""
    data = open(path, "rb").read()
    assert data[:4] == b"FTQF", "bad magic"
    (count,) = struct.unpack_from("<I", data, 4)
    pos, seen = 8, []
    for _ in range(count):
        t, rows, cols, nb = struct.unpack_from("<IIII", data, pos)
        pos += 16
        bs, ts = GGML_QUANT_SIZES[T(t)]
        assert cols % bs == 0 and nb == rows * cols // bs * ts, (T(t).name, nb)
        raw = np.frombuffer(data, np.uint8, nb, pos)
        pos += nb
        vals = np.frombuffer(data, "<f4", rows * cols, pos).reshape(rows, cols)
        pos += 4 * rows * cols
        deq = quants.dequantize(raw.reshape(rows, -1), T(t)).astype(np.float32).reshape(rows, cols)
        assert np.array_equal(deq.view(np.uint32), vals.view(np.uint32)), T(t).name
        seen.append(T(t))
    assert pos == len(data), "trailing bytes"
    assert seen == TYPES, seen
    print(f"checked {path}: {count} entries, {len(data)} bytes", file=sys.stderr)

if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        check(sys.argv[2] if len(sys.argv) > 2 else
              os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "quant.bin"))
    else:
        main()
