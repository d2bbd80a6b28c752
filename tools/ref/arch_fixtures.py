#!/usr/bin/env python3
"""Write tests/fixtures/arch/<name>.gguf and <name>.txt: tiny random models of several
architectures, converted to GGUF by llama.cpp's own converter, with the logits and greedy
continuations that Hugging Face transformers (and llama.cpp, where llama-cpp-python is installed)
compute on them, for tests/test_arch.c. Run by hand (not by CI), from the repository root:

    /work/venv/bin/python tools/ref/arch_fixtures.py --llama-cpp DIR [--only NAME,NAME]

DIR is the llama.cpp source tree vendored in llama-cpp-python 0.3.36's sdist, the converter used
for every fixture here:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz      # DIR = llama_cpp_python-0.3.36/vendor/llama.cpp

Its convert_hf_to_gguf.py (which imports DIR/conversion/) and its gguf-py (newer than gguf 0.19
on PyPI; put FIRST on sys.path by this script) are imported and driven in this process. Needs
torch, transformers (5.25 here), tokenizers, numpy, safetensors; llama-cpp-python 0.3.36 is
optional (its outputs are recorded when `import llama_cpp` works, skipped with a printed note
otherwise). Deterministic (same bytes on a rerun on the same machine); well under 2 minutes on 2
cores.

The models (NAME = fixture file stem; HF class; the converter's general.architecture):
  llama3        LlamaForCausalLM, rope_scaling llama3 (factor 8, low_freq_factor 1,
                high_freq_factor 4, original_max_position_embeddings 64), rope_theta 500000,
                max_position_embeddings 128. With head_dim 16 the 8 frequencies' wavelengths are
                6.3, 32, 167, 860, ...: the first is below original/high (16) -> factor 1, the
                second lies between 16 and 64 -> smoothed, the rest are above 64 -> factor 8. The
                converter writes these divisors as the tensor rope_freqs.weight (llama.cpp divides
                each frequency by its entry); printed below.            -> llama
  llama_linear  LlamaForCausalLM, rope_scaling linear, factor 4.        -> llama
  llama_yarn    LlamaForCausalLM, rope_scaling yarn, factor 4, original_max_position_embeddings
                16, max_position_embeddings 64 (= 4 * 16; no attention_factor / beta_* given, so
                both sides use their defaults: mscale 0.1 ln 4 + 1, beta_fast 32, beta_slow 1).
                                                                        -> llama
  qwen3         Qwen3ForCausalLM, head_dim 32 with hidden 64 and 4 heads (so 4*32 != 64), per-head
                q_norm / k_norm, tied embeddings (as the small Qwen3 models).   -> qwen3
  gemma3        Gemma3ForCausalLM (Gemma3TextConfig, text only), hidden 32, 6 layers: layer_types
                5 sliding + 1 full (the default pattern 6), sliding_window 4, rope_theta 1e6
                (full) and 1e4 (sliding), query_pre_attn_scalar = head_dim = 16,
                gelu_pytorch_tanh, tied embeddings, no softcapping. Embeddings are scaled by
                sqrt(hidden) in both implementations.                   -> gemma3
  phi3          Phi3ForCausalLM (fused qkv_proj and gate_up_proj), no rope scaling, sliding_window
                None (the converter writes attention.sliding_window 0).  -> phi3
  phi3_longrope the same with LongRoPE (Phi-3.5-mini's scheme): short and long factors, original
                context 32 of 128 (attention factor sqrt(1 + ln 4 / ln 32), written by the
                converter as rope.scaling.attn_factor). Every sequence here is shorter than 32,
                so transformers uses the short factors, and so does finetune.h (the long ones
                once a forward's positions pass the original context, as transformers picks
                them). No llama.cpp reference: llama.cpp picks by its context size, not the
                sequence, and its context (256 at least) is past 32, so it uses the long ones.
  qwen3moe      Qwen3MoeForCausalLM: 4 experts, top-2, norm_topk_prob True, moe_intermediate_size
                32, decoder_sparse_step 1, mlp_only_layers [].          -> qwen3moe
  mixtral       MixtralForCausalLM: 4 experts, top-2 (always renormalised), expert ffn 32.
                                                                        -> llama (with experts)
  olmoe         OlmoeForCausalLM: 4 experts, top-2, norm_topk_prob False, q_norm / k_norm over the
                whole projection (not per head), expert ffn 32, 4 KV heads (no GQA: llama.cpp's
                olmoe insists on a k_norm of n_embd, as OLMoE-1B-7B has).  -> olmoe
Common sizes: vocab 256, hidden 64 (gemma3: 32), 2 layers (gemma3: 6), 4 heads, 2 KV heads (GQA;
olmoe 4), head_dim 16 (qwen3: 32), intermediate 96 (gemma3: 64; the MoE archs' experts: 32),
RMSNorm eps as the configs' defaults, max_position_embeddings 64 (llama3: 128), bos 1, eos 2, no
pad token. The GGUFs are 340-470 KB each (f32).

Weights: torch.manual_seed(seed) before the model is built, then every parameter re-initialised
in sorted-name order from a torch.Generator seeded with the same seed: matrices (embeddings,
projections, routers) normal(0, 0.3) (gemma3's tied embedding normal(0, 0.2): it is multiplied by
sqrt(hidden) on the way in and is also the output head); RMSNorm weights 1 + normal(0, 0.2) -- for
Gemma3, whose RMSNorm computes x * (1 + w), normal(0, 0.2) around 0 (the converter adds the 1 when
it writes the GGUF, so a C reader must NOT add it again). The seed is 0 for llama3, llama_linear,
llama_yarn (so those three share their weights and differ only in RoPE scaling), qwen3, phi3 and
olmoe, 7 for gemma3, 2 for qwen3moe and mixtral: for each model the first of 0, 1, 2, ... whose
references are robust to rounding (at every greedy step a top-1 minus top-2 logit gap >= 0.01,
and >= 7 distinct ids among the 12; at each of the 24 positions a gap >= 0.003; MoE: router-logit
gaps at the top-k cut and inside the top k >= 0.02; the smallest gaps are printed). Saved with
save_pretrained (safetensors, float32) into a temporary directory named after the fixture, plus a
tokenizer.json (byte-level BPE, exactly 256 tokens, no merges; the Gemma3 converter trims
token_embd to the tokenizer's size).

Conversion: convert_hf_to_gguf.main() with `DIR_MODEL --outfile <fixture>.gguf --outtype f32
--model-name tiny-<name>` (phi3: tiny-phi-three -- with "phi3" in general.name llama.cpp's vocab
loader looks the tokens "</s>", "<unk>", "<s>", "<|endoftext|>" up by text and fails to load the
file). The tiny models have no real tokenizer, so the model class's set_vocab (which would insist
on a known pre-tokenizer hash, or a sentencepiece model for phi3) is replaced, in this process
only, by one writing a minimal GPT-2 style vocabulary: tokenizer.ggml.model "gpt2", pre "default",
tokens = the byte-level symbols of GPT-2's bytes_to_unicode for bytes 0..254 in byte order and
"ĠĠ" as token 255, all NORMAL, one merge "Ġ Ġ" (llama.cpp wants merges; its result is a token, as
finetune.h's loader requires), bos 1, eos 2, add_bos false. The C side feeds token ids directly; the vocabulary only
has to let llama.cpp load the file. Everything else (tensor names and shapes, metadata keys, the
weight layout) is the converter's own doing; check_layout() verifies, by exact equality with the
transformers weights, and prints:
  - llama-family archs (llama3, llama_linear, llama_yarn, mixtral -> "llama"): attn_q / attn_k are
    q_proj / k_proj with the rows of each head permuted (the converter's LlamaModel.permute, n_head
    for Q, n_head_kv for K), so that llama.cpp's adjacent-pair RoPE (LLAMA_ROPE_TYPE_NORM) equals
    transformers' rotate_half; qwen3, gemma3, phi3, qwen3moe, olmoe are stored unpermuted and
    llama.cpp rotates them NEOX style (pairs i, i + d/2).
  - gemma3: every RMSNorm weight (attn_norm, post_attention_norm, ffn_norm, post_ffw_norm,
    attn_q_norm, attn_k_norm, output_norm) is stored as 1 + w; llama.cpp multiplies by it as is.
  - phi3: attn_qkv is qkv_proj as it is (rows q | k | v: 64 + 32 + 32), ffn_up is gate_up_proj as
    it is (rows gate | up, 2 x 96; llama.cpp's phi3 splits it, silu on the first half); no
    ffn_gate tensor.
  - MoE: ffn_gate_inp = the router weight (n_expert rows); ffn_{gate,up,down}_exps stack the
    experts along the outermost dimension (ggml ne {64, 32, 4} for gate/up, {32, 64, 4} down).
  - llama3: no rope.scaling.* keys at all, only the rope_freqs.weight tensor (8 divisors).
  - tied models (qwen3, gemma3) have no output.weight.

Reference outputs, per model, on the fixed ids IDS (24 ids from np.random.default_rng(IDS_SEED)
.integers(0, 256), the same for every model):
  hf_logits     transformers in float32, attn_implementation="eager", one forward of all 24 ids
                (batch 1, no cache): the 24 x 256 logits.
  hf_greedy     12 new ids greedy from IDS[:8]: a manual argmax loop WITHOUT cache (each step one
                full forward of the whole sequence so far; no generate(), so no eos stop).
  lcpp_logits   llama.cpp (llama_cpp.Llama(path, n_ctx=64, logits_all=True, n_threads=2,
                type_k=0, type_v=0 -- an F32 KV cache, GGML_TYPE_F32 = 0, not the F16 default),
                eval(IDS) once, the scores of all 24 positions.
  lcpp_greedy   reset(), eval(IDS[:8]), then 12 times: argmax of the last position's scores,
                eval([that id]) (with the KV cache, no sampler).
  experts       (MoE) the top-k expert ids transformers' router chose (forward hooks on each
                layer's mlp.gate, a *TopKRouter returning (logits, scores, indices); indices are
                torch.topk of the softmax, so each token's k ids are in descending router weight),
                from the same forward as hf_logits.
  router_logits (MoE) that router's logits (before softmax), n_tokens x n_expert per layer.
Printed per model: the GGUF's metadata keys and tensors (name, ggml shape ne0..., type) as the
vendored gguf-py's GGUFReader reads them back, the layout checks, the smallest logit gaps, max
|HF - llama.cpp| / (HF logit range) and whether the greedy continuations agree.

Measured (transformers 5.25, llama-cpp-python 0.3.36 built for this AVX2 machine, 2 threads):
max |HF - llama.cpp| / range 5e-7 .. 1.5e-6 for every model but gemma3 (3.0e-4: ggml's CPU GELU
reads an F16 table, GGML_GELU_FP16 in ggml-cpu/vec.h; emulating that in transformers brings it to
1.2e-5), argmax equal at all 24 positions and the 12-token greedy continuations identical for all
nine models.

Text format (numbers: ids as integers, logits %.7g):
  arch <name> <general.architecture>
  vocab <V>
  ids <n> <id0> ... <id n-1>
  hf_logits <n> <V>
  <V floats, position 0>            (n lines)
  hf_greedy <k> <prompt_len> <k new ids>
  lcpp_logits <n> <V>               (only when llama.cpp was available)
  <n lines>
  lcpp_greedy <k> <prompt_len> <k new ids>
  experts <n_layer> <n_tokens> <k>  (MoE only)
  <n_layer lines: n_tokens*k ids, token-major, each token's k ids in descending router weight>
  router_logits <n_layer> <n_tokens> <n_expert>   (MoE only)
  <n_layer lines: n_tokens*n_expert floats, token-major>
  end
"""
import argparse
import json
import logging
import os
import sys
import tempfile

SEED = 0          # per-model seeds: see model_specs()
IDS_SEED = 7
N_IDS = 24
PROMPT_LEN = 8
N_NEW = 12
VOCAB = 256
BOS, EOS = 1, 2
W_STD = 0.3
GEMMA3_EMB_STD = 0.2
NORM_STD = 0.2

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "arch")
HF_DIR = os.path.join(ROOT, "tests", "fixtures", "hf")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", required=True,
                    help="llama-cpp-python 0.3.36's vendor/llama.cpp (convert_hf_to_gguf.py, gguf-py)")
    ap.add_argument("--only", default="", help="comma-separated fixture names (default: all)")
    ap.add_argument("--hf-out", action="store_true",
                    help="also keep each Hugging Face directory (as save_pretrained wrote it, with its "
                         "tokenizer.json; mixtral's in shards of 150 KB) in tests/fixtures/hf/<name>, for "
                         "tests/test_arch.c")
    return ap.parse_args()


ARGS = parse_args()
LCPP_DIR = os.path.abspath(ARGS.llama_cpp)
if not os.path.isfile(os.path.join(LCPP_DIR, "convert_hf_to_gguf.py")):
    sys.exit(f"no convert_hf_to_gguf.py in {LCPP_DIR}")
# the vendored gguf-py first (the converter needs it, and GGUFReader reads back with it)
sys.path.insert(0, os.path.join(LCPP_DIR, "gguf-py"))
sys.path.insert(1, LCPP_DIR)
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
logging.basicConfig(level=logging.WARNING)   # before the converter's basicConfig(INFO): a no-op then

import numpy as np
import torch
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode
import gguf
import conversion
import convert_hf_to_gguf

assert os.path.abspath(gguf.__file__).startswith(LCPP_DIR), gguf.__file__

try:
    import llama_cpp
    HAVE_LCPP = True
except ImportError as e:
    HAVE_LCPP = False
    LCPP_ERR = str(e)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# the models

def _common(**kw):
    d = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
             bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None, tie_word_embeddings=False)
    d.update(kw)
    return d


def model_specs():
    """(name, config class, config kwargs, options): gemma_norm = norms stored around 0;
    seed / emb_std override SEED / W_STD."""
    T = transformers
    return [
        ("llama3", T.LlamaConfig, _common(
            max_position_embeddings=128, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}), {}),
        ("llama_linear", T.LlamaConfig, _common(
            rope_scaling={"rope_type": "linear", "factor": 4.0}), {}),
        ("llama_yarn", T.LlamaConfig, _common(
            rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}), {}),
        ("qwen3", T.Qwen3Config, _common(head_dim=32, tie_word_embeddings=True), {}),
        ("gemma3", T.Gemma3TextConfig, _common(
            hidden_size=32, intermediate_size=64, num_hidden_layers=6, sliding_window=4,
            rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
            query_pre_attn_scalar=16, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
            final_logit_softcapping=None, attn_logit_softcapping=None),
            dict(gemma_norm=True, seed=7, emb_std=GEMMA3_EMB_STD)),
        ("phi3", T.Phi3Config, _common(rope_scaling=None, sliding_window=None,
                                       original_max_position_embeddings=64), {}),
        ("phi3_longrope", T.Phi3Config, _common(
            sliding_window=None, max_position_embeddings=128, original_max_position_embeddings=32,
            rope_scaling={"rope_type": "longrope",
                          "short_factor": [1.0, 1.1, 1.3, 1.7, 2.2, 3.0, 4.1, 5.5],
                          "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 20.0]}),
            dict(no_lcpp=True)),
        ("qwen3moe", T.Qwen3MoeConfig, _common(
            num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, moe_intermediate_size=32,
            decoder_sparse_step=1, mlp_only_layers=[]), dict(moe=True, seed=2)),
        ("mixtral", T.MixtralConfig, _common(
            intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, sliding_window=None),
            dict(moe=True, seed=2)),
        ("olmoe", T.OlmoeConfig, _common(
            intermediate_size=32, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
            num_key_value_heads=4),
            dict(moe=True)),
    ]


def build_model(cfg_cls, kw, opt):
    seed = opt.get("seed", SEED)
    torch.manual_seed(seed)
    cfg = cfg_cls(**kw)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager",
                                                          dtype=torch.float32)
    assert model.config._attn_implementation == "eager"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.ndim == 1 and "norm" in name:
                p.copy_((0.0 if opt.get("gemma_norm") else 1.0) + NORM_STD * r)
            elif p.ndim == 1:
                raise ValueError(f"unexpected 1-d parameter {name}")
            elif name.endswith("embed_tokens.weight"):
                p.copy_(opt.get("emb_std", W_STD) * r)
            else:
                p.copy_(W_STD * r)
    model.eval()
    return model


def write_tokenizer(dirname):
    """tokenizer.json: byte-level BPE, the 256 byte symbols as the vocabulary, no merges."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    be = bytes_to_unicode()
    vocab = {be[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(os.path.join(dirname, "tokenizer.json"))


# ---------------------------------------------------------------------------------------------
# conversion

def tiny_set_vocab(self):
    """Replaces the converter's set_vocab: a minimal GPT-2 style vocabulary of n_vocab byte symbols."""
    n = self.hparams["vocab_size"]
    assert n == 256, n
    be = bytes_to_unicode()
    w = self.gguf_writer
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    # the last byte's symbol gives way to "ĠĠ", so that the one merge llama.cpp wants makes a token
    w.add_token_list([be[b] for b in range(n - 1)] + [be[0x20] + be[0x20]])
    w.add_token_types([gguf.TokenType.NORMAL] * n)
    w.add_token_merges([be[0x20] + " " + be[0x20]])
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_add_bos_token(False)


def model_name(name):
    # llama.cpp's vocab loader, seeing "phi3" or "phi-3" in general.name, looks the tokens "</s>",
    # "<unk>", "<s>", "<|endoftext|>" up by text (unordered_map::at) and fails without them
    return "tiny-" + name.replace("phi3", "phi-three")


def convert(model_dir, out_path, name):
    with open(os.path.join(model_dir, "config.json")) as f:
        hf_arch = json.load(f)["architectures"][0]
    cls = conversion.get_model_class(hf_arch)
    cls.set_vocab = tiny_set_vocab
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", out_path, "--outtype", "f32",
                "--model-name", model_name(name)]
    try:
        convert_hf_to_gguf.main()
    finally:
        sys.argv = argv
    return hf_arch, cls.__name__


def describe_gguf(path):
    r = gguf.GGUFReader(path)
    arch = None
    print("  metadata:")
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        t = f.types[0] if f.types else None
        if t == gguf.GGUFValueType.ARRAY:
            n = len(f.data)
            if k.startswith("tokenizer.ggml.") and n > 8:
                v = f"[{n} x {f.types[-1].name}]"
            else:
                v = "[" + ", ".join(str(x) for x in f.contents()) + "]"
        else:
            v = f.contents()
            if isinstance(v, float):
                v = f"{v:.7g}"
        if k == "general.architecture":
            arch = f.contents()
        print(f"    {k} = {v}")
    print("  tensors (name, ggml ne, type):")
    rope_freqs = None
    for t in r.tensors:
        print(f"    {t.name:28s} {str([int(x) for x in t.shape]):16s} {t.tensor_type.name}")
        if t.name == "rope_freqs.weight":
            rope_freqs = np.array(t.data, dtype=np.float32)
    if rope_freqs is not None:
        print("  rope_freqs (divisors of theta^(-2i/d)):", " ".join(f"{x:.6g}" for x in rope_freqs))
    return arch


def check_layout(model, path, arch, kw, opt):
    """How the converter laid out transformers' weights (layer 0 and the globals), exact equality."""
    from conversion.llama import LlamaModel
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    T = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(path).tensors}   # numpy = reversed ne
    H, nh, nkv = "model.layers.0.", kw["num_attention_heads"], kw["num_key_value_heads"]
    off = np.float32(1.0 if opt.get("gemma_norm") else 0.0)
    checks = [("token_embd = embed_tokens", T["token_embd.weight"], sd["model.embed_tokens.weight"])]
    if "output.weight" in T:
        checks.append(("output = lm_head", T["output.weight"], sd["lm_head.weight"]))
    norms = [("attn_norm", "input_layernorm")]
    if arch == "gemma3":
        norms += [("post_attention_norm", "post_attention_layernorm"), ("ffn_norm", "pre_feedforward_layernorm"),
                  ("post_ffw_norm", "post_feedforward_layernorm"), ("attn_q_norm", "self_attn.q_norm"),
                  ("attn_k_norm", "self_attn.k_norm")]
    else:
        norms += [("ffn_norm", "post_attention_layernorm")]
        if "blk.0.attn_q_norm.weight" in T:
            norms += [("attn_q_norm", "self_attn.q_norm"), ("attn_k_norm", "self_attn.k_norm")]
    for g, h in norms:
        checks.append((f"blk.0.{g} = {h}" + (" + 1" if off else ""), T[f"blk.0.{g}.weight"], sd[H + h + ".weight"] + off))
    checks.append(("output_norm = norm" + (" + 1" if off else ""), T["output_norm.weight"], sd["model.norm.weight"] + off))
    a = H + "self_attn."
    if arch == "phi3":
        checks += [("blk.0.attn_qkv = qkv_proj (rows q | k | v)", T["blk.0.attn_qkv.weight"], sd[a + "qkv_proj.weight"]),
                   ("blk.0.ffn_up = gate_up_proj (rows gate | up)", T["blk.0.ffn_up.weight"], sd[H + "mlp.gate_up_proj.weight"])]
    elif arch == "llama":
        checks += [("blk.0.attn_q = permute(q_proj, n_head)", T["blk.0.attn_q.weight"],
                    LlamaModel.permute(torch.from_numpy(sd[a + "q_proj.weight"]), nh, nh).numpy()),
                   ("blk.0.attn_k = permute(k_proj, n_head_kv)", T["blk.0.attn_k.weight"],
                    LlamaModel.permute(torch.from_numpy(sd[a + "k_proj.weight"]), nh, nkv).numpy())]
    else:
        checks += [("blk.0.attn_q = q_proj (not permuted)", T["blk.0.attn_q.weight"], sd[a + "q_proj.weight"]),
                   ("blk.0.attn_k = k_proj (not permuted)", T["blk.0.attn_k.weight"], sd[a + "k_proj.weight"])]
    if opt.get("moe"):
        gu, ff = sd[H + "mlp.experts.gate_up_proj"], sd[H + "mlp.experts.down_proj"].shape[2]
        checks += [("blk.0.ffn_gate_inp = router weight", T["blk.0.ffn_gate_inp.weight"], sd[H + "mlp.gate.weight"]),
                   ("blk.0.ffn_gate_exps[e] = expert e gate", T["blk.0.ffn_gate_exps.weight"], gu[:, :ff]),
                   ("blk.0.ffn_up_exps[e] = expert e up", T["blk.0.ffn_up_exps.weight"], gu[:, ff:]),
                   ("blk.0.ffn_down_exps[e] = expert e down", T["blk.0.ffn_down_exps.weight"], sd[H + "mlp.experts.down_proj"])]
    bad = [c for c, x, y in checks if not (x.shape == y.shape and np.array_equal(x, y))]
    print("  layout (exact):", "; ".join(c for c, _, _ in checks))
    if bad:
        raise SystemExit(f"layout check failed: {bad}")


# ---------------------------------------------------------------------------------------------
# references

def hf_reference(model, ids, moe):
    caught = []
    hooks = []
    if moe:
        for layer in model.model.layers:
            hooks.append(layer.mlp.gate.register_forward_hook(
                lambda mod, inp, out: caught.append((out[0].detach().clone(), out[2].detach().clone()))))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    for h in hooks:
        h.remove()
    experts = None
    if moe:
        assert len(caught) == len(model.model.layers)
        experts = [(lg.numpy(), ix.numpy()) for lg, ix in caught]
        for lg, ix in experts:   # the router's own choice is the top-k of its logits
            srt = np.argsort(-lg, axis=-1, kind="stable")[:, :ix.shape[1]]
            assert (srt == ix).all()
    seq = list(ids[:PROMPT_LEN])
    gaps = []   # top-1 minus top-2 logit at each greedy step: how robust the continuation is
    with torch.no_grad():
        for _ in range(N_NEW):
            lg = model(torch.tensor([seq])).logits[0, -1]
            top2 = torch.topk(lg, 2).values
            gaps.append(float(top2[0] - top2[1]))
            seq.append(int(torch.argmax(lg)))
    return logits, seq[PROMPT_LEN:], experts, min(gaps)


def lcpp_reference(path, ids):
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, logits_all=True, n_threads=2, n_threads_batch=2,
                          verbose=False, type_k=0, type_v=0, seed=0)
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[:len(ids)], dtype=np.float32)
    llm.reset()
    llm.eval(ids[:PROMPT_LEN])
    out = []
    for _ in range(N_NEW):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        llm.eval([t])
    del llm
    return logits, out


def fmt_row(v):
    return " ".join("%.7g" % float(x) for x in v)


def write_txt(path, name, arch, ids, hf_logits, hf_greedy, lc, experts):
    L = [f"arch {name} {arch}", f"vocab {VOCAB}", f"ids {len(ids)} " + " ".join(map(str, ids)),
         f"hf_logits {hf_logits.shape[0]} {hf_logits.shape[1]}"]
    L += [fmt_row(r) for r in hf_logits]
    L.append(f"hf_greedy {len(hf_greedy)} {PROMPT_LEN} " + " ".join(map(str, hf_greedy)))
    if lc is not None:
        lc_logits, lc_greedy = lc
        L.append(f"lcpp_logits {lc_logits.shape[0]} {lc_logits.shape[1]}")
        L += [fmt_row(r) for r in lc_logits]
        L.append(f"lcpp_greedy {len(lc_greedy)} {PROMPT_LEN} " + " ".join(map(str, lc_greedy)))
    if experts is not None:
        nt, k = experts[0][1].shape
        L.append(f"experts {len(experts)} {nt} {k}")
        L += [" ".join(str(int(x)) for x in ix.reshape(-1)) for _, ix in experts]
        ne = experts[0][0].shape[1]
        L.append(f"router_logits {len(experts)} {nt} {ne}")
        L += [fmt_row(lg.reshape(-1)) for lg, _ in experts]
    L.append("end")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    only = [s for s in ARGS.only.split(",") if s]
    ids = [int(x) for x in np.random.default_rng(IDS_SEED).integers(0, VOCAB, N_IDS)]
    print("transformers", transformers.__version__, "| torch", torch.__version__,
          "| converter", LCPP_DIR, "| gguf-py", gguf.__file__)
    if HAVE_LCPP:
        print("llama-cpp-python", llama_cpp.__version__)
    else:
        print(f"NOTE: llama_cpp not importable ({LCPP_ERR}): lcpp_logits / lcpp_greedy skipped")
    print("ids", ids)
    summary = []
    for name, cfg_cls, kw, opt in model_specs():
        if only and name not in only:
            continue
        print(f"\n=== {name} ({cfg_cls.__name__})")
        moe = opt.get("moe", False)
        model = build_model(cfg_cls, kw, opt)
        gguf_path = os.path.join(OUT_DIR, f"{name}.gguf")
        with tempfile.TemporaryDirectory() as tmp:
            mdir = os.path.join(tmp, f"tiny-{name}")
            model.save_pretrained(mdir, safe_serialization=True)
            write_tokenizer(mdir)
            hf_arch, conv_cls = convert(mdir, gguf_path, name)
            if ARGS.hf_out:
                import shutil
                dst = os.path.join(HF_DIR, name)
                shutil.rmtree(dst, ignore_errors=True)
                if name == "mixtral":          # sharded, as big checkpoints are: model.safetensors.index.json
                    os.makedirs(dst)
                    model.save_pretrained(dst, safe_serialization=True, max_shard_size="150KB")
                    shutil.copy(os.path.join(mdir, "tokenizer.json"), dst)
                else:
                    shutil.copytree(mdir, dst)
        print(f"  {hf_arch} -> converter class {conv_cls}; {os.path.getsize(gguf_path)} bytes")
        arch = describe_gguf(gguf_path)
        check_layout(model, gguf_path, arch, kw, opt)
        hf_logits, hf_greedy, experts, gap = hf_reference(model, ids, moe)
        rng = float(hf_logits.max() - hf_logits.min())
        srt = np.sort(hf_logits, axis=-1)
        print(f"  hf: logit range {rng:.4g}, smallest top-1 - top-2 gap {float((srt[:, -1] - srt[:, -2]).min()):.3g} "
              f"(greedy steps: {gap:.3g}), greedy {hf_greedy} ({len(set(hf_greedy))} distinct)")
        if experts is not None:
            for li, (lg, ix) in enumerate(experts):
                k = ix.shape[1]
                s = -np.sort(-lg, axis=-1)
                print(f"  hf experts layer {li}: " + " ".join(",".join(map(str, t)) for t in ix))
                print(f"    smallest router-logit gap: at the top-{k} cut {float((s[:, k - 1] - s[:, k]).min()):.3g}, "
                      f"in the order {float(np.diff(-s[:, :k], axis=-1).min()):.3g}")
        lc = None
        if HAVE_LCPP and not opt.get("no_lcpp"):
            lc = lcpp_reference(gguf_path, ids)
            err = float(np.abs(hf_logits - lc[0]).max()) / rng
            am = int((hf_logits.argmax(-1) == lc[0].argmax(-1)).sum())
            same = lc[1] == hf_greedy
            print(f"  llama.cpp: max|hf-lcpp|/range {err:.3g}, argmax agree {am}/{N_IDS}, "
                  f"greedy {lc[1]} {'AGREES' if same else 'DIFFERS'}")
            summary.append((name, arch, err, am, same))
        else:
            summary.append((name, arch, None, None, None))
        write_txt(os.path.join(OUT_DIR, f"{name}.txt"), name, arch, ids, hf_logits, hf_greedy, lc, experts)
    print("\nsummary (name, general.architecture, max|hf-lcpp|/range, argmax agree, greedy agree):")
    for s in summary:
        print("  ", *s)


if __name__ == "__main__":
    main()
