#!/usr/bin/env python3
"""Writes arith_train.jsonl and arith_eval.jsonl: verifiable arithmetic prompts for GRPO/PPO
({"prompt", "answer"}): sums and differences of two-digit numbers, the answer a number that
ft's `--reward number` checks against the last number of the completion. The held-out problems
never occur in training. Deterministic: python3 examples/data/make_arith.py"""
import json, os, random

FORMS = ["What is {a} {op} {b}? Reply with just the number.", "Compute {a} {op} {b}. Answer with the number only.",
         "{a} {op} {b} = ? Give only the result."]

def main():
    rng = random.Random(5)
    here = os.path.dirname(os.path.abspath(__file__))
    seen = set()
    for name, n in (("arith_train.jsonl", 400), ("arith_eval.jsonl", 50)):
        with open(os.path.join(here, name), "w") as f:
            k = 0
            while k < n:
                a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
                if (a, b, op) in seen:
                    continue
                seen.add((a, b, op)); k += 1
                f.write(json.dumps({"prompt": rng.choice(FORMS).format(a=a, op=op, b=b), "answer": str(a + b if op == "+" else a - b)}) + "\n")

if __name__ == "__main__":
    main()
