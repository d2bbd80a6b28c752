#!/usr/bin/env python3
"""Regex fixtures for tests/test_rl.c: random patterns in the syntax of finetune.h's reward regex
(literals, . [] [^] ranges, \\d \\w \\s \\D \\W \\S, groups with |, * + ? {m} {m,} {m,n}, ^ $) and
random texts, with Python's re.search on the bytes as the answer (a bytes pattern without flags:
ASCII classes, '.' not newline, '$' at the end or before a final newline).
Writes tests/fixtures/regex.jsonl: one {"p": pattern, "t": [texts], "m": [0|1 for each]} per line.
Deterministic: python3 tools/ref/regex_fixtures.py [N_PATTERNS] (default 300, 8 texts each)."""
import json, random, re, sys

ALPHA = "abc1_ \n"
SINGLE = ["a", "b", "c", "1", "_", " ", ".", "\\d", "\\w", "\\s", "\\D", "\\W", "\\S", "\\.", "[ab]", "[^a]",
          "[a-c]", "[^\\d ]", "[\\w ]", "[]a]", "[a-]", "[^\\n]"]

def quant(rng):
    r = rng.random()
    if r < 0.55: return ""
    if r < 0.85: return rng.choice(["*", "+", "?"])
    m = rng.randint(0, 3)
    return rng.choice(["{%d}" % m, "{%d,}" % m, "{%d,%d}" % (m, m + rng.randint(0, 3))])

def seq(rng, depth):
    out = []
    for _ in range(rng.randint(0 if depth else 1, 4)):
        r = rng.random()
        if r < 0.08 and not out: out.append("^"); continue
        if r < 0.14: out.append("$"); continue
        if r < 0.32 and depth < 3:
            out.append("(" + "|".join(seq(rng, depth + 1) for _ in range(rng.randint(1, 3))) + ")" + quant(rng))
            continue
        out.append(rng.choice(SINGLE) + quant(rng))
    return "".join(out)

def pattern(rng):
    return "|".join(seq(rng, 0) for _ in range(rng.randint(1, 2)))

def text(rng):
    return "".join(rng.choice(ALPHA) for _ in range(rng.randint(0, 12)))

def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rng = random.Random(20261206)
    rows, seen = [], set()
    while len(seen) < n:
        p = pattern(rng)
        if p in seen: continue
        try: rx = re.compile(p.encode())
        except re.error: continue
        seen.add(p)
        texts = [text(rng) for _ in range(6)]
        hit = [t for t in (text(rng) for _ in range(40)) if rx.search(t.encode())]  # some matches too
        texts += hit[:2]
        rows.append({"p": p, "t": texts, "m": [1 if rx.search(t.encode()) else 0 for t in texts]})
    with open("tests/fixtures/regex.jsonl", "w") as f:
        for r in rows: f.write(json.dumps(r) + "\n")
    print("%d patterns, %d texts, %d matches" % (n, sum(len(r["t"]) for r in rows), sum(sum(r["m"]) for r in rows)))

if __name__ == "__main__":
    main()
