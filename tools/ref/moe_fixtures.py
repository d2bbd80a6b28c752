"""tools/ref/moe_fixtures.py: the router losses of a mixture of experts, from transformers' own code.

Writes tests/fixtures/moe_router.txt: for a few configurations (layers L, tokens N, experts E,
top-k), seeded random router logits per layer, and
  - the load-balancing loss of transformers.models.mixtral.modeling_mixtral.load_balancing_loss_func
    (the function Mixtral, Qwen3-MoE and OLMoE share; no attention mask) and its gradient with
    respect to every logit (torch autograd, float64);
  - the router z-loss of transformers.models.switch_transformers' router_z_loss_func (mean over the
    tokens of logsumexp(logits)^2) and its gradient.
Format (text):
  case <name> <L> <N> <E> <k>
  logits <L*N*E floats, layer-major, %.9g>
  aux <value> ; aux_grad <L*N*E floats>
  z <value> ; z_grad <L*N*E floats>
  end
Run: /work/venv/bin/python tools/ref/moe_fixtures.py   (torch, transformers; deterministic)
"""
import os
import sys

import torch
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
from transformers.models.switch_transformers.modeling_switch_transformers import router_z_loss_func

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "moe_router.txt")
CASES = [("mixtral_like", 2, 12, 8, 2), ("one_layer_top1", 1, 9, 4, 1), ("olmoe_like", 3, 7, 16, 4)]


def fmt(t):
    return " ".join("%.9g" % v for v in t.detach().reshape(-1).tolist())


def main():
    torch.manual_seed(1234)
    lines = []
    for name, L, N, E, k in CASES:
        logits = (torch.randn(L, N, E, dtype=torch.float64) * 1.5).float().double()
        x = logits.clone().requires_grad_(True)
        aux = load_balancing_loss_func(tuple(x[l] for l in range(L)), E, k)
        aux.backward()
        aux_grad = x.grad.clone()
        y = logits.clone().requires_grad_(True)
        # router_z_loss_func takes (groups, tokens per group, experts): one group of L*N tokens
        z = router_z_loss_func(y.reshape(1, L * N, E))
        z.backward()
        lines.append("case %s %d %d %d %d" % (name, L, N, E, k))
        lines.append("logits " + fmt(logits))
        lines.append("aux %.12g" % aux.item())
        lines.append("aux_grad " + fmt(aux_grad))
        lines.append("z %.12g" % z.item())
        lines.append("z_grad " + fmt(y.grad))
        lines.append("end")
        print("%s: aux %.6f z %.6f" % (name, aux.item(), z.item()), file=sys.stderr)
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
