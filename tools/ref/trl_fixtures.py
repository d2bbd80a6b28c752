#!/usr/bin/env python3
"""Reference fixtures for finetune.h's preference / RL losses, computed with TRL's own loss code.

Writes tests/fixtures/trl_losses.txt. Run by hand (never by CI) with a venv holding
torch (CPU is enough) and trl==1.16.0:

    /work/venv/bin/python tools/ref/trl_fixtures.py [OUT]        # default OUT: tests/fixtures/trl_losses.txt

Deterministic: every input comes from a seeded torch.Generator, all math is float64 on the CPU
(except where TRL itself casts to float32: ORPO's odds_ratio_loss), so two runs give identical files.

How TRL is called
-----------------
TRL 1.16 computes most losses inside `Trainer._compute_loss(model, inputs)` methods that need a model
forward. We call those methods UNBOUND with a small stand-in `self` carrying exactly the attributes they
read, and a fake `model` whose forward returns an object with `.log_probs` (or `.logits` for the reward
model) built from the leaf tensors below, so the loss code that runs is TRL's, line for line:
  DPO     trl/trainer/dpo_trainer.py      DPOTrainer._compute_loss
  KTO     trl/trainer/kto_trainer.py      KTOTrainer._compute_loss (+ _compute_kl_logps)
  reward  trl/trainer/reward_trainer.py   RewardTrainer.compute_loss
  GRPO    trl/trainer/grpo_trainer.py     GRPOTrainer._compute_loss (stand-in _get_per_token_logps_and_entropies)
  ORPO    trl/experimental/orpo/orpo_trainer.py  ORPOTrainer.get_batch_loss_metrics + odds_ratio_loss
  CPO/SimPO trl/experimental/cpo/cpo_trainer.py  CPOTrainer.get_batch_loss_metrics + cpo_loss
Pieces that are not callable in isolation are mirrored line by line (comment names file:lines):
  GRPO advantages  (inline in GRPOTrainer._generate_and_score_completions; uses TRL's own nanstd)
  PPO              (PPO is NOT in trl 1.16.0; mirrored from huggingface/trl v1.9.0
                    trl/experimental/ppo/ppo_trainer.py, identical at 1.10.0.dev0 f2cd577)
Each record carries `src` lines naming the function(s) and their file:line span in the installed TRL.

File format (plain text, one token per whitespace, '\n' line ends)
------------------------------------------------------------------
  # ...                        comment (only before the first case)
  case NAME                    starts a record; NAME has no spaces
  kind KIND                    dpo | kto | reward | orpo | cpo | grpo_adv | grpo | ppo
  src TEXT...                  provenance (free text to end of line) -- ignore when parsing numbers
  note TEXT...                 free text to end of line -- ignore
  param KEY VALUE              scalar option; VALUE is a number (%.17g) or a bare word (e.g. sigmoid, none)
  in NAME n v1 ... vn          input tensor, flattened row-major ([B,T] -> b*T+t), n values
  out NAME n v1 ... vn         output (loss, per-item values, metrics) computed by TRL
  grad NAME n v1 ... vn        d(loss)/d(input NAME), same shape as `in NAME`
  end                          ends the record
All numbers are printed with %.17g (masks and integers print as e.g. 0, 1, 7). A parser should ignore
unknown line keywords. 2-D tensors are [B, T] with B = param B and T = param T of the record.
"""

import inspect
import math
import os
import sys
import types
from collections import defaultdict

import torch
import torch.nn.functional as F

import trl
from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RewardTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer
from trl.trainer.utils import nanstd

assert trl.__version__ == "1.16.0", f"fixtures are defined against trl 1.16.0, found {trl.__version__}"
torch.use_deterministic_algorithms(True)
DT = torch.float64


# --------------------------------------------------------------------------------------------- helpers
def src(fn):
    lines, start = inspect.getsourcelines(fn)
    path = inspect.getsourcefile(fn).split("site-packages/")[-1]
    return f"{fn.__qualname__} {path}:{start}-{start + len(lines) - 1} (trl {trl.__version__})"


def fmt(x):
    x = float(x)
    if x == 0.0:
        x = 0.0  # print -0 as 0
    return "%.17g" % x


class Writer:
    def __init__(self):
        self.lines = []

    def case(self, name, kind, srcs=(), notes=(), params=None):
        self.lines.append(f"case {name}")
        self.lines.append(f"kind {kind}")
        for s in srcs:
            self.lines.append(f"src {s}")
        for n in notes:
            self.lines.append(f"note {n}")
        for k, v in (params or {}).items():
            if isinstance(v, bool):
                v = int(v)
            self.lines.append(f"param {k} {fmt(v) if isinstance(v, (int, float)) else v}")

    def vec(self, tag, name, t):
        if isinstance(t, torch.Tensor):
            vals = t.detach().to(torch.float64).reshape(-1).tolist()
        elif isinstance(t, (list, tuple)):
            vals = [float(v) for v in t]
        else:
            vals = [float(t)]
        self.lines.append(f"{tag} {name} {len(vals)} " + " ".join(fmt(v) for v in vals))

    def end(self):
        self.lines.append("end")


def gen(seed):
    g = torch.Generator().manual_seed(seed)
    return g


def U(g, shape, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=DT)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


class FakeAccel:
    """accelerator stand-in: single process, identity gathers."""

    device = torch.device("cpu")
    num_processes = 1
    process_index = 0
    sync_gradients = True

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x

    def unwrap_model(self, m):
        return m


class FakeModule:
    training = True


def base_stub(**kw):
    s = types.SimpleNamespace(
        accelerator=FakeAccel(),
        model=FakeModule(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        aux_loss_enabled=False,
    )
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def metrics_of(stub, keys):
    m = stub._metrics["train"]
    return {k: m[k][-1] for k in keys if k in m and len(m[k])}


def grads(loss, leaves):
    gs = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [torch.zeros_like(l) if g is None else g for g, l in zip(gs, leaves)]


def completion_mask_from_lengths(lengths, T):
    """[N, T] mask: column 0 is the (single) prompt token, then `len` completion tokens, then padding."""
    m = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, L in enumerate(lengths):
        m[i, 1 : 1 + int(L)] = 1
    return m


W = Writer()

# ============================================================================================== DPO
# TRL 1.16 DPOTrainer._compute_loss: logps = per_token_logps.sum(dim=1) (SUM over completion tokens; the
# fused LM head returns 0 at label -100 positions). Batch is [chosen_0..B-1, rejected_0..B-1].
# Our fake model returns log_probs[:, 0] = the sequence logp and 0 elsewhere, so the sum is exact.


class DPOModel:
    def __init__(self, seq_logps, width):
        self.seq_logps, self.width = seq_logps, width

    def __call__(self, **kw):
        n = self.seq_logps.shape[0]
        lp = torch.cat([self.seq_logps.unsqueeze(1), torch.zeros(n, self.width - 1, dtype=DT)], dim=1)
        z = torch.zeros(n, self.width, dtype=DT)
        return types.SimpleNamespace(log_probs=lp, entropy=z, mean_logits=z, is_top1=torch.zeros(n, self.width, dtype=torch.bool))


def dpo_inputs(seed, B=5):
    g = gen(seed)
    ref_c = -U(g, (B,), 15.0, 40.0)
    ref_r = -U(g, (B,), 15.0, 40.0)
    pol_c = ref_c + U(g, (B,), -14.0, 14.0)
    pol_r = ref_r + U(g, (B,), -14.0, 14.0)
    len_c = torch.randint(2, 12, (B,), generator=g)
    len_r = torch.randint(2, 12, (B,), generator=g)
    return pol_c, pol_r, ref_c, ref_r, len_c, len_r


def run_dpo(name, loss_type, beta=0.1, label_smoothing=0.0, seed=107, notes=()):
    B = 5
    pol_c, pol_r, ref_c, ref_r, len_c, len_r = dpo_inputs(seed, B)
    c, r = leaf(pol_c), leaf(pol_r)
    T = int(max(len_c.max(), len_r.max())) + 1
    cmask = completion_mask_from_lengths(torch.cat([len_c, len_r]).tolist(), T)
    inputs = {
        "input_ids": torch.ones(2 * B, T, dtype=torch.long),
        "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
        "completion_mask": cmask,
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
    }
    stub = base_stub(
        beta=beta, loss_types=[loss_type], loss_weights=[1.0], label_smoothing=label_smoothing,
        f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5, ld_alpha=None, use_weighting=False,
        precompute_ref_logps=True, ref_model=None, args=types.SimpleNamespace(gradient_checkpointing_kwargs=None, discopop_tau=0.05),
    )
    model = DPOModel(torch.cat([c, r]), T - 1)
    loss = DPOTrainer._compute_loss(stub, model, inputs, False)
    gc, gr = grads(loss, [c, r])
    met = metrics_of(stub, ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"])
    W.case(name, "dpo", [src(DPOTrainer._compute_loss)], notes,
           {"B": B, "loss_type": loss_type, "beta": beta, "label_smoothing": label_smoothing, "f_divergence_type": "reverse_kl"})
    W.vec("in", "chosen_logps", c); W.vec("in", "rejected_logps", r)
    W.vec("in", "ref_chosen_logps", ref_c); W.vec("in", "ref_rejected_logps", ref_r)
    W.vec("in", "chosen_len", len_c); W.vec("in", "rejected_len", len_r)
    W.vec("out", "loss", loss)
    for k, v in met.items():
        W.vec("out", k, v)
    W.vec("grad", "chosen_logps", gc); W.vec("grad", "rejected_logps", gr)
    W.end()


run_dpo("dpo_sigmoid_b0.1", "sigmoid")
run_dpo("dpo_sigmoid_ls0.1", "sigmoid", label_smoothing=0.1,
        notes=["TRL 1.16 'sigmoid' IGNORES label_smoothing: identical to dpo_sigmoid_b0.1 (same inputs)"])
run_dpo("dpo_robust_ls0.1", "robust", label_smoothing=0.1,
        notes=["robust DPO: (-(1-e)*logsig(b*d) + e*logsig(-b*d)) / (1-2e); the only 1.16 DPO loss_type using label_smoothing this way"])
run_dpo("dpo_ipo_b0.1", "ipo",
        notes=["inputs are SUMMED logps; TRL divides (logp-ref) of each side by its completion token count (clamp min 1): ((rho_c/len_c - rho_r/len_r) - 1/(2b))^2",
               "rewards/* metrics use the UN-averaged beta*rho"])
run_dpo("dpo_hinge_b0.1", "hinge")
# the rest of TRL 1.16's loss_type family, each one row of finetune.h's objective table
run_dpo("dpo_exo_pair", "exo_pair", label_smoothing=1e-3, notes=["EXO needs label_smoothing > 0; the paper's 1e-3"])
run_dpo("dpo_nca_pair", "nca_pair")
run_dpo("dpo_bco_pair", "bco_pair", notes=["TRL 1.16's bco_pair has no running mean (stateless)"])
run_dpo("dpo_sppo_hard", "sppo_hard")
run_dpo("dpo_aot", "aot", notes=["sorts the batch: the gradient follows the permutation"])
run_dpo("dpo_aot_unpaired", "aot_unpaired")
run_dpo("dpo_apo_zero", "apo_zero")
run_dpo("dpo_apo_down", "apo_down")
run_dpo("dpo_discopop", "discopop", notes=["discopop_tau 0.05 (DPOConfig's default)"])
run_dpo("dpo_sigmoid_norm", "sigmoid_norm", notes=["per-token means of the log-ratios, as ipo"])


# cDPO (conservative DPO): label-smoothed sigmoid. It was DPO loss_type='sigmoid' with label_smoothing in
# TRL <= 0.2x (v0.23.0 trl/trainer/dpo_trainer.py:1083-1087); TRL 1.16 DPOTrainer has no such loss.
# The same formula is still TRL code in CPOTrainer.cpo_loss (loss_type='sigmoid', label_smoothing), with
# logits = chosen - rejected and no reference; feeding it the DPO log-ratios rho = logp - ref gives cDPO.
def run_cdpo(name, beta=0.1, eps=0.1, seed=107):
    B = 5
    pol_c, pol_r, ref_c, ref_r, len_c, len_r = dpo_inputs(seed, B)
    c, r = leaf(pol_c), leaf(pol_r)
    stub = base_stub(alpha=0.0, loss_type="sigmoid", beta=beta, label_smoothing=eps)
    losses, cr, rr = CPOTrainer.cpo_loss(stub, c - ref_c, r - ref_r)
    loss = losses.mean()
    gc, gr = grads(loss, [c, r])
    W.case(name, "dpo", [src(CPOTrainer.cpo_loss) + " fed log-ratios (c-ref_c, r-ref_r)",
                         "legacy DPO sigmoid+label_smoothing: trl v0.23.0 trl/trainer/dpo_trainer.py:1083-1087"],
           ["cDPO: mean(-(1-e)*logsig(b*d) - e*logsig(-b*d)), d = rho_c - rho_r; NOT available in TRL 1.16 DPOTrainer"],
           {"B": B, "loss_type": "cdpo_legacy_sigmoid", "beta": beta, "label_smoothing": eps})
    W.vec("in", "chosen_logps", c); W.vec("in", "rejected_logps", r)
    W.vec("in", "ref_chosen_logps", ref_c); W.vec("in", "ref_rejected_logps", ref_r)
    W.vec("out", "loss", loss)
    W.vec("out", "rewards/chosen", cr.mean()); W.vec("out", "rewards/rejected", rr.mean())
    W.vec("out", "rewards/margins", (cr - rr).mean()); W.vec("out", "rewards/accuracies", (cr > rr).double().mean())
    W.vec("grad", "chosen_logps", gc); W.vec("grad", "rejected_logps", gr)
    W.end()


run_cdpo("dpo_cdpo_ls0.1_legacy")


# ============================================================================================== ORPO
def run_orpo(name, beta=0.1, seed=200, B=5):
    g = gen(seed)
    # length-AVERAGED per-token logps of chosen / rejected completions (TRL get_batch_logps(average_log_prob=True));
    # the range straddles -ln2 so both branches of log1mexp are used.
    pc = leaf(-U(g, (B,), 0.15, 2.5))
    pr = leaf(-U(g, (B,), 0.15, 2.5))
    nll = leaf(U(g, (), 0.5, 2.5))
    stub = base_stub(beta=beta)
    stub.odds_ratio_loss = types.MethodType(ORPOTrainer.odds_ratio_loss, stub)
    stub.concatenated_forward = lambda model, batch: (pc, pr, torch.zeros(B, 3, 4, dtype=DT), torch.zeros(B, 3, 4, dtype=DT), nll)
    loss, met = ORPOTrainer.get_batch_loss_metrics(stub, None, {}, train_eval="train")
    gc, gr, gn = grads(loss, [pc, pr, nll])
    W.case(name, "orpo", [src(ORPOTrainer.get_batch_loss_metrics), src(ORPOTrainer.odds_ratio_loss),
                          "log1mexp trl/experimental/orpo/orpo_trainer.py:87-91"],
           ["loss = nll - mean(beta*logsig(log_odds)); log_odds = (pc-pr) - (log1mexp(pc) - log1mexp(pr))",
            "log1mexp(x) = x < -ln2 ? log1p(-exp(x)) : log(-expm1(x))",
            "odds_ratio_loss casts pc/pr to float32 (.float()): values/grads agree with float64 math to ~1e-7 rel",
            "nll = chosen NLL: token-mean cross entropy over ALL attended tokens (prompt+chosen) of the chosen half of the batch"],
           {"B": B, "beta": beta})
    W.vec("in", "chosen_logps_avg", pc); W.vec("in", "rejected_logps_avg", pr); W.vec("in", "nll", nll)
    W.vec("out", "loss", loss)
    for k in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "log_odds_ratio", "log_odds_chosen", "nll_loss"]:
        W.vec("out", k, met[k])
    W.vec("grad", "chosen_logps_avg", gc); W.vec("grad", "rejected_logps_avg", gr); W.vec("grad", "nll", gn)
    W.end()


run_orpo("orpo_b0.1")


# ========================================================================================= CPO / SimPO
def run_cpo(name, loss_type, beta, gamma, cpo_alpha, label_smoothing=0.0, seed=300, B=5, notes=()):
    g = gen(seed)
    avg = loss_type in ("ipo", "simpo")
    lo, hi = (0.2, 2.5) if avg else (8.0, 40.0)
    pc = leaf(-U(g, (B,), lo, hi))
    pr = leaf(-U(g, (B,), lo, hi))
    nll = leaf(U(g, (), 0.5, 2.5))
    stub = base_stub(alpha=0.0, loss_type=loss_type, beta=beta, label_smoothing=label_smoothing, cpo_alpha=cpo_alpha, simpo_gamma=gamma)
    stub.cpo_loss = types.MethodType(CPOTrainer.cpo_loss, stub)
    stub.concatenated_forward = lambda model, batch: (pc, pr, torch.zeros(B, 3, 4, dtype=DT), torch.zeros(B, 3, 4, dtype=DT), nll)
    loss, met = CPOTrainer.get_batch_loss_metrics(stub, None, {}, train_eval="train")
    gc, gr, gn = grads(loss, [pc, pr, nll])
    W.case(name, "cpo", [src(CPOTrainer.get_batch_loss_metrics), src(CPOTrainer.cpo_loss)],
           list(notes) + ["loss = mean(per-pair loss) + cpo_alpha * nll; simpo: -(1-ls)*logsig(beta*(pc-pr) - gamma) - ls*logsig(-(beta*(pc-pr) - gamma))",
                          "nll = token-mean cross entropy over the chosen COMPLETION tokens (prompt labels -100) of the chosen half"],
           {"B": B, "loss_type": loss_type, "beta": beta, "simpo_gamma": gamma, "cpo_alpha": cpo_alpha, "label_smoothing": label_smoothing,
            "logps": "mean" if avg else "sum"})
    W.vec("in", "chosen_logps" + ("_avg" if avg else ""), pc); W.vec("in", "rejected_logps" + ("_avg" if avg else ""), pr)
    W.vec("in", "nll", nll)
    W.vec("out", "loss", loss)
    for k in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "nll_loss"]:
        W.vec("out", k, met[k])
    W.vec("grad", "chosen_logps" + ("_avg" if avg else ""), gc); W.vec("grad", "rejected_logps" + ("_avg" if avg else ""), gr)
    W.vec("grad", "nll", gn)
    W.end()


run_cpo("simpo_b2_g0.5", "simpo", 2.0, 0.5, 0.0, notes=["pure SimPO: cpo_alpha=0"])
run_cpo("simpo_trl_default", "simpo", 0.1, 0.5, 1.0,
        notes=["CPOConfig defaults with loss_type='simpo': beta 0.1, simpo_gamma 0.5, cpo_alpha 1.0 (=> CPO-SimPO, NLL term included)"])
run_cpo("simpo_b0.1_g0.5_pure", "simpo", 0.1, 0.5, 0.0, notes=["default beta/gamma, cpo_alpha=0"])
run_cpo("cpo_sigmoid_default", "sigmoid", 0.1, 0.5, 1.0, notes=["CPOConfig defaults: loss_type sigmoid on SUMMED logps, no reference, cpo_alpha 1"])


# ============================================================================================== KTO
class KTOModel:
    """input_ids[0,0] == 1 -> main completions, == 2 -> mismatched KL completions."""

    def __init__(self, seq_logps, kl_logps, width):
        self.seq, self.kl, self.width = seq_logps, kl_logps, width

    def __call__(self, **kw):
        x = self.seq if int(kw["input_ids"][0, 0]) == 1 else self.kl
        n = x.shape[0]
        lp = torch.cat([x.unsqueeze(1), torch.zeros(n, self.width - 1, dtype=DT)], dim=1)
        z = torch.zeros(n, self.width, dtype=DT)
        return types.SimpleNamespace(log_probs=lp, entropy=z, mean_logits=z)


def run_kto(name, beta=0.1, dw=1.0, uw=1.0, seed=400, kl_shift=0.0, notes=()):
    labels = torch.tensor([True, False, True, True, False, False])
    B = labels.numel()
    g = gen(seed)
    ref = -U(g, (B,), 8.0, 40.0)
    pol = leaf(ref + U(g, (B,), -6.0, 6.0))
    ref_kl = -U(g, (B,), 8.0, 40.0)
    pol_kl = ref_kl + U(g, (B,), -1.0, 3.0) + kl_shift
    T = 4
    ids = torch.ones(B, T, dtype=torch.long)
    batch = {
        "input_ids": ids, "attention_mask": torch.ones(B, T, dtype=torch.long),
        "completion_mask": completion_mask_from_lengths([2] * B, T),
        "KL_input_ids": 2 * ids, "KL_attention_mask": torch.ones(B, T, dtype=torch.long),
        "KL_completion_mask": completion_mask_from_lengths([2] * B, T),
        "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl,
    }
    stub = base_stub(beta=beta, desirable_weight=dw, undesirable_weight=uw, loss_type="kto", calculate_KL=True,
                     precompute_ref_logps=True, ref_model=None, args=types.SimpleNamespace(gradient_checkpointing_kwargs=None))
    stub._compute_kl_logps = types.MethodType(KTOTrainer._compute_kl_logps, stub)
    model = KTOModel(pol, pol_kl, T - 1)
    loss = KTOTrainer._compute_loss(stub, model, batch, False)
    (gp,) = grads(loss, [pol])
    met = metrics_of(stub, ["kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"])
    W.case(name, "kto", [src(KTOTrainer._compute_loss), src(KTOTrainer._compute_kl_logps)],
           list(notes) + ["logps are SUMS over completion tokens; label 1 = desirable",
                          "kl = clamp(mean_i(kl_logps_i - ref_kl_logps_i), min=0), detached; kl_logps_i = logp(prompt_i + completion_{i-1 mod B})",
                          "desirable: 1 - sig(beta*(rho - kl)); undesirable: 1 - sig(beta*(kl - rho)); loss = mean over ALL B of weighted losses",
                          "rewards/chosen = sum(beta*rho over desirable)/n_desirable; margins = chosen - rejected metric"],
           {"B": B, "loss_type": "kto", "beta": beta, "desirable_weight": dw, "undesirable_weight": uw})
    W.vec("in", "label", labels.double()); W.vec("in", "logps", pol); W.vec("in", "ref_logps", ref)
    W.vec("in", "kl_logps", pol_kl); W.vec("in", "ref_kl_logps", ref_kl)
    W.vec("out", "loss", loss)
    for k, v in met.items():
        W.vec("out", k, v)
    W.vec("grad", "logps", gp)
    W.end()


run_kto("kto_b0.1_w1_1")
run_kto("kto_b0.1_w1_1.33", uw=1.33)
run_kto("kto_b0.1_klclamp", kl_shift=-3.0, notes=["raw mean KL is negative here -> kl clamps to 0"])


# ============================================================================================ reward
class RMModel:
    def __init__(self, r):
        self.r = r

    def __call__(self, **kw):
        return types.SimpleNamespace(logits=self.r.unsqueeze(-1))


def run_reward(name, margin, coef, seed=500, B=5):
    g = gen(seed)
    rc = leaf(U(g, (B,), -2.0, 2.0))
    rr = leaf(U(g, (B,), -2.0, 2.0))
    inputs = {"input_ids": torch.ones(2 * B, 3, dtype=torch.long), "attention_mask": torch.ones(2 * B, 3, dtype=torch.long)}
    if margin is not None:
        inputs["margin"] = torch.full((B,), margin, dtype=DT)
    stub = base_stub(args=types.SimpleNamespace(center_rewards_coefficient=coef))
    loss = RewardTrainer.compute_loss(stub, RMModel(torch.cat([rc, rr])), inputs)
    gc, gr = grads(loss, [rc, rr])
    met = metrics_of(stub, ["min_reward", "mean_reward", "max_reward", "accuracy", "margin"])
    W.case(name, "reward", [src(RewardTrainer.compute_loss)],
           ["loss = mean(-logsig(r_c - r_r - margin)) [+ coef*mean((r_c + r_r)^2) when coef is not None]; no 'margin' key -> no margin",
            "metric margin = mean(r_c - r_r) (the dataset margin is not subtracted); accuracy = mean(r_c > r_r)"],
           {"B": B, "margin": "none" if margin is None else margin, "center_rewards_coefficient": "none" if coef is None else coef})
    W.vec("in", "rewards_chosen", rc); W.vec("in", "rewards_rejected", rr)
    if margin is not None:
        W.vec("in", "margin", inputs["margin"])
    W.vec("out", "loss", loss)
    for k, v in met.items():
        W.vec("out", k, v)
    W.vec("grad", "rewards_chosen", gc); W.vec("grad", "rewards_rejected", gr)
    W.end()


run_reward("reward_m0_c0", None, None)
run_reward("reward_m0.5_c0", 0.5, None)
run_reward("reward_m0_c0.01", None, 0.01)
run_reward("reward_m0.5_c0.01", 0.5, 0.01)

# ============================================================================================== GRPO
ADV_SRC = ("mirrored: GRPOTrainer._generate_and_score_completions trl/trainer/grpo_trainer.py:2759-2788 "
           "(multi_objective_aggregation='sum_then_normalize', single reward func weight 1), 2810 nan_to_num, 2826-2830 metrics; nanstd from trl/trainer/utils.py")


def grpo_advantages(rewards, num_generations, scale_rewards):
    """Line-by-line mirror of trl/trainer/grpo_trainer.py:2759-2788 (+2810, 2826-2830) for one reward function of weight 1."""
    rewards_per_func = rewards.unsqueeze(1)
    reward_weights = torch.ones(1, dtype=DT)
    device = rewards.device
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * reward_weights.to(device).unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        if rewards.numel() > 1:
            std_rewards = nanstd(rewards).expand_as(rewards)
        else:
            std_rewards = torch.zeros_like(rewards)
    else:
        raise ValueError(scale_rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    advantages = torch.nan_to_num(advantages, nan=0.0)  # grpo_trainer.py:2810
    metrics = {
        "reward": torch.nanmean(rewards),  # :2828
        "reward_std": nanstd(rewards),  # :2829
        "frac_reward_zero_std": is_std_zero.float().mean(),  # :2830
    }
    return advantages, std_rewards, metrics


GRPO_REWARDS = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.2, 0.9, 0.9, 0.0], dtype=DT)  # 2 prompts x 4 generations
GRPO_REWARDS_ZERO = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.2, 0.9, 0.3, 0.0], dtype=DT)  # group 0 has std 0

for nm, rw in [("", GRPO_REWARDS), ("_zerostd", GRPO_REWARDS_ZERO)]:
    for sc in ["group", "batch", "none"]:
        adv, std, met = grpo_advantages(rw.clone(), 4, sc)
        W.case(f"grpo_adv_{sc}{nm}", "grpo_adv", [ADV_SRC],
               ["A = (r - mean_group(r)) / (std + 1e-4) with std = nanstd (Bessel, n-1): per group ('group') or over the whole batch ('batch');",
                "'none': A = r - mean_group(r). The mean is ALWAYS the per-group mean, also for 'batch'."],
               {"num_generations": 4, "num_prompts": 2, "scale_rewards": sc})
        W.vec("in", "rewards", rw)
        W.vec("out", "advantages", adv)
        W.vec("out", "std_rewards", std)
        for k, v in met.items():
            W.vec("out", k, v)
        W.end()


def grpo_loss_inputs(seed=600):
    g = gen(seed)
    B, T = 8, 7
    lens = [7, 3, 5, 1, 4, 7, 2, 6]
    mask = torch.zeros(B, T, dtype=torch.long)
    for i, L in enumerate(lens):
        mask[i, :L] = 1
    old = -U(g, (B, T), 0.5, 3.0)
    logp = old + U(g, (B, T), -0.45, 0.45)  # ratios spread on both sides of [0.8, 1.2] and [0.8, 1.28]
    ref = old + U(g, (B, T), -0.3, 0.3)
    # padding positions hold arbitrary finite values: a correct implementation must mask them out
    return B, T, lens, mask, old, logp, ref


def run_grpo(name, loss_type, beta, eps, eps_high, max_completion_length=8):
    B, T, lens, mask, old, logp0, ref = grpo_loss_inputs()
    adv, _, _ = grpo_advantages(GRPO_REWARDS.clone(), 4, "group")
    logp = leaf(logp0)
    inputs = {
        "prompt_ids": torch.ones(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": mask.sum(),
    }
    if beta != 0.0:
        inputs["ref_per_token_logps"] = ref
    stub = base_stub(
        beta=beta, loss_type=loss_type, epsilon_low=eps, epsilon_high=eps_high if eps_high is not None else eps,
        importance_sampling_level="token", top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        use_vllm=False, vllm_importance_sampling_correction=False, current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length, _entropy_bonus_enabled=False,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
    )
    stub._get_per_token_logps_and_entropies = lambda model, *a, **k: (logp, torch.zeros(B, T, dtype=DT), None)
    loss = GRPOTrainer._compute_loss(stub, None, inputs)
    (gl,) = grads(loss, [logp])
    met = metrics_of(stub, ["kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "clip_ratio/low_min", "clip_ratio/high_max"])
    W.case(name, "grpo", [src(GRPOTrainer._compute_loss), ADV_SRC + " (scale_rewards='group', rewards of grpo_adv_group)"],
           ["c = exp(logp - old); per-token l = -min(c*A, clamp(c, 1-eps, 1+eps_high)*A) + beta*(exp(ref-logp) - (ref-logp) - 1)",
            "grpo: mean_i(sum_t(l*m)/max(sum_t m,1)); bnpo: sum(l*m)/max(sum m,1); dr_grpo: sum(l*m)/(B*max_completion_length);",
            "dapo: sum(l*m)/max(num_items_in_batch,1) (num_items_in_batch = mask tokens of the whole generation batch; 1 process, GA 1, steps_per_generation 1)",
            "clip metrics: low = (c < 1-eps)&(A<0), high = (c > 1+eps_high)&(A>0); *_mean = token mean over mask; low_min/high_max = min/max over sequences of per-seq token mean",
            "kl metric = token mean of the k3 KL over mask (only when beta != 0); mask = completion_mask; padding values of logp/old/ref are arbitrary"],
           {"B": B, "T": T, "loss_type": loss_type, "beta": beta, "epsilon": eps, "epsilon_high": eps_high if eps_high is not None else eps,
            "max_completion_length": max_completion_length, "num_items_in_batch": int(mask.sum()), "importance_sampling_level": "token",
            "gradient_accumulation_steps": 1})
    W.vec("in", "completion_mask", mask); W.vec("in", "advantages", adv)
    W.vec("in", "per_token_logps", logp); W.vec("in", "old_per_token_logps", old); W.vec("in", "ref_per_token_logps", ref)
    W.vec("out", "loss", loss)
    for k, v in met.items():
        W.vec("out", k, v)
    W.vec("grad", "per_token_logps", gl)
    W.end()


for lt in ["grpo", "bnpo", "dr_grpo", "dapo"]:
    for beta in [0.0, 0.04]:
        for eh in [None, 0.28]:
            run_grpo(f"grpo_{lt}_b{beta:g}_eh{0.2 if eh is None else eh:g}", lt, beta, 0.2, eh)

# =============================================================================================== PPO
# PPO is not part of trl 1.16.0 (no ppo_trainer in the wheel). Mirrored from huggingface/trl tag v1.9.0,
# trl/experimental/ppo/ppo_trainer.py (unchanged at 1.10.0.dev0 commit f2cd57710ae3). The helpers below
# are verbatim copies of lines 237-270; the rollout math of PPOTrainer.train() is mirrored from
# lines 762-798 (masks, rewards, GAE, whitening), 820-856 (losses, clip fractions, approxkl) and 881-885 (objective metrics).
PPO_SRC = "mirrored: huggingface/trl v1.9.0 trl/experimental/ppo/ppo_trainer.py:237-270 (masked_mean/var/whiten), 762-798 (masks, rewards, GAE, whitening), 820-856 (losses, clipfracs, approxkl), 881-885 (objective metrics); PPO absent from trl 1.16.0"
INVALID_LOGPROB = 1.0  # ppo_trainer.py:69


def masked_mean(values, mask, axis=None):  # ppo_trainer.py:237-242
    if axis is not None:
        return (values * mask).sum(axis=axis) / mask.sum(axis=axis)
    else:
        return (values * mask).sum() / mask.sum()


def masked_var(values, mask, unbiased=True):  # ppo_trainer.py:245-261
    mean = masked_mean(values, mask)
    centered_values = values - mean
    variance = masked_mean(centered_values**2, mask)
    if unbiased:
        mask_sum = mask.sum()
        if mask_sum == 0:
            raise ValueError("mask sum is zero")
        bessel_correction = mask_sum / (mask_sum - 1)
        variance = variance * bessel_correction
    return variance


def masked_whiten(values, mask, shift_mean=True):  # ppo_trainer.py:264-270
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


def run_ppo(name, kl_estimator="k1", whiten_rewards=False, kl_coef=0.05, gamma=1.0, lam=0.95, cliprange=0.2,
            cliprange_value=0.2, vf_coef=0.1, seed=700):
    g = gen(seed)
    B, T = 4, 6
    sequence_lengths = torch.tensor([5, 2, 4, 0])  # index of the LAST response token (first pad index - 1)
    logprobs_raw = -U(g, (B, T), 0.55, 3.0)  # rollout (old) policy logprobs
    ref_logprobs_raw = logprobs_raw + U(g, (B, T), -0.5, 0.5)
    values_raw = U(g, (B, T), -1.0, 1.0)  # rollout value-head outputs
    scores = U(g, (B,), -2.0, 2.0)  # reward-model score per sequence
    new_logprobs_raw = logprobs_raw + U(g, (B, T), -0.4, 0.4)  # current policy (epoch > 0 / later minibatch)
    vpred_raw = values_raw + U(g, (B, T), -0.5, 0.5)  # current value-head outputs
    new_lp_leaf, vpred_leaf = leaf(new_logprobs_raw), leaf(vpred_raw)

    with torch.no_grad():
        # ---- ppo_trainer.py:762-769
        response_idxs = torch.arange(T).repeat(B, 1)
        padding_mask = response_idxs > sequence_lengths.unsqueeze(1)
        logprobs = torch.masked_fill(logprobs_raw, padding_mask, INVALID_LOGPROB)
        ref_logprobs = torch.masked_fill(ref_logprobs_raw, padding_mask, INVALID_LOGPROB)
        sequence_lengths_p1 = sequence_lengths + 1
        padding_mask_p1 = response_idxs > (sequence_lengths_p1.unsqueeze(1))
        values = torch.masked_fill(values_raw, padding_mask_p1, 0)
        # ---- :771-779 rewards
        logr = ref_logprobs - logprobs
        kl = -logr if kl_estimator == "k1" else (logr.exp() - 1) - logr
        non_score_reward = -kl_coef * kl
        rewards = non_score_reward.clone()
        actual_start = torch.arange(rewards.size(0))
        actual_end = torch.where(sequence_lengths_p1 < rewards.size(1), sequence_lengths_p1, sequence_lengths)
        rewards[actual_start, actual_end] += scores
        # ---- :781-784 whiten rewards
        if whiten_rewards:
            rewards = masked_whiten(rewards, mask=~padding_mask_p1, shift_mean=False)
            rewards = torch.masked_fill(rewards, padding_mask_p1, 0)
        # ---- :786-798 GAE
        lastgaelam = 0
        advantages_reversed = []
        gen_length = T
        for t in reversed(range(gen_length)):
            nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
            delta = rewards[:, t] + gamma * nextvalues - values[:, t]
            lastgaelam = delta + gamma * lam * lastgaelam
            advantages_reversed.append(lastgaelam)
        advantages = torch.stack(advantages_reversed[::-1], axis=1)
        returns = advantages + values
        advantages = masked_whiten(advantages, ~padding_mask)
        advantages = torch.masked_fill(advantages, padding_mask, 0)

    # ---- :820-847 losses (one micro-batch = the whole batch)
    mb_advantage, mb_logprobs, mb_return, mb_values = advantages, logprobs, returns, values
    new_logprobs = torch.masked_fill(new_lp_leaf, padding_mask, INVALID_LOGPROB)
    vpred = torch.masked_fill(vpred_leaf, padding_mask_p1, 0)
    vpredclipped = torch.clamp(vpred, mb_values - cliprange_value, mb_values + cliprange_value)
    vf_losses1 = torch.square(vpred - mb_return)
    vf_losses2 = torch.square(vpredclipped - mb_return)
    vf_loss_max = torch.max(vf_losses1, vf_losses2)
    vf_loss = 0.5 * masked_mean(vf_loss_max, ~padding_mask_p1)
    vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).float(), ~padding_mask_p1)
    logprobs_diff = new_logprobs - mb_logprobs
    ratio = torch.exp(logprobs_diff)
    pg_losses = -mb_advantage * ratio
    pg_losses2 = -mb_advantage * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = torch.max(pg_losses, pg_losses2)
    pg_loss = masked_mean(pg_loss_max, ~padding_mask)
    loss = pg_loss + vf_coef * vf_loss
    g_lp, g_v = grads(loss, [new_lp_leaf, vpred_leaf])
    with torch.no_grad():  # :851-856, 881-885
        pg_clipfrac = masked_mean((pg_losses2 > pg_losses).float(), ~padding_mask)
        approxkl = 0.5 * (logprobs_diff**2).mean()
        mean_kl = kl.sum(1).mean()
        mean_entropy = (-logprobs).sum(1).mean()
        mean_non_score_reward = non_score_reward.sum(1).mean()
        rlhf_reward = mean_non_score_reward + scores.mean()

    W.case(name, "ppo", [PPO_SRC],
           ["sequence_lengths[i] = index of the last response token; padding_mask = t > seqlen; padding_mask_p1 = t > seqlen+1 (values keep ONE extra position)",
            "old/ref logprobs at padding := INVALID_LOGPROB = 1.0 (so k1/k3 KL = 0 there); values at padding_mask_p1 := 0",
            "reward r_t = -kl_coef*KL_t; score added at t = seqlen+1 if seqlen+1 < T else seqlen (i.e. one position AFTER the last token when there is room)",
            "GAE over all T positions (no mask), delta_t = r_t + gamma*V_{t+1} - V_t (V_T = 0), A_t = delta_t + gamma*lam*A_{t+1}; returns = A_raw + V",
            "A = masked_whiten(A_raw, ~padding_mask) (mean, Bessel var, (A-mean)*rsqrt(var+1e-8)), then 0 at padding",
            "new logprobs := 1.0 at padding, vpred := 0 at padding_mask_p1; pg = masked_mean(max(-A*ratio, -A*clamp(ratio,1-c,1+c)), ~padding_mask)",
            "vf = 0.5*masked_mean(max((v-R)^2, (clamp(v, V-cv, V+cv)-R)^2), ~padding_mask_p1); loss = pg + vf_coef*vf",
            "approxkl and ratio_mean average over ALL B*T positions; objective/entropy = mean_i sum_t(-old_logprobs) INCLUDING the 1.0 fill at padding"],
           {"B": B, "T": T, "kl_coef": kl_coef, "kl_estimator": kl_estimator, "whiten_rewards": whiten_rewards, "gamma": gamma, "lam": lam,
            "cliprange": cliprange, "cliprange_value": cliprange_value, "vf_coef": vf_coef})
    W.vec("in", "sequence_lengths", sequence_lengths)
    W.vec("in", "logprobs", logprobs_raw); W.vec("in", "ref_logprobs", ref_logprobs_raw)
    W.vec("in", "values", values_raw); W.vec("in", "scores", scores)
    W.vec("in", "new_logprobs", new_lp_leaf); W.vec("in", "vpred", vpred_leaf)
    W.vec("out", "padding_mask", padding_mask); W.vec("out", "padding_mask_p1", padding_mask_p1)
    W.vec("out", "kl", kl); W.vec("out", "rewards", rewards); W.vec("out", "returns", returns)
    W.vec("out", "advantages", advantages)
    W.vec("out", "pg_loss", pg_loss); W.vec("out", "vf_loss", vf_loss); W.vec("out", "loss", loss)
    W.vec("out", "pg_clipfrac", pg_clipfrac); W.vec("out", "vf_clipfrac", vf_clipfrac)
    W.vec("out", "approxkl", approxkl); W.vec("out", "ratio_mean", ratio.mean())
    W.vec("out", "objective/kl", mean_kl); W.vec("out", "objective/entropy", mean_entropy)
    W.vec("out", "objective/non_score_reward", mean_non_score_reward); W.vec("out", "objective/rlhf_reward", rlhf_reward)
    W.vec("out", "objective/scores", scores.mean())
    W.vec("grad", "new_logprobs", g_lp); W.vec("grad", "vpred", g_v)
    W.end()


run_ppo("ppo_default")
run_ppo("ppo_k3_whiten", kl_estimator="k3", whiten_rewards=True)

# ============================================================================================= write
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "trl_losses.txt")
header = [
    f"# trl_losses.txt: written by tools/ref/trl_fixtures.py with trl {trl.__version__}, torch {torch.__version__.split('+')[0]}",
    "# format: see the docstring of tools/ref/trl_fixtures.py (case/kind/src/note/param/in/out/grad/end; %.17g numbers)",
]
with open(out, "w") as f:
    f.write("\n".join(header + W.lines) + "\n")
print(f"wrote {os.path.normpath(out)}: {sum(1 for l in W.lines if l.startswith('case '))} cases")
