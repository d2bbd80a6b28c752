#!/usr/bin/env python3
"""SmolLM2-135M-Instruct as a Hugging Face directory written by transformers, for the checks of
tests/test_tokenizer.c (hf_directory_smollm2): transformers reads the Q4_1 GGUF (gguf_file=,
dequantized to float32) and save_pretrained writes model.safetensors, config.json,
tokenizer.json, tokenizer_config.json, chat_template.jinja and generation_config.json into OUT
(default ~/.cache/finetune/hf/SmolLM2-135M-Instruct; the Makefile passes it to the tests as
$FT_MODEL_HF when it is there). Also writes tests/fixtures/hf_smollm2.txt: transformers' own
numbers on that directory (float32, eager attention) for 32 ids of a fixed text:
  ids <n> <ids>            the text through the saved tokenizer (no special tokens added)
  pos <i> <argmax> <max> <logsumexp> <logit of id 0> <logit of id 1000> <logit of id 30000>
  end
Run by hand (not by CI): /work/venv/bin/python tools/ref/hf_smollm2.py [GGUF] [OUT]
(transformers 5.25, torch, gguf 0.19 here; ~1 minute). transformers will not save a model it
read from GGUF (it counts as quantized), so the dequantized weights go through a plain model
made from the same config."""
import os
import sys

import torch
import transformers

GGUF = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/finetune/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.expanduser("~/.cache/finetune/hf/SmolLM2-135M-Instruct")
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TEXT = ("The quick brown fox jumps over the lazy dog. In 2024, finetune.h trained SmolLM2 "
        "on 1,234 examples: résumé, naïve café, and code like x = f(y) + 42.")

torch.manual_seed(0)
d, f = os.path.split(GGUF)
tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32, attn_implementation="eager")
# transformers marks a model read from GGUF as "quantized" and will not save it: the same weights
# (already dequantized to float32) go into a plain model made from its config
cfg = model.config
for k in ("quantization_config",):
    if hasattr(cfg, k):
        delattr(cfg, k)
plain = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
plain.load_state_dict(model.state_dict())
plain.save_pretrained(OUT, safe_serialization=True)
tok.save_pretrained(OUT)
print("saved", OUT, sorted(os.listdir(OUT)))

model = transformers.AutoModelForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager").eval()
tok = transformers.AutoTokenizer.from_pretrained(OUT)
ids = tok(TEXT, add_special_tokens=False)["input_ids"][:32]
with torch.no_grad():
    lg = model(torch.tensor([ids])).logits[0].double()
lse = torch.logsumexp(lg, -1)
with open(os.path.join(ROOT, "tests", "fixtures", "hf_smollm2.txt"), "w") as fo:
    fo.write("# tools/ref/hf_smollm2.py: transformers %s on SmolLM2-135M-Instruct saved by save_pretrained\n" % transformers.__version__)
    fo.write("ids %d %s\n" % (len(ids), " ".join(map(str, ids))))
    for i in range(len(ids)):
        fo.write("pos %d %d %.7g %.7g %.7g %.7g %.7g\n" % (i, int(lg[i].argmax()), float(lg[i].max()), float(lse[i]),
                                                         float(lg[i, 0]), float(lg[i, 1000]), float(lg[i, 30000])))
    fo.write("end\n")
print("ids", ids)
