#!/usr/bin/env python3
"""Write tests/fixtures/llamacpp_reference.txt: what llama.cpp computes on SmolLM2-135M-Instruct
(Q4_1), for tests/test_llamacpp_ref.c. Run by hand:
    python tools/ref/llamacpp_reference.py "$(tools/fetch-model)"
(llama-cpp-python; on CPUs with AMX build it with CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF": its AMX path crashes there.)

Lines:  ids NAME n id...                 token ids (llama.cpp's tokenizer, special tokens parsed)
        vocab n id...                    the vocabulary subset whose logits are recorded
        logits NAME POS argmax range n v...   logits of `vocab` at one position, its full argmax
                                         and max - min of the full row
        top NAME POS (id logit) x5       the five largest logits at that position
        gaps NAME n g...                 at each greedy step, llama.cpp's top-1 minus top-2 logit
        greedy NAME n id...              64 greedy tokens after prompt NAME (plain argmax)
        ppl NAME value                   exp(mean NLL of tokens 1..n-1), float64 log-softmax
"""
import sys
import numpy as np
import llama_cpp

PROMPTS = {
    "plain": b"The quick brown fox jumps over the lazy dog. In 1969, humans first walked on the Moon.",
    "chat": b"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            b"<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "code": b"def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "numbers": b"Order #4521: 3 items at $19.99, shipped 2024-07-15 to 221B Baker Street.",
}
TEXT = (b"Water moves in a never-ending cycle between the oceans, the air and the land. The sun heats the "
        b"surface of the sea, and some of the water turns into vapour that rises into the atmosphere. "
        b"As the vapour climbs it cools, and the tiny droplets gather around specks of dust to form clouds. "
        b"When the droplets grow heavy enough they fall back to the ground as rain, snow or hail. Some of this "
        b"water soaks into the soil and becomes groundwater, which can stay hidden for thousands of years. "
        b"The rest runs off into streams and rivers that carry it back to the sea, where the journey begins "
        b"again. Plants take part in the cycle too: their roots draw water from the soil, and their leaves "
        b"release it into the air. In cold regions water may be stored for a long time as ice in glaciers "
        b"and ice sheets, and these frozen stores change slowly as the climate warms or cools. Scientists "
        b"study the water cycle to predict floods and droughts, to plan how cities will find clean water, "
        b"and to understand how the weather of the future may differ from the weather of today.")

def main():
    path = sys.argv[1]
    llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=1024, n_threads=2, logits_all=True, verbose=False)
    rng = np.random.default_rng(0)
    vocab = np.concatenate([np.arange(256), rng.choice(np.arange(256, 49152), 256, replace=False)]).astype(int)
    lines = ["vocab %d %s" % (len(vocab), " ".join(map(str, vocab)))]
    for name, text in PROMPTS.items():
        ids = llm.tokenize(text, add_bos=False, special=True)
        llm.reset(); llm.eval(ids)
        lines.append("ids %s %d %s" % (name, len(ids), " ".join(map(str, ids))))
        for t in range(len(ids)):
            row = np.array(llm.scores[t], dtype=np.float64)
            top = np.argsort(-row)[:5]
            lines.append("top %s %d %s" % (name, t, " ".join("%d %.9g" % (i, row[i]) for i in top)))
            lines.append("logits %s %d %d %.9g %d %s" % (name, t, int(row.argmax()), row.max() - row.min(), len(vocab),
                                                         " ".join("%.9g" % row[v] for v in vocab)))
        if name in ("chat", "plain"):
            out, gaps = [], []
            for _ in range(64):
                row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
                top2 = np.sort(row)[-2:]
                tok = int(np.argmax(row)); out.append(tok); gaps.append(top2[1] - top2[0]); llm.eval([tok])
            lines.append("greedy %s %d %s" % (name, len(out), " ".join(map(str, out))))
            lines.append("gaps %s %d %s" % (name, len(gaps), " ".join("%.6g" % g for g in gaps)))
    ids = llm.tokenize(TEXT, add_bos=False, special=False)
    llm.reset(); llm.eval(ids)
    lg = np.array(llm.scores[:len(ids)], dtype=np.float64)
    m = lg.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(lg - m).sum(axis=1))
    nll = lse[:-1] - lg[np.arange(len(ids) - 1), ids[1:]]
    lines.append("ids text %d %s" % (len(ids), " ".join(map(str, ids))))
    lines.append("ppl text %.9g" % float(np.exp(nll.mean())))
    open("tests/fixtures/llamacpp_reference.txt", "w").write("\n".join(lines) + "\n")
    print("wrote tests/fixtures/llamacpp_reference.txt:", len(lines), "lines; text ppl %.4f over %d tokens" % (np.exp(nll.mean()), len(ids)))

if __name__ == "__main__":
    main()
