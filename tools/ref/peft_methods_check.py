#!/usr/bin/env python3
"""Do the IA3, prompt-tuning, prefix-tuning and LoHa adapters that `ft` writes in PEFT's format mean the
same thing to PEFT itself? Trains nothing. Run by hand (not by CI), from the repository root,
after `make build/ft`:

    M="$(tools/fetch-model)"
    for k in ia3 prompt prefix loha; do
        build/ft train -m "$M" --method $k --objective sft --data examples/data/dates_train.jsonl \\
            --steps 3 --batch 2 --lr 1e-2 --out /tmp/pm_$k
    done
    /work/venv/bin/python tools/ref/peft_methods_check.py "$M" /tmp/pm_ia3 /tmp/pm_prompt /tmp/pm_prefix /tmp/pm_loha

(3 steps at lr 1e-2 so the parameters have moved off their start; add --prefix-hidden 64 for a
prefix with the reparameterisation MLP.) Each argument is a run directory of `ft train`
(adapter.gguf: finetune.h's own adapter GGUF; peft/: PEFT's directory, written by train, or by
`build/ft export --format peft -m MODEL --adapter RUN/adapter.gguf -o DIR`), or a PEFT directory
alone. Then the other way round: IA3, prompt and prefix adapters (with and without the projection
MLP) and LoHa on every linear layer that PEFT makes itself (get_peft_model, random values, save_pretrained), read by
`ft logits --adapter DIR` and compared with PEFT's logits (--skip-made skips this; with no run
directories only this part runs). Needs numpy, torch, transformers, peft, gguf. About a minute
or two on 2 cores, most of it transformers dequantizing the GGUF once.

Compared, per adapter, on the same token ids (our tokenizer's):
  ours          `ft logits --adapter RUN/adapter.gguf` on the Q4_1 base (weights dequantized
                exactly to f32, f32 activations)
  ours(peft/)   `ft logits --adapter RUN/peft`: the PEFT directory read back by finetune.h
  PEFT          transformers loading the Q4_1 GGUF itself (dequantized to f32 by gguf-py, Q/K rows
                un-permuted by its loader) + PeftModel.from_pretrained(peft/), f32. For prompt
                tuning PEFT returns the P virtual positions in front: only the real tokens' rows
                are compared.
  PEFT f64      the same model and adapter in float64: the exact answer, to f32's eyes
Both sides compute in f32 on the same weights, so the differences are summation order only:
expected ~1e-5 of the logit range (the same as LoRA's check in adapter_compat.py). Where an
adapter makes the model ill-conditioned (a trained prefix table of N(0, 1) keys and values) f32
rounding grows for everyone: PEFT's own f32 result is then as far from its f64 result as ours.
The check passes when ours is within max(3e-5, 2 x PEFT f32's) of the range from PEFT f64, with
the same argmax everywhere but near-ties: 3e-5 is where f32 rounding lands on trained prefix
tables (3-step MLP prefixes of seeds 1-3: ours 1.2e-5 to 2.8e-5, PEFT's own f32 4e-6 to 2.7e-5
from f64, either side the closer one); a wrong row order, scale or layout shows as 1e-1 and more. The adapter's own effect (ours with vs without it) is
printed first, so that "tight" means something. The adapters PEFT makes are compared f32 with f32
and pass within 1e-4 of the range.
Metrics: max over positions of max_v |x - ref| / (max_v ref - min_v ref), the largest |x - ref|,
and how many positions have the same argmax (a mismatch where the reference's top-2 gap is below
twice the measured error is a near-tie, reported as such).
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")      # transformers' GGUF loader draws a progress bar
warnings.filterwarnings("ignore")

from adapter_compat import compare_ties, ft_logits, report   # the same logits and comparisons (this folder)

PROMPTS = [
    ("chat-date", None, "Rewrite the date 2021-11-07 as DD.MM.YYYY."),
    ("plain", "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lamp and a flask of tea.", None),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", help="the base model GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)")
    ap.add_argument("runs", nargs="*", help="run directories of ft train (adapter.gguf, peft/) or PEFT directories")
    ap.add_argument("--ft", default="build/ft")
    ap.add_argument("--skip-made", action="store_true", help="skip the adapters that PEFT makes itself")
    a = ap.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(2)

    ids, ours_base = [], []
    for name, text, chat in PROMPTS:
        got, lg = ft_logits(a.ft, a.base, None, None, prompt=chat or text, chat=chat is not None)
        ids.append(got)
        ours_base.append(lg)
    print("prompts: %s tokens" % ", ".join("%s %d" % (p[0], len(i)) for p, i in zip(PROMPTS, ids)))
    base = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(a.base)),
                                                gguf_file=os.path.basename(a.base), dtype=torch.float32)
    base.eval()
    with torch.no_grad():
        hf_base = [base(torch.tensor([seq])).logits[0].float().numpy() for seq in ids]
    print("base model (no adapter):")
    report("transformers vs ours", hf_base, ours_base)

    worst, fails = 0.0, 0
    for run in a.runs:
        pd = os.path.join(run, "peft") if os.path.isdir(os.path.join(run, "peft")) else run
        gg = os.path.join(run, "adapter.gguf")
        cfg = json.load(open(os.path.join(pd, "adapter_config.json")))
        kind = cfg["peft_type"]
        ours_ad = gg if os.path.exists(gg) else pd
        print("%s: %s (ours: %s)" % (kind, pd, ours_ad))
        ours = [ft_logits(a.ft, a.base, i, ours_ad)[1] for i in ids]
        report("the adapter's own effect: ours without it", ours_base, ours, show_ties=False)
        if ours_ad != pd:
            report("ours(peft/) vs ours(adapter.gguf)", [ft_logits(a.ft, a.base, i, pd)[1] for i in ids], ours)
        P = cfg.get("num_virtual_tokens", 0) if kind == "PROMPT_TUNING" else 0
        hf = {}
        for dt in (torch.float32, torch.float64):
            model = PeftModel.from_pretrained(copy.deepcopy(base).to(dt), pd).to(dt)
            model.eval()
            hf[dt] = []
            with torch.no_grad():
                for seq in ids:
                    lg = model(input_ids=torch.tensor([seq])).logits[0].double().numpy()
                    assert lg.shape[0] == len(seq) + P, (lg.shape, len(seq), P)
                    hf[dt].append(lg[P:])           # prompt tuning: the real tokens' rows
            del model
        rel, agree, n = report("PEFT (transformers + PeftModel) vs ours", hf[torch.float32], ours)
        r64, a64, _ = report("PEFT in float64 vs ours", hf[torch.float64], ours)
        f32, _, _ = report("PEFT in float64 vs PEFT in float32", hf[torch.float64], hf[torch.float32])
        ok = r64 <= max(3e-5, 2 * f32) and (agree == n or compare_ties(hf[torch.float32], ours) == n - agree)
        print("  -> %s" % ("agrees (as close to f64 as PEFT's own f32)" if ok else "DISAGREES"))
        worst = max(worst, rel)
        fails += not ok
    if not a.skip_made:
        print("adapters made by PEFT itself (get_peft_model + save_pretrained, random values), read by ft:")
        from peft import IA3Config, LoHaConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
        torch.manual_seed(0)
        made = [("IA3", IA3Config(task_type="CAUSAL_LM")),
                ("PROMPT_TUNING", PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)),
                ("PREFIX_TUNING", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8)),
                ("PREFIX_TUNING + MLP", PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8,
                                                                 prefix_projection=True, encoder_hidden_size=64)),
                ("LOHA", LoHaConfig(r=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))]
        for kind, pc in made:
            model = get_peft_model(copy.deepcopy(base), pc)
            for n, p in model.named_parameters():
                if "ia3_l" in n:                    # PEFT starts IA3 at ones: move it
                    p.data = 1 + 0.3 * torch.randn_like(p)
                if "hada_w2_b" in n:                # and LoHa with w2_b = 0: give it a delta
                    p.data = 0.05 * torch.randn_like(p)
            model.eval()
            P = pc.num_virtual_tokens if kind == "PROMPT_TUNING" else 0
            with torch.no_grad():
                hf = [model(input_ids=torch.tensor([seq])).logits[0].double().numpy()[P:] for seq in ids]
            with tempfile.TemporaryDirectory() as td:
                model.save_pretrained(td)
                ours = [ft_logits(a.ft, a.base, i, td)[1] for i in ids]
            del model
            rel, agree, n = report("made by PEFT: %s, PEFT vs ours" % kind, hf, ours)
            ok = rel <= 1e-4 and (agree == n or compare_ties(hf, ours) == n - agree)
            worst = max(worst, rel)
            fails += not ok
    print("worst max|diff|/range, PEFT f32 vs ours, over the adapters: %.2e; %d disagree" % (worst, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
