#!/usr/bin/env python3
"""Write tests/fixtures/nf4.bin: NF4 with double quantization (QLoRA) as bitsandbytes computes it
on the CPU: bitsandbytes.functional.quantize_4bit(x, blocksize=64, quant_type="nf4",
compress_statistics=True) and dequantize_4bit. Run by hand (not by CI):

    pip install torch bitsandbytes numpy && python3 tools/ref/nf4_fixtures.py

(written with bitsandbytes 0.50.2, torch 2.15 on x86-64; deterministic). `--check [FILE]` only
reads an existing fixture back and checks it.

What bitsandbytes 0.50.2 does on the CPU (checked below, and what finetune.h reproduces):
  * 4-bit: the "default" torch kernel. absmax = max|x| per block of 64 (a trailing partial block
    has its own); full blocks: scaled = clamp(x * (1 / max(absmax, 1e-38)), -1, 1); the partial
    block: clamp(x / max(absmax, 1e-38)) (a true division; its stored absmax is the clamped one);
    index = torch.bucketize(scaled, midpoints) = the number of midpoints < scaled, so an exact
    midpoint goes to the LOWER index; an odd count is padded with 0.0 (code 7).
    byte = q[2i] << 4 | q[2i+1]: the first element is the HIGH nibble.
  * double quantization: offset = absmax.mean() (torch: an 8-lane cascade sum in f32, then / n);
    quantize_blockwise(absmax - offset, blocksize=256) with create_dynamic_map(signed=True): the
    C kernel (cquantize_blockwise_cpu_fp32) takes absmax2 = max|v| per 256, v * (1/absmax2), and
    does NOT search the nearest code: it rounds (v+1)/2 to a 65536-step grid
    (uint16)fma((v+1)*0.5, 65535, 0.5) and looks the grid point up in a table built from the code's
    midpoints (index = midpoints below -1 + 2i/65535). A zero block gets index 0 (code -1).
  * dequantize: absmax = code[q] * absmax2 + offset (two f32 roundings), y = nf4[q] * absmax.
  * torch.linspace (inside create_dynamic_map) contracts start + step*i into an FMA in torch's
    AVX2/AVX-512 kernels and not in its DEFAULT one: the map differs in 42 entries (1 ulp).
  * bug seen in bitsandbytes 0.50.2: the AVX-512 dequantize_4bit kernel indexes absmax per row
    (row * (cols // 64) + k // 64) when cols % 16 == 0 and cols % 64 != 0, which is wrong for
    flat 64-blocks; such shapes are left out of this fixture (the reference is flat blocks).

Format (little-endian): b"FTN4", u32 count; per entry: u32 name length, name, u32 ndim,
u64 shape[ndim], u64 n, u64 nb (= ceil(n/64)), u64 nb2 (= ceil(nb/256)); f32 x[n];
u8 packed[ceil(n/2)]; u8 qabsmax[nb]; f32 absmax2[nb2]; f32 offset; f32 code[256] (the nested
state's dynamic map); f32 absmax[nb] (dequantized); f32 y[n] (dequantize_4bit).
"""
import os, struct, sys
import numpy as np

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
MID = ((NF4[:-1] + NF4[1:]) / np.float32(2)).astype(np.float32)


def tensors():
    rng = np.random.default_rng(20261129)
    out = []
    # a linear weight: 32 x 576 = 288 blocks -> two second-level blocks (256 + 32); a few
    # outlier rows so the absmax spread is realistic
    w = (rng.standard_normal((32, 576)) * 0.02).astype(np.float32)
    w[3] *= 8.0
    w[17, :5] = [0.3, -0.25, 0.2, 0.0, -0.0]
    out.append(("weight_32x576", w))
    # 4999 elements: 78 full blocks + 7, odd (a pad nibble), one partial second-level block
    out.append(("odd_4999", (rng.standard_normal(4999) * 0.1).astype(np.float32)))
    # blocks that cross rows (63 columns), odd count; bnb dequantizes odd columns generically
    out.append(("rows_5x63", (rng.standard_normal((5, 63)) * 0.05).astype(np.float32)))
    # special blocks (one row = one block)
    s = np.zeros((8, 64), dtype=np.float32)
    s[1, :] = 0.5                                             # constant block
    s[2, 0] = 1.0; s[2, 1:16] = MID; s[2, 16:32] = NF4        # exact midpoints and codes, absmax 1
    s[2, 32:47] = -MID                                        # negative midpoints
    s[2, 47:62] = np.nextafter(MID, np.float32(2)); s[2, 62] = -1.0   # one ulp above each midpoint
    s[3, :] = rng.standard_normal(64).astype(np.float32) * 0.01; s[3, 9] = -0.07   # absmax from a negative
    s[4, :] = rng.standard_normal(64).astype(np.float32) * 1e-39                  # subnormal: absmax below the 1e-38 clamp
    s[5, :] = rng.standard_normal(64).astype(np.float32) * 1e3                    # large
    s[6, :] = -0.0; s[6, 5] = 0.25; s[6, 6] = -0.125                              # -0.0 and a few
    s[7, :] = rng.uniform(-1, 1, 64).astype(np.float32)
    out.append(("special_8x64", s))
    return out


def bnb_quantize(x):
    import torch
    import bitsandbytes.functional as F
    t = torch.from_numpy(x.copy())
    q, st = F.quantize_4bit(t, blocksize=64, quant_type="nf4", compress_statistics=True)
    y = F.dequantize_4bit(q, st)
    absmax = F.dequantize_blockwise(st.absmax, st.state2)
    absmax += st.offset
    return dict(packed=q.numpy().reshape(-1).astype(np.uint8), qabsmax=st.absmax.numpy().astype(np.uint8),
                absmax2=st.state2.absmax.numpy().astype(np.float32), offset=np.float32(st.offset.item()),
                code=st.state2.code.numpy().astype(np.float32), absmax=absmax.numpy().astype(np.float32),
                y=y.numpy().reshape(-1).astype(np.float32), blocksize2=st.state2.blocksize)


def check_reference_facts():
    """REFERENCE.md's claims against what bitsandbytes does"""
    import torch
    import bitsandbytes.functional as F
    # a block with absmax 1: the midpoints themselves quantize to the lower index
    x = np.zeros(64, dtype=np.float32); x[0] = 1.0; x[1:16] = MID
    q, _ = F.quantize_4bit(torch.from_numpy(x), blocksize=64, quant_type="nf4", compress_statistics=False)
    b = q.numpy().reshape(-1)
    idx = np.empty(64, dtype=np.int64); idx[0::2] = b >> 4; idx[1::2] = b & 15
    assert idx[0] == 15 and list(idx[1:16]) == list(range(15)), idx[:16]
    # first element in the high nibble
    x = np.zeros(64, dtype=np.float32); x[0] = -1.0; x[1] = 1.0
    q, _ = F.quantize_4bit(torch.from_numpy(x), blocksize=64, quant_type="nf4", compress_statistics=False)
    assert q.numpy().reshape(-1)[0] == 0x0F
    # the 8-bit nested quantization is a 65536-grid lookup, not the nearest code: count the
    # differences on random values
    code = F.create_dynamic_map(True, 7, 8).numpy()
    v = np.random.default_rng(1).uniform(-1, 1, 256 * 64).astype(np.float32)
    v[::256] = 1.0                                             # absmax 1 per block: scaled = v
    q8, _ = F.quantize_blockwise(torch.from_numpy(v), blocksize=256)
    near = np.abs(v[:, None].astype(np.float64) - code[None, :]).argmin(1)
    diff = int((q8.numpy() != near).sum())
    print(f"facts: tie -> lower index, first element high nibble: ok; 8-bit lookup differs from the "
          f"nearest code in {diff} of {v.size}", file=sys.stderr)


def main():
    import torch
    import bitsandbytes
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "nf4.bin")
    check_reference_facts()
    entries = []
    for name, x in tensors():
        r = bnb_quantize(x)
        assert r["blocksize2"] == 256
        n = x.size; nb = -(-n // 64); nb2 = -(-nb // 256)
        assert r["packed"].size == (n + 1) // 2 and r["qabsmax"].size == nb and r["absmax2"].size == nb2
        entries.append((name, x, r))
        print(f"{name:14s} n={n:6d} blocks={nb:4d} second-level={nb2} offset={float(r['offset']).hex()}",
              file=sys.stderr)
    with open(out, "wb") as f:
        f.write(b"FTN4" + struct.pack("<I", len(entries)))
        for name, x, r in entries:
            nm = name.encode()
            f.write(struct.pack("<I", len(nm)) + nm + struct.pack("<I", x.ndim))
            f.write(struct.pack("<%dQ" % x.ndim, *x.shape))
            n = x.size; nb = -(-n // 64); nb2 = -(-nb // 256)
            f.write(struct.pack("<QQQ", n, nb, nb2))
            f.write(x.astype("<f4").tobytes())
            f.write(r["packed"].tobytes())
            f.write(r["qabsmax"].tobytes())
            f.write(r["absmax2"].astype("<f4").tobytes())
            f.write(struct.pack("<f", r["offset"]))
            f.write(r["code"].astype("<f4").tobytes())
            f.write(r["absmax"].astype("<f4").tobytes())
            f.write(r["y"].astype("<f4").tobytes())
    print(f"wrote {out} ({os.path.getsize(out)} bytes) with bitsandbytes {bitsandbytes.__version__}, "
          f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})", file=sys.stderr)
    check(out)


def read(path):
    data = open(path, "rb").read()
    assert data[:4] == b"FTN4", "bad magic"
    (count,) = struct.unpack_from("<I", data, 4)
    pos, res = 8, []
    def take(dt, k):
        nonlocal pos
        a = np.frombuffer(data, dt, k, pos); pos += a.nbytes; return a
    for _ in range(count):
        (ln,) = struct.unpack_from("<I", data, pos); pos += 4
        name = data[pos:pos + ln].decode(); pos += ln
        (nd,) = struct.unpack_from("<I", data, pos); pos += 4
        shape = struct.unpack_from("<%dQ" % nd, data, pos); pos += 8 * nd
        n, nb, nb2 = struct.unpack_from("<QQQ", data, pos); pos += 24
        e = dict(name=name, shape=shape, x=take("<f4", n), packed=take(np.uint8, (n + 1) // 2),
                 qabsmax=take(np.uint8, nb), absmax2=take("<f4", nb2), offset=take("<f4", 1)[0],
                 code=take("<f4", 256), absmax=take("<f4", nb), y=take("<f4", n))
        res.append(e)
    assert pos == len(data), "trailing bytes"
    return res


def check(path):
    """re-read; the stored pieces dequantize to the stored output (numpy, flat 64-blocks)"""
    for e in read(path):
        n = e["x"].size
        am = (e["code"][e["qabsmax"]] * np.repeat(e["absmax2"], 256)[:e["qabsmax"].size]).astype(np.float32)
        am = (am + e["offset"]).astype(np.float32)
        assert np.array_equal(am.view(np.uint32), e["absmax"].view(np.uint32)), e["name"]
        q = np.empty(e["packed"].size * 2, dtype=np.int64)
        q[0::2] = e["packed"] >> 4; q[1::2] = e["packed"] & 15
        y = (NF4[q[:n]] * np.repeat(am, 64)[:n]).astype(np.float32)
        assert np.array_equal(y.view(np.uint32), e["y"].view(np.uint32)), e["name"]
    print(f"check {path}: ok", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        check(sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "nf4.bin"))
    else:
        main()
