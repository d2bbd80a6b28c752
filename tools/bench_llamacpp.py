#!/usr/bin/env python3
"""llama.cpp's speed on the same GGUF, as a peer for tools/bench (not a dependency of the
project): prompt processing of 128 tokens in one batch and generation of 64 tokens one by one,
with the same thread count, through llama-cpp-python (pip install llama-cpp-python builds
llama.cpp from source). Prints both and the ratio finetune.h / llama.cpp when build/bench has
written build/bench_model.txt.   usage: python3 tools/bench_llamacpp.py MODEL.gguf [threads]"""
import sys, time, os
import llama_cpp

def main():
    path = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    NP, NG = 128, 64
    llm = llama_cpp.Llama(model_path=path, n_ctx=NP + NG + 8, n_batch=NP, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    ids = [100 + (i * 37) % 4000 for i in range(NP)]
    best_pp = best_tg = 0.0
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter(); llm.eval(ids); pp = NP / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(NG):
            llm.eval([ids[i]])
        tg = NG / (time.perf_counter() - t0)
        best_pp, best_tg = max(best_pp, pp), max(best_tg, tg)
    print(f"llama.cpp {llama_cpp.__version__}, {threads} threads: pp{NP} {best_pp:.1f} tokens/s, tg{NG} {best_tg:.1f} tokens/s")
    if os.path.exists("build/bench_model.txt"):
        t, pp, tg, pp8, tg8 = (float(v) for v in open("build/bench_model.txt").read().split())
        print(f"finetune.h / llama.cpp: f32: prompt processing {pp / best_pp:.2f}, generation {tg / best_tg:.2f}; "
              f"ft generate's default: prompt processing {pp8 / best_pp:.2f}, generation {tg8 / best_tg:.2f}")

if __name__ == "__main__":
    main()
