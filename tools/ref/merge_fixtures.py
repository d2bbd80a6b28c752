#!/usr/bin/env python3
"""Reference fixtures for finetune.h's model merging ([merge]: ft_merge_tensor), from mergekit's own code.

Writes tests/fixtures/merge.txt. Run by hand (never by CI) with a venv holding torch (CPU) and
mergekit==0.1.5 from PyPI:

    /work/venv/bin/python tools/ref/merge_fixtures.py [OUT]      # default OUT: tests/fixtures/merge.txt

Deterministic: the inputs come from a seeded numpy Generator on a coarse grid, so that x - base is
exact in float32 and many deltas share a magnitude (ties at the top-k cut) and some are exactly 0.

What runs
---------
mergekit's public entry point mergekit.merge_methods.merge_tensors (merge_methods/api.py) with the
registered methods "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", and for the
"count" sign election a GeneralizedTaskArithmeticMerge built with ConsensusMethod.count (mergekit
registers none, but the class takes it). Line numbers below are those of mergekit 0.1.5 (PyPI):
  merge_methods/linear.py                        20-38    linear_merge: sum w_i x_i, / sum w_i if normalize
  merge_methods/generalized_task_arithmetic.py   91-145   merge_group: delta = x - base, sparsify,
                                                          * weight, sign mask, sum, divisor, normalize,
                                                          lambda, base + mixed
                                                 148-172  get_mask: "sum" = sign of the sum of the weighted
                                                          deltas (>= 0 is +), "count" = of the sum of signs
  sparsify.py                                    23-53    rescaled_masked_tensor (l1: * |d|_1 / |masked|_1,
                                                          skipped when either is < 1e-7)
                                                 56-78    magnitude: k = max(1, int(density * numel)),
                                                          argsort(|d|, descending)[:k]
                                                 118-134  bernoulli: mask = torch.bernoulli(density)
  merge_methods/registry.py                      60-95    defaults: ties normalize on, rescale off;
                                                          dare_* normalize off, rescale on (l1)
Two things are pinned so that the C side can be compared exactly:
  * DARE's mask: torch.bernoulli is replaced, for the call, by a function handing out fixed 0/1
    masks (written to the file as `keep`), one per input in input order, as sparsify.bernoulli
    draws them.
  * Ties at the top-k cut: torch.argsort(descending=True) is not stable, so which of several
    equal magnitudes at the cut survive is unspecified in mergekit (on CPU it changes with the
    tensor's length). finetune.h keeps the lowest indices, which is argsort(stable=True); the
    script runs mergekit with argsort made stable. It also runs unpatched mergekit on every case
    and checks that it keeps exactly as many entries (k) and agrees wherever the cut has no tie;
    it prints how many cases differ only by that choice.
DARE's rescale changed in mergekit: before commit a2dda31 (2025-02-06; v0.1.0 has it) sparsify.bernoulli
divided by the density (`res /= density`, sparsify.py lines 93-109 at 86c30b6), as the DARE paper;
since then rescale matches the L1 norm (above). The "density" cases mirror the old code in numpy
(x * mask / float32(density)) because mergekit 0.1.5 no longer has it.

File format (plain text, whitespace separated, '\n' line ends)
--------------------------------------------------------------
  # ...                   comment
  case NAME               starts a record
  method M                linear | task | ties | dare_linear | dare_ties
  n N / k K               elements per tensor, number of inputs
  normalize 0|1           rescale none|l1|density     sign sum|count     lambda L
  weights w_1 .. w_K      densities d_1 .. d_K        (%.17g)
  base v_1 .. v_N         x v_1 .. v_N (K lines)      keep 0|1 .. (K lines, DARE only)
  out v_1 .. v_N          mergekit's result (float32, %.9g: exact)
  end
"""

import sys
from contextlib import contextmanager

import numpy as np
import torch

import mergekit
from mergekit.merge_methods import merge_tensors
from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod, GeneralizedTaskArithmeticMerge
from mergekit.sparsify import SparsificationMethod

try:
    from importlib.metadata import version
    MK_VERSION = version("mergekit")
except Exception:  # pragma: no cover
    MK_VERSION = "?"

TIES_COUNT = GeneralizedTaskArithmeticMerge(
    consensus_method=ConsensusMethod.count, sparsification_method=SparsificationMethod.magnitude,
    default_normalize=True, default_rescale=False, method_name="ties_count",
    method_pretty_name=None, method_reference_url=None)

_real_argsort = torch.argsort
_real_bernoulli = torch.bernoulli


@contextmanager
def stable_argsort(on):
    if on:
        torch.argsort = lambda t, *a, **kw: _real_argsort(t, *a, stable=True, **kw)
    try:
        yield
    finally:
        torch.argsort = _real_argsort


@contextmanager
def fixed_masks(masks):
    it = iter(masks)

    def bern(p, *a, **kw):      # sparsify.bernoulli calls torch.bernoulli(full_like(t, density))
        m = next(it)
        return torch.tensor(m, dtype=p.dtype).reshape(p.shape)
    torch.bernoulli = bern
    try:
        yield
    finally:
        torch.bernoulli = _real_bernoulli


def mk_merge(method, base, xs, weights, densities, normalize, rescale, sign, lam, keeps, stable):
    """mergekit's result for one case (float32 numpy)"""
    if method == "linear":
        with stable_argsort(stable):
            out = merge_tensors([torch.from_numpy(x) for x in xs], "linear",
                                parameters={"weight": list(weights), "normalize": bool(normalize)})
        return out.numpy()
    if rescale == "density":       # mergekit before a2dda31, mirrored (see the docstring)
        assert method in ("dare_linear", "dare_ties")
        deltas = []
        for x, d, m in zip(xs, densities, keeps):
            delta = x - base
            if d < 1:
                delta = (delta * np.asarray(m, np.float32)) / np.float32(d)
            deltas.append(delta.astype(np.float32))
        w = np.asarray(weights, np.float32)[:, None]
        dl = np.stack(deltas) * w
        if method == "dare_ties":
            sgn = np.sign(dl)
            maj = np.where(dl.sum(0) >= 0, 1, -1) if sign == "sum" else np.where(sgn.sum(0) >= 0, 1, -1)
            mask = (sgn == maj).astype(np.float32)
            mixed = (dl * mask).sum(0)
            div = (w * mask).sum(0)
            div[div == 0] = 1
        else:
            mixed = dl.sum(0)
            div = w.sum(0)
            div[np.abs(div) < 1e-8] = 1
        if normalize:
            mixed = mixed / div
        if lam != 1:
            mixed = mixed * np.float32(lam)
        return (base + mixed).astype(np.float32)
    name = {"task": "task_arithmetic", "ties": "ties", "dare_linear": "dare_linear", "dare_ties": "dare_ties"}[method]
    mm = TIES_COUNT if (method == "ties" and sign == "count") else name
    if sign == "count" and method != "ties":
        mm = GeneralizedTaskArithmeticMerge(
            consensus_method=ConsensusMethod.count, sparsification_method=SparsificationMethod.random,
            default_normalize=False, default_rescale=True, method_name="dare_ties_count",
            method_pretty_name=None, method_reference_url=None)
    params = {"weight": list(weights), "density": list(densities), "normalize": bool(normalize),
              "rescale": rescale == "l1", "lambda": float(lam)}
    tensors = [torch.from_numpy(base)] + [torch.from_numpy(x) for x in xs]
    with stable_argsort(stable), fixed_masks(keeps or []):
        out = merge_tensors(tensors, mm, base_index=0, parameters=params)
    return out.numpy()


def grid(rng, n, step, lo, hi):
    return (rng.integers(int(lo / step), int(hi / step) + 1, size=n) * step).astype(np.float32)


def make_inputs(rng, n, k, zero_frac=0.15):
    base = grid(rng, n, 1 / 64, -1, 1)
    xs = []
    for _ in range(k):
        d = grid(rng, n, 0.125, -1, 1)          # 17 values: many equal magnitudes, mixed signs
        d[rng.random(n) < zero_frac] = 0
        xs.append((base + d).astype(np.float32))
    return base, xs


def fmt(v):
    return " ".join("%.9g" % float(x) for x in v)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/merge.txt"
    rng = np.random.default_rng(20240607)
    cases = []

    def add(name, method, n, k, weights, densities=None, normalize=0, rescale="none", sign="sum", lam=1.0, dare=False,
            inputs=None):
        base, xs = inputs if inputs is not None else make_inputs(rng, n, k)
        densities = densities or [1.0] * k
        keeps = None
        if dare:
            keeps = [(rng.random(n) < d).astype(np.int64).tolist() for d in densities]
        cases.append(dict(name=name, method=method, n=n, k=k, weights=weights, densities=densities,
                          normalize=normalize, rescale=rescale, sign=sign, lam=lam, base=base, xs=xs, keeps=keeps))

    add("linear_norm", "linear", 64, 3, [0.5, 0.3, 0.2], normalize=1)
    add("linear_nonorm", "linear", 64, 3, [1.0, -0.5, 0.25], normalize=0)
    add("linear_norm_uneven", "linear", 96, 2, [2.0, 0.7], normalize=1)
    add("task", "task", 64, 3, [0.7, 0.3, 1.0], normalize=0)
    add("task_norm_lambda", "task", 64, 3, [0.7, 0.3, 1.0], normalize=1, lam=0.8)
    add("ties", "ties", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=1)
    add("ties_nonorm", "ties", 128, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=0)
    add("ties_density1", "ties", 64, 3, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], normalize=1)
    add("ties_negweight", "ties", 64, 3, [1.0, -0.5, 0.8], [0.6, 0.6, 0.6], normalize=1)
    add("ties_count", "ties", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.4, 0.7], normalize=1, sign="count")
    add("ties_rescale_l1", "ties", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=1, rescale="l1")
    add("ties_tiny_density", "ties", 64, 3, [1.0, 0.5, 0.8], [0.001, 0.02, 0.9], normalize=1)
    add("ties_density_edges", "ties", 64, 3, [1.0, 0.5, 0.8], [0.7, 0.0, 1.5], normalize=1, lam=1.25)
    add("ties_256", "ties", 256, 2, [0.6, 0.4], [0.33, 0.71], normalize=1)
    add("dare_linear", "dare_linear", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=0, rescale="l1", dare=True)
    add("dare_linear_norm", "dare_linear", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=1, rescale="l1", dare=True)
    add("dare_linear_norescale", "dare_linear", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=0, rescale="none", dare=True)
    add("dare_linear_density", "dare_linear", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=0, rescale="density", dare=True)
    add("dare_ties", "dare_ties", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=0, rescale="l1", dare=True)
    add("dare_ties_norm", "dare_ties", 128, 3, [1.0, 0.5, 0.8], [0.6, 0.4, 0.9], normalize=1, rescale="l1", dare=True)
    add("dare_ties_count", "dare_ties", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=1, rescale="l1", sign="count", dare=True)
    add("dare_ties_density", "dare_ties", 64, 3, [1.0, 0.5, 0.8], [0.5, 0.3, 0.7], normalize=1, rescale="density", dare=True)
    add("dare_ties_256", "dare_ties", 256, 2, [0.6, 0.4], [0.33, 1.0], normalize=0, rescale="l1", dare=True)

    ndiff = 0
    with open(out_path, "w", newline="\n") as f:
        f.write("# merge.txt: written by tools/ref/merge_fixtures.py with mergekit %s, torch %s, numpy %s\n"
                % (MK_VERSION, torch.__version__, np.__version__))
        f.write("# format: see the docstring of tools/ref/merge_fixtures.py; argsort made stable (lowest index wins a tie at the cut)\n")
        for c in cases:
            ref = mk_merge(c["method"], c["base"], c["xs"], c["weights"], c["densities"], c["normalize"],
                           c["rescale"], c["sign"], c["lam"], c["keeps"], stable=True)
            if c["rescale"] != "density":
                raw = mk_merge(c["method"], c["base"], c["xs"], c["weights"], c["densities"], c["normalize"],
                               c["rescale"], c["sign"], c["lam"], c["keeps"], stable=False)
                if not np.array_equal(raw, ref):
                    ndiff += 1
                    print("  %s: unpatched mergekit differs at %d of %d entries (a tie at the top-k cut)"
                          % (c["name"], int((raw != ref).sum()), c["n"]))
            f.write("case %s\nmethod %s\nn %d\nk %d\nnormalize %d\nrescale %s\nsign %s\nlambda %.17g\n"
                    % (c["name"], c["method"], c["n"], c["k"], c["normalize"], c["rescale"], c["sign"], c["lam"]))
            f.write("weights %s\n" % " ".join("%.17g" % w for w in c["weights"]))
            f.write("densities %s\n" % " ".join("%.17g" % d for d in c["densities"]))
            f.write("base %s\n" % fmt(c["base"]))
            for x in c["xs"]:
                f.write("x %s\n" % fmt(x))
            for m in c["keeps"] or []:
                f.write("keep %s\n" % " ".join(str(int(v)) for v in m))
            f.write("out %s\nend\n" % fmt(ref))
    check_ties_only(cases)
    print("wrote %s: %d cases (%d where unpatched mergekit picks other tied entries at the cut)" % (out_path, len(cases), ndiff))


def check_ties_only(cases):
    """unpatched mergekit keeps exactly k entries per input (a top-k, not a threshold that keeps all ties)"""
    from mergekit.sparsify import magnitude
    for c in cases:
        if c["method"] != "ties":
            continue
        for x, d in zip(c["xs"], c["densities"]):
            t = torch.from_numpy(x - c["base"])
            kept = int((magnitude(t, d) != 0).sum())
            nz = int((t != 0).sum())
            if 0 < d < 1:
                k = max(1, int(d * t.numel()))
                assert kept == min(k, nz), (c["name"], kept, k, nz)


if __name__ == "__main__":
    main()
