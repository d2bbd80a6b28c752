#!/usr/bin/env python3
"""tools/random_model.py: a GGUF with random weights in the shape of a published model, for
measuring what a real model of that size costs (memory, seconds per step) without downloading it.

    python3 tools/random_model.py --preset llama-3.2-1b -o /tmp/llama-3.2-1b-random.gguf
    python3 tools/random_model.py --config path/to/config.json -o model.gguf    (a llama-family config)

Needs numpy and gguf (pip install numpy gguf). The presets hold the published Hugging Face
config.json values (meta-llama/Llama-3.2-1B: hidden 2048, 16 layers, 32 heads, 8 KV heads, head
dim 64, FFN 8192, vocabulary 128,256, RoPE theta 500,000 with llama3 scaling factor 32 / low 1 /
high 4 / original context 8192, tied embeddings, RMSNorm eps 1e-5). What is written is what
llama.cpp's converter writes for such a checkpoint:
  - general.architecture "llama" and its llama.* keys;
  - rope_freqs.weight: the llama3 frequency factors, computed as convert_hf_to_gguf.py does
    (1 for wavelengths under original / high, the factor above original / low, a smooth blend
    between);
  - the weights N(0, 0.02) (norms 1) in F16 (--type f32 for F32), a seeded generator (--seed);
  - a tokenizer of the right size that tokenizes text into bytes: model "gpt2", pre
    "llama-bpe", the 256 byte symbols, then filler tokens, and Llama 3's specials
    <|begin_of_text|> (128000, bos) and <|end_of_text|> (128001, eos), no merges.
Random weights generate random text; the point is the shapes.
"""
import argparse
import json
import math
import sys

import numpy as np
import gguf

PRESETS = {
    "llama-3.2-1b": {
        "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32, "num_hidden_layers": 16,
        "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "vocab_size": 128256, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "name": "Llama-3.2-1B (random weights)",
    },
}


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def llama3_factors(cfg, head_dim):
    rs = cfg["rope_scaling"]
    base = cfg["rope_theta"]
    factor, low, high = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / low, old / high
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / (base ** (i / head_dim))
        wl = 2 * math.pi / freq
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--config", help="a Hugging Face config.json of a llama-family model")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--type", choices=["f16", "f32"], default="f16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if bool(a.preset) == bool(a.config):
        sys.exit("random_model: give --preset or --config")
    cfg = PRESETS[a.preset] if a.preset else json.load(open(a.config))
    C, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, Hkv, V = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"]), cfg["vocab_size"]
    D = cfg.get("head_dim", C // H)
    tied = cfg.get("tie_word_embeddings", False)
    rng = np.random.default_rng(a.seed)
    dt = np.float16 if a.type == "f16" else np.float32

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(cfg.get("name", "random llama"))
    w.add_block_count(L)
    w.add_context_length(cfg.get("max_position_embeddings", 4096))
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_key_length(D)
    w.add_value_length(D)
    w.add_rope_dimension_count(D)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-5))
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if a.type == "f16" else gguf.LlamaFileType.ALL_F32)

    be = bytes_to_unicode()
    toks = [be[b] for b in range(256)]
    toks += ["<|filler_%d|>" % i for i in range(256, V)]
    types = [gguf.TokenType.NORMAL] * V
    bos, eos = (128000, 128001) if V > 128001 else (V - 2, V - 1)
    toks[bos], toks[eos] = "<|begin_of_text|>", "<|end_of_text|>"
    types[bos] = types[eos] = gguf.TokenType.CONTROL
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(True)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dt)

    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_factors(cfg, D))
    w.add_tensor("token_embd.weight", rand(V, C))
    w.add_tensor("output_norm.weight", np.ones(C, dtype=np.float32))
    if not tied:
        w.add_tensor("output.weight", rand(V, C))
    for l in range(L):
        p = "blk.%d." % l
        w.add_tensor(p + "attn_norm.weight", np.ones(C, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", rand(H * D, C))
        w.add_tensor(p + "attn_k.weight", rand(Hkv * D, C))
        w.add_tensor(p + "attn_v.weight", rand(Hkv * D, C))
        w.add_tensor(p + "attn_output.weight", rand(C, H * D))
        w.add_tensor(p + "ffn_norm.weight", np.ones(C, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", rand(F, C))
        w.add_tensor(p + "ffn_up.weight", rand(F, C))
        w.add_tensor(p + "ffn_down.weight", rand(C, F))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(a.out)


if __name__ == "__main__":
    main()
