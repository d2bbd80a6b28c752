#!/usr/bin/env python3
"""tools/bench_torch.py - the peer of `build/bench train`: the same LoRA / QLoRA / full fine-tuning
training steps in PyTorch (+ peft) on the same CPU, and the driver that runs both and prints the
comparison.

  run      one configuration in PyTorch (one process: its peak memory is its own):
           python tools/bench_torch.py run -m MODEL.gguf --method lora|qlora|full [--batch 4] [--seq 256]
                  [--rank 8] [--alpha 16] [--threads N] [--steps 5] [--warmup 2] [--autocast bf16|bf16w]
  table    the table again from --jsonl files of compare runs (every round in them):
           python tools/bench_torch.py table build/bench_train.jsonl
  compare  ours (build/bench train) and PyTorch, each configuration in its own process, the two
           interleaved (ours, torch, ours, torch, ... so that the load of a shared machine hits
           both alike), at each thread count; prints the table and appends the raw results to
           --jsonl:
           python tools/bench_torch.py compare -m MODEL.gguf [--bench build/bench] [--threads 1,2]
                  [--methods lora,qlora,full] [--ours f32,bf16] [--peers f32,bf16,bf16w] [--rounds 1] [same sizes as run]

The model is Hugging Face's form of the same GGUF file: AutoModelForCausalLM.from_pretrained(dir,
gguf_file=name, dtype=float32) dequantizes it to f32. "lora": peft LoRA on that f32 model.
"qlora": PyTorch has no Q4_1 matmul, so the peer is bitsandbytes' 4-bit NF4 (BitsAndBytesConfig,
compute dtype f32) on CPU - the usual QLoRA recipe - loaded from an f32 safetensors copy of the
same weights (written once to build/hf-<model>-f32/). LoRA: the same r, alpha, all seven linear
layers, no dropout, lora_B drawn from N(0, 1e-3) as `bench train` does (PEFT's zero init would
make every step but the first identical in cost anyway). AdamW (lr 1e-4, no weight decay) on the
LoRA parameters. The batch is the same B x T ids as ours (the same 64-bit LCG), the loss the mean
cross-entropy of each next token. The bf16 peer (--autocast bf16) runs the forward and the loss
under torch.autocast("cpu", dtype=torch.bfloat16), the LoRA parameters and AdamW in f32 (the usual
mixed-precision recipe; its QLoRA computes in bf16: bnb_4bit_compute_dtype=bfloat16). "full": every
parameter of the f32 model trains (the tied embedding / head and the norms too), AdamW over all of
them; its bf16 peers are autocast (f32 weights and moments) and --autocast bf16w, the whole model
loaded in bf16 with AdamW's moments in bf16 too (half the memory, no f32 masters; the loss in
f32). Peak memory is VmHWM reset after loading (clear_refs), i.e. the peak of the training steps,
the weights included."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def mem_mib():
    """(VmHWM, VmRSS) in MiB"""
    hwm = rss = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return hwm, rss


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_batch(B, T, V):
    """the ids of `bench train`: x <- x * 6364136223846793005 + 1442695040888963407 mod 2^64, id = (x >> 33) % V"""
    x, ids = 42, []
    for _ in range(B * T):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        ids.append((x >> 33) % V)
    tgt = [ids[i * T + t + 1] if t + 1 < T else -100 for i in range(B) for t in range(T)]
    return ids, tgt


def step_flops(cfg, B, T, r, full=False):
    """the FLOPs of one step, as `bench train` counts them (see tools/bench.c)"""
    C, F, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    H, Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    D = getattr(cfg, "head_dim", None) or C // H
    q, kv = H * D, Hkv * D
    per_layer = C * q + 2 * C * kv + q * C + 3 * C * F
    n_mm = L * per_layer + V * C
    n_in0 = C * q + 2 * C * kv
    n_lora = L * r * ((C + q) + 2 * (C + kv) + (q + C) + 2 * (C + F) + (F + C))
    attn = 2.0 * L * B * H * D * T * (T + 1)
    if full:
        return B * T * 6 * n_mm + 3 * attn
    return B * T * (4 * n_mm - 2 * n_in0 + 6 * n_lora) + 3 * attn


def hf_f32_dir(model_path):
    """an f32 safetensors copy of the GGUF's weights (bitsandbytes quantizes from it)"""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build")
    d = os.path.join(root, "hf-" + os.path.basename(model_path).replace(".gguf", "") + "-f32")
    if not os.path.exists(os.path.join(d, "config.json")):
        import torch
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(model_path)),
                                                 gguf_file=os.path.basename(model_path), dtype=torch.float32)
        cfg = m.config
        cfg.__dict__.pop("quantization_config", None)   # not "gguf-quantized" any more
        plain = type(m)(cfg)
        plain.load_state_dict(m.state_dict())
        plain.save_pretrained(d)
    return d


def cmd_run(a):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(a.threads)
    import torch
    import torch.nn.functional as Fn
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    import transformers
    import peft
    if a.autocast == "bf16w" and a.method == "qlora":
        sys.exit("bench_torch: --autocast bf16w is for lora and full (bitsandbytes keeps its own dtypes)")
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    t_load = time.perf_counter()
    if a.method in ("lora", "full"):
        wdt = torch.bfloat16 if a.autocast == "bf16w" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(a.model)),
                                                     gguf_file=os.path.basename(a.model), dtype=wdt)
        weights = "%s (dequantized from the GGUF)" % ("bf16" if wdt == torch.bfloat16 else "f32")
    else:
        from transformers import BitsAndBytesConfig
        import bitsandbytes
        cdt = torch.bfloat16 if a.autocast == "bf16" else torch.float32
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=cdt)
        model = AutoModelForCausalLM.from_pretrained(hf_f32_dir(a.model), quantization_config=q, device_map="cpu",
                                                     dtype=torch.float32)
        weights = "nf4 (bitsandbytes %s, CPU)" % bitsandbytes.__version__
    if a.method != "full":
        model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=TARGETS,
                                                 bias="none", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 1e-3)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_lora = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    cfg = model.config
    V = cfg.vocab_size
    ids, tgt = make_batch(a.batch, a.seq, V)
    ids = torch.tensor(ids, dtype=torch.long).view(a.batch, a.seq)
    tgt = torch.tensor(tgt, dtype=torch.long).view(-1)
    t_load = time.perf_counter() - t_load
    import gc
    gc.collect()
    hwm_load, _ = mem_mib()
    reset = reset_peak()
    _, rss_loaded = mem_mib()
    import contextlib
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.autocast == "bf16" else contextlib.nullcontext
    ftype = torch.float32 if a.autocast == "bf16w" else None       # the whole-bf16 model's loss in f32
    print("bench_torch: %s, %s base weights, B=%d T=%d r=%d alpha=%g, %d threads, %d warm-up + %d timed steps, autocast %s"
          % (a.method, weights, a.batch, a.seq, a.rank, a.alpha, a.threads, a.warmup, a.steps, a.autocast), flush=True)
    times, tf, tb, to, cpu, losses = [], [], [], [], [], []
    for i in range(-a.warmup, a.steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        with cast():
            logits = model(input_ids=ids).logits
            loss = Fn.cross_entropy(logits.view(-1, V).to(ftype or logits.dtype), tgt, ignore_index=-100)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        losses.append(loss.item())
        del logits, loss
        print("  %s %d: %.3f s (forward %.3f, backward %.3f, AdamW %.4f), loss %.4f"
              % ("warm-up" if i < 0 else "step", i + a.warmup + 1 if i < 0 else i + 1, t3 - t0, t1 - t0, t2 - t1, t3 - t2,
                 losses[-1]), file=sys.stderr, flush=True)
        if i >= 0:
            times.append(t3 - t0); tf.append(t1 - t0); tb.append(t2 - t1); to.append(t3 - t2)
            cpu.append(time.process_time() - c0)
    hwm, rss = mem_mib()
    med = statistics.median(times)
    flops = step_flops(cfg, a.batch, a.seq, a.rank, a.method == "full")
    tok = a.batch * a.seq
    print("step time: median %.3f s (min %.3f, max %.3f); forward %.3f s, backward %.3f s, AdamW %.4f s (means);\n"
          "           CPU time %.3f s per step (all threads: %.2f cores busy)"
          % (med, min(times), max(times), statistics.mean(tf), statistics.mean(tb), statistics.mean(to),
             statistics.mean(cpu), statistics.mean(cpu) / statistics.mean(times)))
    print("tokens/s: %.1f   peak RSS of the steps: %.0f MiB (%.0f MiB before the first step; %.0f MiB peak while loading)"
          % (tok / med, hwm, rss_loaded, hwm_load))
    print("achieved %.1f GFLOP/s by the count of bench train (%.4g FLOPs/step)" % (flops / med / 1e9, flops))
    res = dict(impl="pytorch", autocast=a.autocast, method=a.method, weights=weights, B=a.batch, T=a.seq, r=a.rank, alpha=a.alpha,
               threads=a.threads, steps=a.steps, warmup=a.warmup, step_s=med, step_min_s=min(times),
               step_mean_s=statistics.mean(times), cpu_s=statistics.mean(cpu), fwd_s=statistics.mean(tf), bwd_s=statistics.mean(tb),
               opt_s=statistics.mean(to), tokens_per_s=tok / med, peak_rss_mib=hwm if reset else None,
               rss_loaded_mib=rss_loaded, load_peak_rss_mib=hwm_load, load_s=t_load, flops_per_step=flops,
               trainable=n_lora, loss_first=losses[0], loss_last=losses[-1],
               attn=getattr(cfg, "_attn_implementation", None), loadavg=os.getloadavg()[0],
               versions="torch %s, transformers %s, peft %s" % (torch.__version__, transformers.__version__, peft.__version__))
    print("RESULT " + json.dumps(res), flush=True)
    if a.profile:                                   # one more step under torch.profiler, by op
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with cast():
                logits = model(input_ids=ids).logits
                loss = Fn.cross_entropy(logits.view(-1, V), tgt, ignore_index=-100)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        print("\nprofile of one step (torch.profiler, self CPU time by op):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))


def run_one(cmd, env):
    """a configuration in its own process; its RESULT line as a dict (None when it failed)"""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
        else:
            print("  " + line, file=sys.stderr)
    if p.returncode != 0 or res is None:
        print("  failed (exit %d): %s" % (p.returncode, p.stderr[-2000:]), file=sys.stderr)
    return res


def peer(r):
    """who made a RESULT: ours (f32), ours-bf16 (--compute bf16), torch (f32), torch-bf16 (autocast) or
    torch-bf16w (the whole model and AdamW in bf16)"""
    if r["impl"] != "pytorch":
        return "ours-bf16" if r.get("compute") == "bf16" else "ours"
    return {"bf16": "torch-bf16", "bf16w": "torch-bf16w"}.get(r.get("autocast"), "torch")


WHO = ["ours", "ours-bf16", "torch", "torch-bf16", "torch-bf16w"]
AUTOCAST = {"torch": "none", "torch-bf16": "bf16", "torch-bf16w": "bf16w"}


def cmd_compare(a):
    here = os.path.dirname(os.path.abspath(__file__))
    bench = a.bench or os.path.join(here, "..", "build", "bench")
    threads = [int(t) for t in a.threads.split(",")]
    methods = a.methods.split(",")
    peers = ([{"f32": "ours", "bf16": "ours-bf16"}[p] for p in a.ours.split(",") if p] +
             [{"f32": "torch", "bf16": "torch-bf16", "bf16w": "torch-bf16w"}[p] for p in a.peers.split(",") if p])
    sizes = ["--batch", str(a.batch), "--seq", str(a.seq), "--rank", str(a.rank), "--alpha", str(a.alpha),
             "--steps", str(a.steps), "--warmup", str(a.warmup)]
    rows = []
    for n in threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n), FT_THREADS=str(n))
        for m in methods:
            got = {w: [] for w in WHO}
            for k in range(a.rounds):                  # interleaved; the order turns by round
                for who in peers[k % len(peers):] + peers[:k % len(peers)]:
                    if who == "torch-bf16w" and m == "qlora":
                        continue
                    if who.startswith("ours"):
                        cmd = [bench, "train", "-m", a.model, "--method", m, "--threads", str(n),
                               "--compute", "bf16" if who == "ours-bf16" else "f32"] + sizes
                    else:
                        cmd = [sys.executable, os.path.abspath(__file__), "run", "-m", a.model, "--method", m, "--threads", str(n),
                               "--autocast", AUTOCAST[who]] + sizes
                    r = run_one(cmd, env)
                    if r:
                        got[who].append(r)
                        if a.jsonl:
                            with open(a.jsonl, "a") as f:
                                f.write(json.dumps(r) + "\n")
            rows.append((n, m, got))
    print_table(rows, a)


def print_table(rows, a):
    def med(rs, key):
        v = [r[key] for r in rs if r.get(key) is not None]
        return statistics.median(v) if v else None

    def fmt(v, f):
        return (f % v) if v is not None else "-"

    bw = any(got["torch-bf16w"] for _, _, got in rows)      # the whole-bf16 peer's columns when it ran
    print("\nTraining steps, SmolLM2-135M-Instruct, B=%d T=%d (LoRA: r=%d alpha=%g, all linear layers), AdamW; "
          "median step of %d after %d warm-up, %d round(s) each" % (a.batch, a.seq, a.rank, a.alpha, a.steps, a.warmup, a.rounds))
    print("| config | threads | ours tok/s | torch f32 tok/s | ours / f32 | ours bf16 tok/s | torch bf16 tok/s | ours bf16 / torch bf16 "
          + ("| torch bf16 weights tok/s | ours bf16 / it " if bw else "")
          + "| ours RSS | torch f32 RSS | torch bf16 RSS | MFU ours | ours / f32 by CPU time |")
    print("|---" * (15 if bw else 13) + "|")
    for n, m, got in rows:
        ours, o16, tr, tb = got["ours"], got["ours-bf16"], got["torch"], got["torch-bf16"]
        ot, ob, tt, bt = med(ours, "tokens_per_s"), med(o16, "tokens_per_s"), med(tr, "tokens_per_s"), med(tb, "tokens_per_s")
        ww = med(got["torch-bf16w"], "tokens_per_s")
        peak = max([r["peak_gflops"] for r in ours + o16] or [0]) or None   # the best measured: others' load only lowers it
        fl = (ours + o16)[0]["flops_per_step"] if ours + o16 else None
        name = {"lora": "LoRA (f32 base)", "qlora": "QLoRA (ours Q4_1, torch bnb NF4)",
                "full": "full fine-tuning (f32 masters)"}.get(m, m)
        mfu_o = fl * ot / (a.batch * a.seq) / 1e9 / peak if (ot and peak and fl) else None
        oc, tc = med(ours, "cpu_s"), med(tr, "cpu_s")
        print("| %s | %d | %s | %s | %s | %s | %s | %s | %s%s | %s | %s | %s | %s |" % (
            name, n, fmt(ot, "%.1f"), fmt(tt, "%.1f"), fmt(ot / tt if ot and tt else None, "%.2fx"),
            fmt(ob, "%.1f"), fmt(bt, "%.1f"), fmt(ob / bt if ob and bt else None, "%.2fx"),
            ("%s | %s | " % (fmt(ww, "%.1f"), fmt(ob / ww if ob and ww else None, "%.2fx"))) if bw else "",
            fmt(med(ours, "peak_rss_mib"), "%.0f MiB"), fmt(med(tr, "peak_rss_mib"), "%.0f MiB"), fmt(med(tb, "peak_rss_mib"), "%.0f MiB"),
            fmt(mfu_o and 100 * mfu_o, "%.1f%%"), fmt(tc / oc if oc and tc else None, "%.2fx")))
    if rows and rows[0][2]["ours"] and rows[0][1] != "full":
        r = rows[0][2]["ours"][0]
        print("\nMFU = FLOPs per step / step time / the f32 FMA peak that bench measured at that thread count (the highest of its"
              " runs); FLOPs per step"
              " = tokens x (4 N_mm - 2 N_in0 + 6 N_lora) + 3 x causal attention forward = %.4g here (see tools/bench.c)."
              % r["flops_per_step"])
        print("tok/s: wall clock, the median step. 'by CPU time': the ratio of CPU seconds per step (all threads), "
              "less sensitive to other processes on the cores; at 2 threads it also charges OpenMP's spin-waiting to torch.")
    for n, m, got in rows:
        for who in WHO:
            for r in got[who]:
                print("  %-10s %-5s %d thr: step %.2f s (fwd %.2f, bwd %.2f, AdamW %.3f), CPU %.2f s/step, loss %.3f -> %.3f, "
                      "load avg %.1f%s" % (
                          who, r["method"], r["threads"], r["step_s"], r["fwd_s"], r["bwd_s"], r["opt_s"], r["cpu_s"],
                          r["loss_first"], r["loss_last"], r.get("loadavg", -1),
                          (", FMA peak %.1f GFLOP/s" % r["peak_gflops"]) if "peak_gflops" in r else ""))


def cmd_table(a):
    """the table again from the RESULT lines of one or more compare runs (all rounds together)"""
    recs = []
    for path in a.files:
        with open(path) as f:
            recs += [json.loads(line) for line in f if line.strip()]
    keys = []
    for r in recs:
        k = (r["threads"], r["method"], r["B"], r["T"], r["r"])
        if k not in keys:
            keys.append(k)
    keys.sort(key=lambda k: (k[0], k[1]))
    rows = [(k[0], k[1], {w: [r for r in recs if (r["threads"], r["method"], r["B"], r["T"], r["r"]) == k and peer(r) == w] for w in WHO})
            for k in keys]
    r0 = recs[0]
    a.batch, a.seq, a.rank, a.alpha, a.steps, a.warmup = r0["B"], r0["T"], r0["r"], r0["alpha"], r0["steps"], r0["warmup"]
    a.rounds = max(len(got["ours"]) for _, _, got in rows)
    print_table(rows, a)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    for name in ("run", "compare"):
        p = sub.add_parser(name)
        p.add_argument("-m", "--model", required=True)
        p.add_argument("--batch", type=int, default=4)
        p.add_argument("--seq", type=int, default=256)
        p.add_argument("--rank", type=int, default=8)
        p.add_argument("--alpha", type=float, default=16)
        p.add_argument("--steps", type=int, default=5)
        p.add_argument("--warmup", type=int, default=2)
        if name == "run":
            p.add_argument("--method", choices=["lora", "qlora", "full"], default="lora")
            p.add_argument("--threads", type=int, default=os.cpu_count())
            p.add_argument("--profile", action="store_true")
            p.add_argument("--autocast", choices=["none", "bf16", "bf16w"], default="none")
        else:
            p.add_argument("--bench", default=None)
            p.add_argument("--threads", default="1,2")
            p.add_argument("--methods", default="lora,qlora")
            p.add_argument("--peers", default="f32,bf16")          # and bf16w: the whole model in bf16
            p.add_argument("--ours", default="f32,bf16")
            p.add_argument("--rounds", type=int, default=1)
            p.add_argument("--jsonl", default=None)
    a = ap.parse_args()
    {"run": cmd_run, "compare": cmd_compare, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
