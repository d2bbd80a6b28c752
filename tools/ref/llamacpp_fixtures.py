#!/usr/bin/env python3
"""Write tests/fixtures/llamacpp_<model>.bin: what llama.cpp computes on a real model, for
tests/test_llamacpp.c. Two models: SmolLM2-135M-Instruct (the Q4_1 GGUF; llamacpp_smollm2.bin)
and Gemma 3 270M (the pretrained model, the Q4_K_M GGUF with Q5_0 / Q4_K / Q6_K / Q8_0 tensors;
llamacpp_gemma3.bin). Run by hand (not by CI), from the repository root:

    /work/venv/bin/python tools/ref/llamacpp_fixtures.py "$(tools/fetch-model)"
    /work/venv/bin/python tools/ref/llamacpp_fixtures.py "$(tools/fetch-model gemma3)" tests/fixtures/llamacpp_gemma3.bin

Without the second argument the output is llamacpp_smollm2.bin for the "llama" architecture and
llamacpp_gemma3.bin for "gemma3". Needs llama-cpp-python (0.3.36 here), gguf, numpy, jinja2; a few
minutes each on 2 cores (5-8 here, shared with other work). Gemma's F32 copy (~1.1 GB, most of it
the 262,144 x 640 embedding) is written to a temp directory and held in memory while written. On
CPUs with AMX, build llama-cpp-python without it (CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"): its AMX path segfaults in decode.

Two references are recorded, both with llama.cpp:
  ref 0 (named after the file type: "q4_1", "q4_k_m"): the GGUF as it is, llama.cpp's defaults
                (F16 KV cache). llama.cpp's CPU quantized matmuls round the ACTIVATIONS to 8 bits
                (Q8_1 / Q8_0 / Q8_K blocks) before the integer dot product, so this differs from an
                f32 computation on the same weights by more than rounding noise. It also depends on
                the build (which CPU kernels llama.cpp picks): SmolLM2's fixture made again with the
                native AMX-off build that made Gemma's has q4_1 logits up to 1.3 apart from the
                committed ones and perplexity 12.925 instead of 12.987 (the f32 ref: 4e-5 apart).
  ref 1 "f32":  the same weights dequantized exactly to F32 (gguf.quants, written by this script
                to a temp GGUF with the same metadata), F32 KV cache: llama.cpp computing in f32
                what the quantized file means. finetune.h dequantizes the weights to f32 inside
                its matmuls, so this is the reference it should match to rounding noise. For Gemma 3
                llama.cpp is not exact here: its CPU GELU is a table lookup in fp16
                (GGML_GELU_FP16), which puts it up to 1.2e-3 of the logit range off an f64 forward
                of the same weights (finetune.h: 4.4e-6); tests/test_llamacpp.c has the numbers.

The chat prompt is one user message ("What is the capital of France?") and the generation prompt:
the GGUF's tokenizer.chat_template rendered with jinja2 as transformers does (SmolLM2) or, for a
file without one, llama.cpp's built-in format for the architecture ("gemma" for gemma3: the name
finetune.h's loader gives such a model), rendered here as llm_chat_apply_template does for
LLM_CHAT_TEMPLATE_GEMMA (src/llama-chat.cpp) and checked against llama.cpp's own
llama_chat_apply_template("gemma", ...).

Token ids: llama.cpp's tokenize(special=True, add_bos = the model's tokenizer.ggml.add_bos_token):
SmolLM2 says false (no BOS), Gemma 3 true (each prompt and the perplexity text begin with <bos>, 2).

Logits: llama_cpp.Llama(logits_all=True), raw eval of the token ids, no sampler anywhere (greedy
= argmax of the raw logits, evaluated one token at a time with the KV cache, computed here).
Perplexity: exp(mean NLL of tokens 1..n-1 given their prefix), log-softmax of the full-vocabulary
logits in float64, the whole text in one context (Gemma 3: 546 tokens, so its last 34 positions
are past the 512-token sliding window of the local layers).

Binary format, little-endian; i32 = int32, f32 = float32, f64 = float64; str = i32 length + bytes:
  char[8]  magic "FTLLCPP1"
  i32      n_vocab, n_sub (1024), n_prompt (4), n_ref (2), n_greedy (64)
  str      ref name, n_ref times (the file type, "q4_1" / "q4_k_m"; then "f32")
  i32      sub[n_sub]            the vocabulary subset: ids 0..255, then 768 ids drawn by
                                 np.random.default_rng(0).choice(range(256, n_vocab), 768, replace=False)
  n_prompt times:
    str    name
    str    text                  the exact prompt bytes (the chat one is the template's rendering)
    i32    n_tok, ids[n_tok]     llama.cpp's tokens (special=True, add_bos as the model says)
    i32    has_greedy (0 or 1)
    n_ref times:
      n_tok times (positions):
        i32 argmax               full-vocabulary argmax
        f32 max, range, gap      max logit, max - min, top-1 minus top-2 logit
        f32 logits[n_sub]        the logits of sub
      if has_greedy:
        i32 greedy[n_greedy]     greedy continuation after the prompt
        f32 gaps[n_greedy]       top-1 minus top-2 logit at each greedy step
  perplexity text:
    str    text
    i32    n_tok, ids[n_tok]     (BOS first where the model's add_bos_token says so)
    n_ref times:
      f64  ppl
      f32  nll[n_tok - 1]        NLL of token i+1 given tokens 0..i
"""
import ctypes
import os
import struct
import sys
import tempfile

import numpy as np
import llama_cpp
import gguf

N_SUB = 1024
N_GREEDY = 64
USER_Q = "What is the capital of France?"

PROMPTS = [
    ("plain", "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lamp "
              "and a flask of tea, and watched the ships pass far out on the grey water."),
    ("chat", None),   # the chat format rendered for one user message + generation prompt
    ("code", "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\n"
             "print(gcd(1071, 462))  # 21\n"),
    ("numbers", "Invoice 2023-0457: 12 units x 38.75 EUR = 465.00 EUR; VAT 19% = 88.35; total 553.35, "
                "due 31.01.2024 (ref. 0x7F3A, PO 998-2241)."),
]
GREEDY = ("plain", "chat")

# per architecture: the default output, and llama.cpp's built-in chat format for a file that has
# no tokenizer.chat_template
ARCHS = {"llama": ("tests/fixtures/llamacpp_smollm2.bin", None),
         "gemma3": ("tests/fixtures/llamacpp_gemma3.bin", "gemma")}

PPL_TEXT = """The water cycle is the continuous movement of water between the surface of the Earth and the air above it. It has no beginning and no end, but it is easiest to describe it by starting at the ocean, which holds almost all of the water on the planet.

When sunlight falls on the sea, it warms the surface layer. Some of the water molecules gain enough energy to escape into the air as an invisible gas called water vapour. This process is called evaporation. Warm, dry and windy days speed it up, because the air can carry more vapour away before it becomes saturated. Lakes, rivers, wet soil and even puddles on a city street lose water in the same way.

Plants also move a surprising amount of water into the air. Their roots draw moisture from the soil, and the water travels up through the stem to the leaves, where it escapes through tiny pores. Scientists call this transpiration. A single large tree can release hundreds of litres of water on a hot summer day, and a forest can produce its own clouds.

As warm, moist air rises, it expands and cools. Cooler air cannot hold as much vapour, so some of the vapour condenses into tiny droplets of liquid water. The droplets form around small particles of dust, salt or smoke. Billions of these droplets together make a cloud. When the droplets collide and merge, they grow larger and heavier, until the rising air can no longer support them. Then they fall as precipitation: rain, snow, sleet or hail, depending on the temperature of the air on the way down.

What happens next depends on where the water lands. On steep or paved ground, most of it flows over the surface as runoff, gathering into streams and rivers that carry it back towards the sea. On soft soil, much of it soaks in. Some of this water is taken up again by plants, and some moves slowly downward until it reaches the groundwater, filling the spaces between grains of sand and cracks in the rock. Groundwater can stay underground for days or for thousands of years before it seeps into a river or a spring.

In cold places, snow may pile up year after year and slowly turn into ice. Glaciers and ice sheets store water for very long periods, and they release it as meltwater when the climate warms. Because of this, the amount of ice on land affects the level of the sea.

The water cycle matters to everyone. It delivers fresh water to farms and cities, shapes the land through erosion, and moves heat around the planet. By measuring rainfall, river flow and soil moisture, people can prepare for floods and droughts and plan how to share the water that the cycle provides.
"""


def gguf_str(r, key):
    f = r.fields.get(key)
    return None if f is None else bytes(f.parts[f.data[0]]).decode()


def dequantize_to_f32(src, dst):
    """Copy the GGUF at src to dst with every tensor dequantized to F32 (same metadata)."""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, gguf_str(r, "general.architecture"))
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            st = f.types[1]
            if st == gguf.GGUFValueType.STRING:
                val = [bytes(f.parts[i]) for i in f.data]          # the bytes as they are
            else:
                val = [f.parts[i][0].item() for i in f.data]
            w.add_key_value(name, val, vt, sub_type=st)
        elif vt == gguf.GGUFValueType.STRING:
            w.add_key_value(name, bytes(f.parts[f.data[0]]), vt)
        else:
            w.add_key_value(name, f.parts[f.data[0]][0].item(), vt)
    # general.file_type is kept as is: llama.cpp reads the tensor types, the file type is informational
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape))   # numpy order (rows, cols)
        w.add_tensor(t.name, a.reshape(shape), raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gemma_chat(messages, add_ass):
    """llama.cpp's llm_chat_apply_template for LLM_CHAT_TEMPLATE_GEMMA: a system message is
    merged into the next user turn, "assistant" is called "model", contents are trimmed of the
    C isspace() characters."""
    def trim(x):
        return x.strip(" \t\n\v\f\r")
    out, system = [], ""
    for role, content in messages:
        if role == "system":
            system += trim(content)
            continue
        role = "model" if role == "assistant" else role
        out.append("<start_of_turn>" + role + "\n")
        if system and role != "model":
            out.append(system + "\n\n")
            system = ""
        out.append(trim(content) + "<end_of_turn>\n")
    if add_ass:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def llama_cpp_chat(name, messages, add_ass):
    """llama.cpp's own llama_chat_apply_template with a built-in template name."""
    Msg = llama_cpp.llama_chat_message
    arr = (Msg * len(messages))(*[Msg(r.encode(), c.encode()) for r, c in messages])
    buf = ctypes.create_string_buffer(8192)
    n = llama_cpp.llama_chat_apply_template(name.encode(), arr, len(messages), add_ass, buf, len(buf))
    if n < 0 or n > len(buf):
        raise RuntimeError("llama_chat_apply_template(%s) returned %d" % (name, n))
    return buf.raw[:n].decode()


def chat_prompt(path, builtin):
    """(text, how it was made): one user message and the generation prompt."""
    import jinja2
    src = gguf_str(gguf.GGUFReader(path), "tokenizer.chat_template")
    msgs = [("user", USER_Q)]
    if src is None:
        if builtin != "gemma":
            sys.exit("%s has no chat template, and no built-in format is known for it here" % path)
        text = gemma_chat(msgs, True)
        ref = llama_cpp_chat(builtin, msgs, True)
        if text != ref:
            sys.exit("the \"gemma\" rendering differs from llama.cpp's:\n%r\n%r" % (text, ref))
        return text, "llama.cpp's built-in \"%s\" format (the file has no template)" % builtin
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders it
    text = env.from_string(src).render(messages=[{"role": r, "content": c} for r, c in msgs],
                                       add_generation_prompt=True, bos_token="<|im_start|>",
                                       eos_token="<|im_end|>")
    return text, "the file's chat template (jinja2)"


def quant_name(path):
    """ref 0's name: the file type, "q4_1" or "q4_k_m"."""
    f = gguf.GGUFReader(path).fields.get("general.file_type")
    if f is None:
        return "quant"
    name = gguf.LlamaFileType(int(f.parts[f.data[0]][0])).name.lower()
    return name[len("mostly_"):] if name.startswith("mostly_") else name


def full_logits(llm, n):
    return np.array(llm.scores[:n], dtype=np.float32)


def row_stats(row):
    top2 = np.partition(row, -2)[-2:]
    return int(np.argmax(row)), float(row.max()), float(row.max() - row.min()), float(abs(top2[1] - top2[0]))


def run_ref(path, f32, prompts, text_ids, sub):
    kw = dict(model_path=path, n_ctx=1024, n_batch=1024, n_ubatch=1024, n_threads=2, n_threads_batch=2,
              logits_all=True, seed=1234, verbose=False)
    if f32:
        kw.update(type_k=0, type_v=0)   # GGML_TYPE_F32 KV cache
    llm = llama_cpp.Llama(**kw)
    out = {"prompts": [], "ppl": None, "nll": None}
    for name, text, ids in prompts:
        llm.reset()
        llm.eval(ids)
        lg = full_logits(llm, len(ids))
        pos = [row_stats(lg[t]) + (lg[t, sub].copy(),) for t in range(len(ids))]
        greedy, gaps = [], []
        if name in GREEDY:
            for _ in range(N_GREEDY):
                row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
                am, _, _, gap = row_stats(row)
                greedy.append(am); gaps.append(gap)
                llm.eval([am])
        out["prompts"].append((pos, greedy, gaps))
    llm.reset()
    llm.eval(text_ids)
    lg = np.array(llm.scores[:len(text_ids)], dtype=np.float64)
    m = lg.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(lg - m).sum(axis=1))
    nll = lse[:-1] - lg[np.arange(len(text_ids) - 1), np.array(text_ids[1:])]
    out["ppl"] = float(np.exp(nll.mean()))
    out["nll"] = nll.astype(np.float32)
    del llm
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    arch = gguf_str(gguf.GGUFReader(path), "general.architecture")
    if arch not in ARCHS:
        sys.exit("%s: architecture %r, not one of %s" % (path, arch, ", ".join(ARCHS)))
    dst = sys.argv[2] if len(sys.argv) > 2 else ARCHS[arch][0]
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False)
    n_vocab = llm.n_vocab()
    add_bos = bool(llm._model.add_bos_token())      # tokenizer.ggml.add_bos_token, as llama.cpp reads it
    print("%s: %s, n_vocab %d, add_bos %s" % (os.path.basename(path), arch, n_vocab, add_bos))
    prompts = []
    for name, text in PROMPTS:
        if text is None:
            text, how = chat_prompt(path, ARCHS[arch][1])
            print("  chat prompt from %s: %r" % (how, text))
        ids = llm.tokenize(text.encode(), add_bos=add_bos, special=True)
        prompts.append((name, text, ids))
    text_ids = llm.tokenize(PPL_TEXT.encode(), add_bos=add_bos, special=True)
    del llm
    rng = np.random.default_rng(0)
    sub = np.concatenate([np.arange(256), rng.choice(np.arange(256, n_vocab), N_SUB - 256, replace=False)]).astype(np.int32)

    q = quant_name(path)
    refs = [(q, run_ref(path, False, prompts, text_ids, sub))]
    with tempfile.TemporaryDirectory() as td:
        f32 = os.path.join(td, "f32.gguf")
        dequantize_to_f32(path, f32)
        refs.append(("f32", run_ref(f32, True, prompts, text_ids, sub)))

    def s(b):
        b = b if isinstance(b, bytes) else b.encode()
        return struct.pack("<i", len(b)) + b
    buf = [b"FTLLCPP1", struct.pack("<5i", n_vocab, N_SUB, len(prompts), len(refs), N_GREEDY)]
    buf += [s(n) for n, _ in refs]
    buf.append(sub.astype("<i4").tobytes())
    for k, (name, text, ids) in enumerate(prompts):
        buf += [s(name), s(text), struct.pack("<i", len(ids)), np.array(ids, "<i4").tobytes(),
                struct.pack("<i", int(name in GREEDY))]
        for _, r in refs:
            pos, greedy, gaps = r["prompts"][k]
            for am, mx, rg, gap, sl in pos:
                buf += [struct.pack("<i3f", am, mx, rg, gap), sl.astype("<f4").tobytes()]
            if name in GREEDY:
                buf += [np.array(greedy, "<i4").tobytes(), np.array(gaps, "<f4").tobytes()]
    buf += [s(PPL_TEXT), struct.pack("<i", len(text_ids)), np.array(text_ids, "<i4").tobytes()]
    for _, r in refs:
        buf += [struct.pack("<d", r["ppl"]), r["nll"].astype("<f4").tobytes()]
    data = b"".join(buf)
    with open(dst, "wb") as f:
        f.write(data)

    print("wrote %s: %d bytes" % (dst, len(data)))
    for k, (name, text, ids) in enumerate(prompts):
        print("  %-8s %3d tokens: %s" % (name, len(ids), " ".join(map(str, ids[:16])) + (" ..." if len(ids) > 16 else "")))
        p0, p1 = refs[0][1]["prompts"][k], refs[1][1]["prompts"][k]
        d = max(float(np.abs(a[4] - b[4]).max() / b[2]) for a, b in zip(p0[0], p1[0]))
        agree = sum(a[0] == b[0] for a, b in zip(p0[0], p1[0]))
        print("           %s vs f32 llama.cpp: max |diff| / range %.4f, argmax agrees %d/%d" % (q, d, agree, len(ids)))
        if p0[1]:
            same = next((i for i in range(N_GREEDY) if p0[1][i] != p1[1][i]), N_GREEDY)
            print("           greedy %s == f32 for the first %d of %d tokens; min gap %s %.4f, f32 %.4f"
                  % (q, same, N_GREEDY, q, min(p0[2]), min(p1[2])))
    nd = float(np.abs(refs[0][1]["nll"] - refs[1][1]["nll"]).max())
    print("  text     %3d tokens: ppl %s %.5f, f32 %.5f (max |per-token NLL diff| %.4f)"
          % (len(text_ids), q, refs[0][1]["ppl"], refs[1][1]["ppl"], nd))


if __name__ == "__main__":
    main()
