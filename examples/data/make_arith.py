#!/usr/bin/env python3
"""Writes arith_train.jsonl and arith_eval.jsonl: verifiable arithmetic prompts for GRPO/PPO
({"prompt", "answer"}): sums and differences of small numbers (a in 1..20, b in 1..10, never
negative), a level where SmolLM2-135M-Instruct is sometimes right, so that sampled groups hold
both right and wrong answers; the answer is a number that
ft's `--reward number` checks against the last number of the completion. The held-out problems
never occur in training. Deterministic: python3 examples/data/make_arith.py"""
import json, os, random

FORMS = ["What is {a} {op} {b}? Reply with just the number.", "Compute {a} {op} {b}. Answer with the number only.",
         "{a} {op} {b} = ? Give only the result."]

def main():
    rng = random.Random(5)
    here = os.path.dirname(os.path.abspath(__file__))
    seen = set()
    for name, n in (("arith_train.jsonl", 250), ("arith_eval.jsonl", 50)):
        with open(os.path.join(here, name), "w") as f:
            k = 0
            while k < n:
                a, b, op = rng.randint(1, 20), rng.randint(1, 10), rng.choice("+-")
                if (a, b, op) in seen or (op == "-" and b > a):
                    continue
                seen.add((a, b, op)); k += 1
                f.write(json.dumps({"prompt": rng.choice(FORMS).format(a=a, op=op, b=b), "answer": str(a + b if op == "+" else a - b)}) + "\n")

if __name__ == "__main__":
    main()
