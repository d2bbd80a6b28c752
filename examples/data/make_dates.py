#!/usr/bin/env python3
"""Writes dates_train.jsonl and dates_eval.jsonl: a small instruction dataset written for
finetune.h's demo. The skill: rewrite an ISO date (YYYY-MM-DD) as DD.MM.YYYY and nothing else.
SmolLM2-135M-Instruct answers such requests with sentences, other formats or wrong digits, so
its exact-match accuracy starts near zero; the held-out set uses dates that never occur in
training. Deterministic (seeded); rerun to regenerate:  python3 examples/data/make_dates.py"""
import json, os, random

TEMPLATES = [
    "Rewrite the date {d} in the format DD.MM.YYYY.",
    "Convert {d} to day.month.year notation.",
    "Write {d} as DD.MM.YYYY.",
    "What is {d} in European dot notation (DD.MM.YYYY)?",
    "Give the date {d} in DD.MM.YYYY format, nothing else.",
    "Format this date as DD.MM.YYYY: {d}",
]

def dates(rng, n, taken):
    out = []
    while len(out) < n:
        y, m, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
        iso = f"{y:04d}-{m:02d}-{d:02d}"
        if iso in taken:
            continue
        taken.add(iso)
        out.append((iso, f"{d:02d}.{m:02d}.{y:04d}"))
    return out

def main():
    rng = random.Random(20261128)
    here = os.path.dirname(os.path.abspath(__file__))
    taken = set()
    for name, n in (("dates_train.jsonl", 400), ("dates_eval.jsonl", 100)):
        with open(os.path.join(here, name), "w") as f:
            for iso, dotted in dates(rng, n, taken):
                rec = {"instruction": rng.choice(TEMPLATES).format(d=iso), "input": "", "output": dotted}
                f.write(json.dumps(rec) + "\n")

if __name__ == "__main__":
    main()
