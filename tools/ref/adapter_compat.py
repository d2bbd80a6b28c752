#!/usr/bin/env python3
"""Do the adapters and merged models that `ft` writes mean the same thing elsewhere? Run by hand
(not by CI), from the repository root, after `make build/ft`:

    build/ft train -m "$(tools/fetch-model)" --method lora --data examples/data/dates_train.jsonl \\
        --steps 5 --batch 4 --lr 1e-3 --out /tmp/run
    /work/venv/bin/python tools/ref/adapter_compat.py "$(tools/fetch-model)" /tmp/run

Needs numpy, torch, transformers, peft, gguf and llama-cpp-python (0.3.36 here; on CPUs with AMX
build it without AMX, see tools/ref/llamacpp_fixtures.py). A few minutes on 2 cores.

The run directory holds adapter.gguf (llama.cpp's LoRA format) and peft/ (PEFT's), both written
by `ft train`; --gguf / --peft name them elsewhere. A DoRA run has peft/ only (llama.cpp's format
has no magnitude): then (b) is skipped and "ours" uses peft/. All systems get the same token ids (our
tokenizer's, equal to llama.cpp's: tests/test_tokenizer.c) and return the raw logits of every
position, in f32. `ft merge` writes, in a temporary directory:
    base_f32.gguf        the base with every weight dequantized exactly to F32 (--embeddings: the
                         tied Q8_0 token_embd too, else llama.cpp rounds the hidden state to 8 bits
                         for the head's Q8_0 dot products: ~1.4% of the logit range), no adapter
    merged_f32.gguf      the adapter merged into those weights, all F32
    merged_f16.gguf      the adapter merged, linear weights F16, token_embd unchanged (Q8_0): the
                         file one would ship
    merged_f16_all.gguf  the same with --embeddings (all F16)

Comparisons (ours = `ft logits` with the Q4_1 base and adapter.gguf; finetune.h computes with
the weights dequantized exactly to f32 and f32 activations):
  ours(peft/) vs ours(adapter.gguf)        the two adapter files mean the same adapter
  (a)-(b1) llama.cpp, base_f32 + adapter.gguf via lora_path, F32 KV cache: the same weights and
           arithmetic as ours; differences are f32 summation order only -> tight
  (b2)     llama.cpp, the Q4_1 base + adapter.gguf, default F16 KV cache: llama.cpp's quantized
           matmuls round the ACTIVATIONS to 8 bits, so this differs from any f32 computation by
           a few % of the logit range (tests/test_llamacpp.c measures 4.3% for the base model).
           Compared with its own base run: the disagreement should be no larger than that of
           the bases, and llama.cpp's adapter effect (its lora - its base) should point the
           same way as ours (cosine over all logits) with the same size (norm ratio)
  (c)      transformers loading the Q4_1 GGUF itself (dequantized to f32 by gguf-py, Q/K rows
           un-permuted by its loader) + peft PeftModel.from_pretrained(peft/) -> tight (f32)
  (d1)     llama.cpp on merged_f32.gguf -> tight (merge rounding is ~1e-7 relative)
  (d2)     llama.cpp on merged_f16.gguf (as shipped) and merged_f16_all.gguf: the weights
           rounded to F16 and, in ggml's F16 matmul, the activations too; each also against
           ours on the same file
Metrics per comparison: max over positions of max_v |x - ref| / (max_v ref - min_v ref) (the
logit range of that position), and how many positions have the same argmax (a mismatch where
the reference's top-2 gap is below the measured error is a near-tie, reported as such).
The adapter's own effect (ours with vs without it) is printed first, so that "tight" means
something: it is orders of magnitude above the tight differences.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import warnings

os.environ.setdefault("TQDM_DISABLE", "1")      # transformers' GGUF loader draws a progress bar
warnings.filterwarnings("ignore")
import numpy as np

PROMPTS = [
    ("chat-date", None, "Rewrite the date 2021-11-07 as DD.MM.YYYY."),
    ("chat-q", None, "What is the capital of France?"),
    ("plain", "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lamp and a flask of tea.", None),
    ("code", "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n", None),
]


def ft_logits(ft, model, ids, adapter=None, prompt=None, chat=False, threads=2):
    with tempfile.NamedTemporaryFile(suffix=".f32", delete=False) as f:
        out = f.name
    cmd = [ft, "logits", "-m", model, "-o", out, "--threads", str(threads)]
    if adapter:
        cmd += ["--adapter", adapter]
    if ids is not None:
        cmd += ["--ids", ",".join(map(str, ids))]
    else:
        cmd += ["-p", prompt] + (["--chat"] if chat else [])
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    got = [int(x) for x in res.stdout.split("\n")[0].split()[1:]]
    lg = np.fromfile(out, dtype=np.float32)
    os.unlink(out)
    return got, lg.reshape(len(got), -1)


def ft_merge(ft, model, out, typ, adapter=None, embeddings=False):
    cmd = [ft, "merge", "-m", model, "--type", typ, "-o", out] + (["--adapter", adapter] if adapter else [])
    cmd += ["--embeddings"] if embeddings else []
    subprocess.run(cmd, check=True, capture_output=True)


def llama_logits(path, ids, lora=None, f32_kv=False):
    import llama_cpp
    kw = dict(model_path=path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2,
              logits_all=True, seed=1234, verbose=False)
    if f32_kv:
        kw.update(type_k=0, type_v=0)     # GGML_TYPE_F32 KV cache
    if lora:
        kw.update(lora_path=lora, lora_scale=1.0)
    llm = llama_cpp.Llama(**kw)
    out = []
    for seq in ids:
        llm.reset()
        llm.eval(seq)
        out.append(np.array(llm.scores[:len(seq)], dtype=np.float32))
    del llm
    return out


def hf_logits(gguf_path, peft_dir, ids):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                                 gguf_file=os.path.basename(gguf_path), dtype=torch.float32)
    if peft_dir:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, peft_dir)
    model.eval()
    out = []
    with torch.no_grad():
        for seq in ids:
            out.append(model(torch.tensor([seq])).logits[0].float().numpy())
    return out


def compare(x, ref):
    """max |x - ref| / range per position (worst), argmax agreement, near-ties among mismatches"""
    rng = ref.max(axis=1) - ref.min(axis=1)
    err = np.abs(x - ref).max(axis=1)
    rel = float((err / rng).max())
    ax, ar = x.argmax(axis=1), ref.argmax(axis=1)
    srt = np.sort(ref, axis=1)
    gap = srt[:, -1] - srt[:, -2]
    mism = ax != ar
    ties = int((mism & (gap <= 2 * err)).sum())
    return rel, int((~mism).sum()), len(ar), ties, float(err.max())


def compare_ties(xs, refs):
    return sum(compare(x, r)[3] for x, r in zip(xs, refs))


def report(label, xs, refs, show_ties=True):
    rel, agree, n, ties, absmax = 0.0, 0, 0, 0, 0.0
    for x, r in zip(xs, refs):
        a, b, c, d, e = compare(x, r)
        rel, agree, n, ties, absmax = max(rel, a), agree + b, n + c, ties + d, max(absmax, e)
    tie = " (%d near-ties)" % ties if ties and show_ties else ""
    print("  %-58s max|diff|/range %.2e (max|diff| %.2e)  argmax %d/%d%s" % (label, rel, absmax, agree, n, tie))
    return rel, agree, n


def effect(label, d_other, d_ours):
    """how well another system's adapter effect (logits with - without) matches ours: cosine and
    norm ratio over all logits (a wrong scale, permutation or site would show in either)"""
    x = np.concatenate([d.reshape(-1) for d in d_other]).astype(np.float64)
    y = np.concatenate([d.reshape(-1) for d in d_ours]).astype(np.float64)
    cos = float(x @ y / np.sqrt((x @ x) * (y @ y)))
    print("  %-58s cosine %.5f, norm ratio %.4f" % (label, cos, float(np.sqrt((x @ x) / (y @ y)))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", help="the base model GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)")
    ap.add_argument("run", nargs="?", help="a run directory of ft train (adapter.gguf, peft/)")
    ap.add_argument("--gguf", help="the llama.cpp LoRA adapter (default RUN/adapter.gguf)")
    ap.add_argument("--peft", help="the PEFT directory (default RUN/peft)")
    ap.add_argument("--ft", default="build/ft")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-llama", action="store_true", help="no llama.cpp part (without llama-cpp-python)")
    a = ap.parse_args()
    gg = a.gguf or os.path.join(a.run, "adapter.gguf")
    pd = a.peft or os.path.join(a.run, "peft")
    if not os.path.exists(gg):          # a DoRA run: PEFT only (llama.cpp adapters have no magnitude)
        gg = None
    ad = gg or pd

    ids, ours, ours_peft, ours_base = [], [], [], []
    for name, text, chat in PROMPTS:
        got, lg = ft_logits(a.ft, a.base, None, ad, prompt=chat or text, chat=chat is not None)
        ids.append(got)
        ours.append(lg)
        if gg:
            ours_peft.append(ft_logits(a.ft, a.base, got, pd)[1])
        ours_base.append(ft_logits(a.ft, a.base, got)[1])
    print("prompts: %s tokens" % ", ".join("%s %d" % (p[0], len(i)) for p, i in zip(PROMPTS, ids)))
    print("reference for (a): ours = ft logits, the base %s + %s" % (os.path.basename(a.base), ad))
    report("the adapter's own effect: ours without it", ours_base, ours)
    if gg:
        report("ours with peft/ instead of adapter.gguf", ours_peft, ours)

    with tempfile.TemporaryDirectory() as td:
        b32, m32, m16, m16e = (os.path.join(td, n) for n in ("base_f32.gguf", "merged_f32.gguf", "merged_f16.gguf", "merged_f16_all.gguf"))
        ft_merge(a.ft, a.base, b32, "f32", embeddings=True)
        ft_merge(a.ft, a.base, m32, "f32", ad, embeddings=True)
        ft_merge(a.ft, a.base, m16, "f16", ad)
        ft_merge(a.ft, a.base, m16e, "f16", ad, embeddings=True)
        ours_m16 = [ft_logits(a.ft, m16, i)[1] for i in ids]
        ours_m16e = [ft_logits(a.ft, m16e, i)[1] for i in ids]
        report("ours on merged_f16.gguf (F16 rounding of the weights)", ours_m16, ours)

        if a.skip_llama:
            ids_llama = []
        else:
            print("llama.cpp (llama-cpp-python):")
            report("(b1) base_f32.gguf alone vs our base", llama_logits(b32, ids, None, True), ours_base)
            ids_llama = ids
        if gg and ids_llama:
            report("(b1) base_f32.gguf + lora_path=adapter.gguf, F32 KV", llama_logits(b32, ids, gg, True), ours)
            lq_lora = llama_logits(a.base, ids, gg)
            lq_base = llama_logits(a.base, ids)
            report("(b2) Q4_1 base + lora_path=adapter.gguf (its Q8 activations)", lq_lora, ours)
            report("(b2) its Q4_1 base alone vs our base (its quantization noise)", lq_base, ours_base)
            effect("(b2) adapter effect (lora - base): llama.cpp vs ours",
                   [x - y for x, y in zip(lq_lora, lq_base)], [x - y for x, y in zip(ours, ours_base)])
        if ids_llama:
            report("(d1) merged_f32.gguf, F32 KV", llama_logits(m32, ids, None, True), ours)
            lm16 = llama_logits(m16, ids, None, True)
            report("(d2) merged_f16.gguf (token_embd stays Q8_0), F32 KV", lm16, ours)
            report("(d2)   the same file vs ours on that file", lm16, ours_m16)
            lm16e = llama_logits(m16e, ids, None, True)
            report("(d2') merged_f16 --embeddings (all F16) vs ours on that file", lm16e, ours_m16e)
            report("(d2') merged_f16 --embeddings (all F16) vs ours (base + adapter)", lm16e, ours)

    if not a.skip_hf:
        print("transformers + peft:")
        report("(c) GGUF dequantized by transformers + PeftModel(peft/)", hf_logits(a.base, pd, ids), ours)
        report("(c) the same without the adapter vs our base", hf_logits(a.base, None, ids), ours_base)


if __name__ == "__main__":
    main()
