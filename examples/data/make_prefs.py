#!/usr/bin/env python3
"""Writes dates_pref_train.jsonl and dates_pref_eval.jsonl: preference pairs written for
finetune.h. Prompt: a request to rewrite an ISO date as DD.MM.YYYY; chosen: the bare, correct
answer; rejected: the kind of answer SmolLM2-135M-Instruct gives on its own (the date repeated
in ISO form inside a sentence). Held-out dates never occur in training. Also writes
dates_kto_train.jsonl: the same training pairs as unpaired feedback for KTO (each pair gives a
desirable and an undesirable completion), and dates_prompts.jsonl / dates_prompts_eval.jsonl:
the same prompts as RL prompts ({"prompt", "answer"}) for PPO against the reward model.
Deterministic: python3 examples/data/make_prefs.py"""
import json, os, random

TEMPLATES = ["Rewrite the date {d} in the format DD.MM.YYYY.", "Write {d} as DD.MM.YYYY.",
             "Convert {d} to day.month.year notation.", "Format this date as DD.MM.YYYY: {d}"]
REJECTED = ["{d} is a date in DD.MM.YYYY format.", "The date {d} in DD.MM.YYYY format is {d}.",
            "{d} to day.month.year is {d}.", "Sure! {d}"]

def main():
    rng = random.Random(7)
    here = os.path.dirname(os.path.abspath(__file__))
    seen = set()
    for name, n in (("dates_pref_train.jsonl", 200), ("dates_pref_eval.jsonl", 50)):
        with open(os.path.join(here, name), "w") as f:
            k = 0
            while k < n:
                y, m, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
                iso = f"{y:04d}-{m:02d}-{d:02d}"
                if iso in seen:
                    continue
                seen.add(iso); k += 1
                f.write(json.dumps({"prompt": rng.choice(TEMPLATES).format(d=iso),
                                    "chosen": f"{d:02d}.{m:02d}.{y:04d}",
                                    "rejected": rng.choice(REJECTED).format(d=iso)}) + "\n")
    with open(os.path.join(here, "dates_pref_train.jsonl")) as f, open(os.path.join(here, "dates_kto_train.jsonl"), "w") as g:
        for line in f:
            p = json.loads(line)
            g.write(json.dumps({"prompt": p["prompt"], "completion": p["chosen"], "label": True}) + "\n")
            g.write(json.dumps({"prompt": p["prompt"], "completion": p["rejected"], "label": False}) + "\n")
    for src, dst in (("dates_pref_train.jsonl", "dates_prompts.jsonl"), ("dates_pref_eval.jsonl", "dates_prompts_eval.jsonl")):
        with open(os.path.join(here, src)) as f, open(os.path.join(here, dst), "w") as g:
            for line in f:
                p = json.loads(line)
                g.write(json.dumps({"prompt": p["prompt"], "answer": p["chosen"]}) + "\n")

if __name__ == "__main__":
    main()
