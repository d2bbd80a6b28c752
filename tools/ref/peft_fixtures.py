#!/usr/bin/env python3
"""Write tests/fixtures/peft_lora.txt: what Hugging Face PEFT computes for one LoRA-wrapped linear
layer, for tests/test_peft_ref.c. Run by hand (not by CI), from the repository root:

    /work/venv/bin/python tools/ref/peft_fixtures.py          (torch, peft; a few seconds)

The module is a plain torch nn.Linear(IN, OUT, bias=True) named "proj", wrapped by
peft.get_peft_model(LoraConfig(r, lora_alpha, target_modules=["proj"], use_rslora, use_dora)).
Its weights are then overwritten with fixed values (nonzero B, so the LoRA branch matters; a DoRA
magnitude away from the norm, so m / ||W + sBA|| matters), the model is put in float64, and
  y = model(x),  then y.backward(G)
gives y and the gradients of lora_A, lora_B, the DoRA magnitude and x (torch autograd through
PEFT's own forward: lora/layer.py Linear.forward, lora/dora.py DoraLinearLayer.forward, which
detaches ||W + sBA||). Every input is an f32 value (so the C test holds exactly the same numbers);
the reference is computed in float64, so the C test's tolerance measures its own f32 rounding.

Cases: lora (scale alpha/r), rslora (alpha/sqrt(r)), dora, dora_rslora.

Format (text, '#' lines are comments; numbers are %.17g):
  dims IN OUT R ALPHA NB NT           x is (NB, NT, IN), y is (NB, NT, OUT)
  in NAME N v1 .. vN                  W (OUT*IN, row-major), bias (OUT), A (R*IN), B (OUT*R),
                                      x (NB*NT*IN), G (NB*NT*OUT)
  case NAME rslora dora scale         scale = PEFT's lora scaling of that case
  in m OUT v1 ..                      DoRA cases: the magnitude (||W + sBA|| times 1 +- 0.3)
  out NAME N v1 .. vN                 y, dA, dB, dx; dm for DoRA cases; merged (OUT*IN): the
                                      weight of merge_and_unload() (W + sBA; DoRA: m/||.|| of it)
  end
"""
import math
import os
import sys

import torch
import peft
from peft import LoraConfig, get_peft_model

IN, OUT, R, ALPHA, NB, NT = 48, 32, 4, 6.0, 2, 3
OUT_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "peft_lora.txt")


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(IN, OUT, bias=True)

    def forward(self, x):
        return self.proj(x)


def f32(t):
    """round to float32 values, then hold them in float64"""
    return t.to(torch.float32).to(torch.float64)


def inputs():
    g = torch.Generator().manual_seed(20240531)
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1
    W = f32(u(OUT, IN) * 0.3)
    bias = f32(u(OUT) * 0.1)
    A = f32(u(R, IN) / math.sqrt(IN))       # the scale of PEFT's kaiming-uniform init
    B = f32(u(OUT, R) * 0.2)                # trained: far from the zero init
    x = f32(u(NB, NT, IN))
    G = f32(u(NB, NT, OUT))
    mjit = f32(1 + 0.3 * u(OUT))            # the magnitude = norm * this
    return dict(W=W, bias=bias, A=A, B=B, x=x, G=G, mjit=mjit)


def run(name, rslora, dora, t):
    torch.manual_seed(0)
    base = Tiny()
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=["proj"],
                     use_rslora=rslora, use_dora=dora, bias="none")
    model = get_peft_model(base, cfg).to(torch.float64)
    model.eval()  # dropout 0 either way; eval leaves PEFT's DoRA path on base_result
    layer = model.base_model.model.proj
    scale = layer.scaling["default"]
    with torch.no_grad():
        layer.base_layer.weight.copy_(t["W"])
        layer.base_layer.bias.copy_(t["bias"])
        layer.lora_A["default"].weight.copy_(t["A"])
        layer.lora_B["default"].weight.copy_(t["B"])
        m = None
        if dora:
            norm = torch.linalg.norm(t["W"] + scale * (t["B"] @ t["A"]), dim=1)
            m = f32(norm * t["mjit"])
            layer.lora_magnitude_vector["default"].weight.copy_(m)
    x = t["x"].clone().requires_grad_(True)
    y = model(x)
    y.backward(t["G"])
    out = {"y": y.detach(), "dA": layer.lora_A["default"].weight.grad, "dB": layer.lora_B["default"].weight.grad, "dx": x.grad}
    if dora:
        out["dm"] = layer.lora_magnitude_vector["default"].weight.grad
    out["merged"] = model.merge_and_unload().proj.weight.detach().clone()   # last: unwraps the model
    # the same math by hand, as a guard against a silently different code path
    s = scale
    Wx = t["x"] @ t["W"].T
    lora = (t["x"] @ t["A"].T) @ t["B"].T * s
    if dora:
        n = torch.linalg.norm(t["W"] + s * (t["B"] @ t["A"]), dim=1)
        yy = (m / n) * (Wx + lora) + t["bias"]
    else:
        yy = Wx + lora + t["bias"]
    assert torch.allclose(yy, out["y"], atol=1e-12), name
    ww = (t["W"] + s * (t["B"] @ t["A"]))
    if dora:
        ww = (m / n)[:, None] * ww
    assert torch.allclose(ww, out["merged"], atol=1e-12), name
    return scale, m, out


def fmt(v):
    return " ".join("%.17g" % float(a) for a in v.reshape(-1).tolist())


def main():
    t = inputs()
    lines = ["# peft_lora.txt: written by tools/ref/peft_fixtures.py with peft %s, torch %s" % (peft.__version__, torch.__version__.split("+")[0]),
             "# one nn.Linear(%d, %d, bias) under LoraConfig(r=%d, lora_alpha=%g); y = model(x), y.backward(G) in float64" % (IN, OUT, R, ALPHA),
             "# format: see the docstring of tools/ref/peft_fixtures.py",
             "dims %d %d %d %g %d %d" % (IN, OUT, R, ALPHA, NB, NT)]
    cases = [("lora", False, False), ("rslora", True, False), ("dora", False, True), ("dora_rslora", True, True)]
    ms = {}
    results = []
    for name, rs, do in cases:
        scale, m, out = run(name, rs, do, t)
        results.append((name, rs, do, scale, out))
        if m is not None:
            ms[name] = m
    for k in ("W", "bias", "A", "B", "x", "G"):
        lines.append("in %s %d %s" % (k, t[k].numel(), fmt(t[k])))
    for name, rs, do, scale, out in results:
        lines.append("case %s %d %d %.17g" % (name, int(rs), int(do), scale))
        if do:
            lines.append("in m %d %s" % (ms[name].numel(), fmt(ms[name])))
        for k in ("y", "dA", "dB", "dx", "dm", "merged"):
            if k in out:
                lines.append("out %s %d %s" % (k, out[k].numel(), fmt(out[k])))
        lines.append("end")
    with open(OUT_PATH, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d cases)" % (os.path.normpath(OUT_PATH), len(results)), file=sys.stderr)


# ---- LoHa: the same layer under LoHaConfig, tests/fixtures/peft_loha.txt -------------------------------
# Format as above with one case: in w1a (OUT*R), w1b (R*IN), w2a (OUT*R), w2b (R*IN) (the trained values,
# w2b nonzero so dW matters); out y, dw1a, dw1b, dw2a, dw2b, dx, merged (W + dW of merge_and_unload()).
LOHA_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "peft_loha.txt")


def loha_main():
    from peft import LoHaConfig
    t = inputs()
    g = torch.Generator().manual_seed(20261206)
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1
    h = {"w1a": f32(u(OUT, R) / math.sqrt(R)), "w1b": f32(u(R, IN) / math.sqrt(IN)),
         "w2a": f32(u(OUT, R) / math.sqrt(R)), "w2b": f32(u(R, IN) * 0.2)}
    torch.manual_seed(0)
    model = get_peft_model(Tiny(), LoHaConfig(r=R, alpha=ALPHA, target_modules=["proj"])).to(torch.float64)
    model.eval()
    layer = model.base_model.model.proj
    scale = layer.scaling["default"]
    with torch.no_grad():
        layer.base_layer.weight.copy_(t["W"])
        layer.base_layer.bias.copy_(t["bias"])
        for k, name in (("w1a", "hada_w1_a"), ("w1b", "hada_w1_b"), ("w2a", "hada_w2_a"), ("w2b", "hada_w2_b")):
            getattr(layer, name)["default"].copy_(h[k])
    x = t["x"].clone().requires_grad_(True)
    y = model(x)
    y.backward(t["G"])
    out = {"y": y.detach(), "dw1a": layer.hada_w1_a["default"].grad, "dw1b": layer.hada_w1_b["default"].grad,
           "dw2a": layer.hada_w2_a["default"].grad, "dw2b": layer.hada_w2_b["default"].grad, "dx": x.grad}
    out["merged"] = model.merge_and_unload().proj.weight.detach().clone()
    dW = scale * (h["w1a"] @ h["w1b"]) * (h["w2a"] @ h["w2b"])         # the math by hand, a guard
    assert torch.allclose(t["x"] @ (t["W"] + dW).T + t["bias"], out["y"], atol=1e-12)
    assert torch.allclose(t["W"] + dW, out["merged"], atol=1e-12)
    lines = ["# peft_loha.txt: written by tools/ref/peft_fixtures.py with peft %s, torch %s" % (peft.__version__, torch.__version__.split("+")[0]),
             "# one nn.Linear(%d, %d, bias) under LoHaConfig(r=%d, alpha=%g); y = model(x), y.backward(G) in float64" % (IN, OUT, R, ALPHA),
             "dims %d %d %d %g %d %d" % (IN, OUT, R, ALPHA, NB, NT)]
    for k in ("W", "bias", "x", "G"):
        lines.append("in %s %d %s" % (k, t[k].numel(), fmt(t[k])))
    for k in ("w1a", "w1b", "w2a", "w2b"):
        lines.append("in %s %d %s" % (k, h[k].numel(), fmt(h[k])))
    lines.append("case loha 0 0 %.17g" % scale)
    for k in ("y", "dw1a", "dw1b", "dw2a", "dw2b", "dx", "merged"):
        lines.append("out %s %d %s" % (k, out[k].numel(), fmt(out[k])))
    lines.append("end")
    with open(LOHA_PATH, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s" % os.path.normpath(LOHA_PATH), file=sys.stderr)


if __name__ == "__main__":
    main()
    loha_main()
