#!/usr/bin/env python3
"""Writes units_train.jsonl and units_eval.jsonl: a second small instruction task for the merge
demo (tools/merge_demo.sh), next to the dates task. The skill: convert a whole quantity to the
smaller unit and answer with the number and the unit symbol only, e.g. "Convert 37 km to m." ->
"37000 m". Five conversions (km->m, kg->g, l->ml, m->cm, cm->mm), so the model has to learn how
many zeros each one appends. The held-out quantities never occur in training. Deterministic
(seeded); rerun to regenerate:  python3 examples/data/make_units.py"""
import json, os, random

UNITS = [("km", "m", 1000, "kilometres", "metres"), ("kg", "g", 1000, "kilograms", "grams"),
         ("l", "ml", 1000, "litres", "millilitres"), ("m", "cm", 100, "metres", "centimetres"),
         ("cm", "mm", 10, "centimetres", "millimetres")]
TEMPLATES = [
    "Convert {n} {a} to {b}.",
    "How many {B} are {n} {A}? Answer with the number and unit only.",
    "Express {n} {a} in {b}.",
    "{n} {a} = ? {b}",
    "Rewrite {n} {A} in {B}, nothing else.",
]

def items(rng, n, taken):
    out = []
    while len(out) < n:
        u = rng.choice(UNITS)
        q = rng.randint(2, 999)
        if (u[0], q) in taken:
            continue
        taken.add((u[0], q))
        prompt = rng.choice(TEMPLATES).format(n=q, a=u[0], b=u[1], A=u[3], B=u[4])
        out.append((prompt, f"{q * u[2]} {u[1]}"))
    return out

def main():
    rng = random.Random(20261129)
    here = os.path.dirname(os.path.abspath(__file__))
    taken = set()
    for name, n in (("units_train.jsonl", 400), ("units_eval.jsonl", 100)):
        with open(os.path.join(here, name), "w") as f:
            for prompt, answer in items(rng, n, taken):
                f.write(json.dumps({"instruction": prompt, "input": "", "output": answer}) + "\n")

if __name__ == "__main__":
    main()
