#!/usr/bin/env python3
"""Check an NF4 GGUF written by finetune.h (`ft quantize --type nf4`, ft_model_save_gguf) with
independent readers:

    python3 tools/ref/nf4_gguf_check.py OUT.gguf [--source IN.gguf] [--limit N]

1. gguf.GGUFReader parses the file; every NF4 weight has its four companions with the sizes
   the format promises (finetune.h's [model] section: "NF4 weights in GGUF").
2. bitsandbytes' dequantize_4bit of the stored state (QuantState with a nested state2) equals a
   numpy decode, bit for bit.
3. With --source (the GGUF it was made from): the source's weights, dequantized to f32 by
   gguf.quants, quantized by bitsandbytes' quantize_4bit(blocksize=64, "nf4",
   compress_statistics=True) give the same packed bytes, codes, scales and offset as the file.
   Also prints the round-trip error of NF4, and of gguf's Q4_0 / Q4_1 on the same f32 weights.
Needs numpy, gguf, torch, bitsandbytes. Exit status 0 when everything matches.
"""
import argparse, sys
import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf import quants

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
SUF = (".nf4_absmax", ".nf4_absmax2", ".nf4_offset", ".nf4_code")


def field_str(r, key):
    f = r.fields.get(key)
    return None if f is None else bytes(f.parts[f.data[0]]).decode()


def np_decode(packed, qa, a2, off, code, n):
    am = (code[qa] * np.repeat(a2, 256)[:qa.size]).astype(np.float32)
    am = (am + np.float32(off)).astype(np.float32)
    q = np.empty(packed.size * 2, dtype=np.int64)
    q[0::2] = packed >> 4; q[1::2] = packed & 15
    return (NF4[q[:n]] * np.repeat(am, 64)[:n]).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path"); ap.add_argument("--source"); ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    import torch
    import bitsandbytes.functional as F
    from bitsandbytes.functional import QuantState
    r = GGUFReader(a.path)
    assert field_str(r, "finetune.quantization") == "nf4", "finetune.quantization"
    t = {x.name: x for x in r.tensors}
    src = {x.name: x for x in GGUFReader(a.source).tensors} if a.source else {}
    weights = [n for n in t if n + SUF[0] in t]
    print(f"{a.path}: GGUFReader parsed {len(r.tensors)} tensors, {len(r.fields)} keys; {len(weights)} NF4 weights",
          file=sys.stderr)
    bad = 0; err = {"nf4": [], "q4_0": [], "q4_1": []}
    for i, name in enumerate(weights):
        if a.limit and i >= a.limit: break
        pk = t[name]
        assert pk.tensor_type == T.I8 and len(pk.shape) == 2, name
        cols, rows = int(pk.shape[0]) * 2, int(pk.shape[1])
        n = rows * cols; nb = -(-n // 64); nb2 = -(-nb // 256)
        c = [t[name + s] for s in SUF]
        assert c[0].tensor_type == T.I8 and int(c[0].shape[0]) == nb, name
        assert all(x.tensor_type == T.F32 for x in c[1:]) and [int(x.shape[0]) for x in c[1:]] == [nb2, 1, 256], name
        packed = np.asarray(pk.data).view(np.uint8).reshape(-1)
        qa = np.asarray(c[0].data).view(np.uint8).reshape(-1)
        a2, off, code = (np.asarray(x.data, dtype=np.float32).reshape(-1) for x in c[1:])
        y_np = np_decode(packed, qa, a2, off[0], code, n)
        st2 = QuantState(absmax=torch.from_numpy(a2.copy()), code=torch.from_numpy(code.copy()), blocksize=256, dtype=torch.float32)
        st = QuantState(absmax=torch.from_numpy(qa.copy()), shape=torch.Size([rows, cols]), dtype=torch.float32, blocksize=64,
                        code=F.get_4bit_type("nf4", device="cpu"), quant_type="nf4", offset=torch.tensor(off[0]), state2=st2)
        y_bnb = F.dequantize_4bit(torch.from_numpy(packed.copy()).reshape(-1, 1), st).numpy().reshape(-1)
        if not np.array_equal(y_np.view(np.uint32), y_bnb.view(np.uint32)):
            print(f"  {name}: bitsandbytes' dequantize differs from the numpy decode", file=sys.stderr); bad += 1
        if name in src:
            s = src[name]
            w = quants.dequantize(np.asarray(s.data), s.tensor_type).astype(np.float32).reshape(-1)
            q, qs = F.quantize_4bit(torch.from_numpy(w.copy()), blocksize=64, quant_type="nf4", compress_statistics=True)
            same = (np.array_equal(q.numpy().reshape(-1), packed) and np.array_equal(qs.absmax.numpy(), qa) and
                    np.array_equal(qs.state2.absmax.numpy().view(np.uint32), a2.view(np.uint32)) and
                    np.float32(qs.offset.item()).view(np.uint32) == off[0].view(np.uint32))
            if not same:
                print(f"  {name}: bitsandbytes' quantize_4bit of the source differs from the file", file=sys.stderr); bad += 1
            sd = float(w.std())
            def e(rt): d = rt.astype(np.float64) - w; return (np.sqrt(np.mean(d * d)), np.max(np.abs(d)), sd)
            err["nf4"].append(e(y_np) + (n,))
            for qt, key in ((T.Q4_0, "q4_0"), (T.Q4_1, "q4_1")):
                rt = quants.dequantize(quants.quantize(w.reshape(rows, cols), qt), qt).astype(np.float32).reshape(-1)
                err[key].append(e(rt) + (n,))
    if err["nf4"]:
        print("round trip of the source's f32 weights (all linear weights; RMSE and max weighted by count):", file=sys.stderr)
        for k, v in err.items():
            v = np.array(v); w_ = v[:, 3] / v[:, 3].sum()
            rmse = np.sqrt(np.sum(w_ * v[:, 0] ** 2)); mx = v[:, 1].max(); rel = np.sum(w_ * v[:, 0] / v[:, 2])
            print(f"  {k:5s} RMSE {rmse:.6f}  max abs {mx:.5f}  RMSE / weight std {rel:.4f}", file=sys.stderr)
    print("ok" if bad == 0 else f"{bad} mismatches", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
