#!/usr/bin/env python3
"""What finetune.h writes as Hugging Face directories, loaded by transformers (run by hand, not by
CI; the numbers go to the README's "Hugging Face checkpoints"):

  1. each tiny model of tests/fixtures/arch, `ft convert -m NAME.gguf -o DIR --type f32`:
     transformers (float32, eager) on DIR against the logits transformers gave on the original
     model (tests/fixtures/arch/NAME.txt), and its greedy continuation;
  2. SmolLM2-135M-Instruct (the Q4_1 GGUF), `ft convert --type base` (F32, the lossless type of
     Q4_1): transformers' logits on DIR against `ft logits` on the GGUF; DIR's tokenizer.json
     (through transformers' AutoTokenizer) against the ids Hugging Face gives for the corpus of
     tests/fixtures/tokenizer_smollm2.txt (its H lines), and its chat template's rendering
     against finetune.h's;
  3. a LoRA that ft trains on SmolLM2 (r 8, all linear layers, 20 steps of the date data, over
     the Q4_1 base), `ft export --format hf --type f32`: transformers' logits on the merged
     directory against `ft logits --adapter`;
  4. Gemma 3 270M (Q4_K_M GGUF, when ~/.cache/finetune/gemma-3-270m-q4_k_m.gguf is there),
     `ft convert --type bf16`: its SentencePiece tokenizer as tokenizer.json in transformers
     against llama.cpp's ids (tests/fixtures/tokenizer_gemma3.txt, L lines, add_bos), and
     transformers' logits on the directory against ft's on the same directory.

    /work/venv/bin/python tools/ref/hf_export_check.py [GGUF]     (~3 minutes; builds nothing:
                                                                   run `make build/ft` first)"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FT = os.path.join(ROOT, "build", "ft")
GGUF = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/finetune/SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = os.path.expanduser("~/.cache/finetune/gemma-3-270m-q4_k_m.gguf")
NAMES = ["llama3", "llama_linear", "llama_yarn", "qwen3", "gemma3", "phi3", "phi3_longrope", "qwen3moe", "mixtral", "olmoe"]
TEXT = "The quick brown fox jumps over the lazy dog. In 2024, finetune.h trained SmolLM2 on 1,234 examples."
torch.set_num_threads(2)


def ft(*args):
    subprocess.run([FT, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def fixture(name):
    """ids, hf_logits and hf_greedy of tests/fixtures/arch/NAME.txt"""
    tok = open(os.path.join(ROOT, "tests", "fixtures", "arch", name + ".txt")).read().split()
    i = tok.index("ids"); n = int(tok[i + 1]); ids = [int(x) for x in tok[i + 2:i + 2 + n]]
    j = tok.index("hf_logits"); V = int(tok[j + 2])
    lg = np.array([float(x) for x in tok[j + 3:j + 3 + n * V]]).reshape(n, V)
    k = tok.index("hf_greedy"); kk, pl = int(tok[k + 1]), int(tok[k + 2])
    return ids, lg, [int(x) for x in tok[k + 3:k + 3 + kk]], pl


def load(d):
    return transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()


def greedy(model, ids, k):
    out = list(ids)
    with torch.no_grad():
        for _ in range(k):
            out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def ft_logits(model, ids, adapter=None):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        args = ["logits", "-m", model, "--ids", ",".join(map(str, ids)), "-o", f.name]
        if adapter:
            args += ["--adapter", adapter]
        ft(*args)
        return np.fromfile(f.name, dtype=np.float32).reshape(len(ids), -1)


def rel(a, b):
    return float(np.abs(a - b).max() / (b.max() - b.min()))


def main():
    print("transformers", transformers.__version__, "| torch", torch.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        for name in NAMES:
            d = os.path.join(tmp, name)
            ft("convert", "-m", os.path.join(ROOT, "tests", "fixtures", "arch", name + ".gguf"), "-o", d, "--type", "f32")
            ids, ref, gref, pl = fixture(name)
            m = load(d)
            with torch.no_grad():
                lg = m(torch.tensor([ids])).logits[0].double().numpy()
            g = greedy(m, ids[:pl], len(gref))
            print(f"  {name:13s} ft convert -> transformers: |logits - original model's| / range {rel(lg, ref):.2e}, "
                  f"greedy {'identical' if g == gref else 'DIFFERS'}")
        # 2. SmolLM2
        d = os.path.join(tmp, "smollm2")
        ft("convert", "-m", GGUF, "-o", d, "--type", "base")
        tok = transformers.AutoTokenizer.from_pretrained(d)
        m = load(d)
        ids = tok(TEXT, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lg = m(torch.tensor([ids])).logits[0].double().numpy()
        fl = ft_logits(GGUF, ids)
        print(f"  SmolLM2 ft convert -> transformers: |logits - ft's on the GGUF| / range {rel(lg, fl):.2e}, "
              f"argmax {int((lg.argmax(-1) == fl.argmax(-1)).sum())}/{len(ids)}")
        lines = open(os.path.join(ROOT, "tests", "fixtures", "tokenizer_smollm2.txt"), "rb").read().split(b"\n")
        s, same, same_l, total, lids = None, 0, 0, 0, None
        for ln in lines:
            if ln.startswith(b"S "):
                s = b"" if ln[2:] == b"-" else bytes.fromhex(ln[2:].decode())
            elif ln.startswith(b"L "):
                lids = [int(x) for x in ln[2:].split()[1:]]
            elif ln.startswith(b"H "):
                want = [int(x) for x in ln[2:].split()[1:]]
                got = tok(s.decode("utf-8"), add_special_tokens=False)["input_ids"]
                same += got == want; same_l += got == lids; total += 1
                if got != want:
                    print("    differs from transformers' GGUF tokenizer:", repr(s[:60]), "llama.cpp's" if got == lids else "NOT llama.cpp's either")
        print(f"  SmolLM2 tokenizer.json written by ft, in transformers: {same}/{total} corpus strings give the ids of transformers' "
              f"own tokenizer from the GGUF, {same_l}/{total} llama.cpp's")
        msgs = [{"role": "user", "content": "Hi there!"}, {"role": "assistant", "content": "Hello! How can I help?"}]
        ref_tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF))
        a = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        b = ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        print(f"  SmolLM2 chat template: {'identical' if a == b else 'DIFFERS'} rendering to transformers' from the GGUF")
        # 3. a LoRA trained by ft, merged into a Hugging Face directory
        run = os.path.join(tmp, "run")
        ft("train", "-m", GGUF, "--method", "lora", "--data", os.path.join(ROOT, "examples", "data", "dates_train.jsonl"),
           "--steps", "20", "--batch", "4", "--lr", "2e-3", "--rank", "8", "--eval-before", "0", "--out", run)
        ad = os.path.join(run, "adapter.gguf")
        d = os.path.join(tmp, "merged")
        ft("export", "--format", "hf", "-m", GGUF, "--adapter", ad, "--type", "f32", "-o", d)
        m = load(d)
        with torch.no_grad():
            lg = m(torch.tensor([ids])).logits[0].double().numpy()
        fa, f0 = ft_logits(GGUF, ids, ad), ft_logits(GGUF, ids)
        print(f"  LoRA (20 steps) ft export --format hf -> transformers: |logits - ft's with the adapter| / range {rel(lg, fa):.2e} "
              f"(the adapter moves them {rel(fa, f0):.2e}), argmax {int((lg.argmax(-1) == fa.argmax(-1)).sum())}/{len(ids)}")
        # 4. Gemma 3: a SentencePiece tokenizer
        if os.path.exists(GEMMA):
            d = os.path.join(tmp, "gemma3")
            ft("convert", "-m", GEMMA, "-o", d, "--type", "bf16")
            tok = transformers.AutoTokenizer.from_pretrained(d)
            s, same, total = None, 0, 0
            for ln in open(os.path.join(ROOT, "tests", "fixtures", "tokenizer_gemma3.txt"), "rb").read().split(b"\n"):
                if ln.startswith(b"S "):
                    s = b"" if ln[2:] == b"-" else bytes.fromhex(ln[2:].decode())
                elif ln.startswith(b"L "):
                    try:
                        txt = s.decode("utf-8")
                    except UnicodeDecodeError:
                        continue
                    same += tok(txt)["input_ids"] == [int(x) for x in ln[2:].split()[1:]]; total += 1
            print(f"  Gemma 3 tokenizer.json written by ft (SentencePiece as BPE with byte fallback), in transformers: "
                  f"{same}/{total} valid-UTF-8 strings give llama.cpp's ids")
            m = load(d)
            gids = tok(TEXT)["input_ids"]
            with torch.no_grad():
                lg = m(torch.tensor([gids])).logits[0].double().numpy()
            fl = ft_logits(d, gids)
            print(f"  Gemma 3 ft convert --type bf16 -> transformers: |logits - ft's on the directory| / range {rel(lg, fl):.2e}, "
                  f"argmax {int((lg.argmax(-1) == fl.argmax(-1)).sum())}/{len(gids)}")


if __name__ == "__main__":
    main()
