#!/usr/bin/env python3
"""Multiple-choice scoring by lm-evaluation-harness itself, for tests/test_llamacpp.c
(mc_scores_equal_lm_eval). Writes:
  tests/fixtures/mc_items.jsonl  54 items {"context", "choices", "gold"} made here from fixed
                                 lists (capitals, arithmetic, opposites, plurals, French words with
                                 accents: acc_norm divides by characters, not bytes; contexts with
                                 trailing spaces: lm-eval moves them into the continuation; one
                                 empty context: scored after the prefix token)
  tests/fixtures/mc_lmeval.txt   what lm_eval 0.4.13 reports on them through a local task
                                 (YAML: dataset_path json, output_type multiple_choice,
                                 doc_to_text {{context}}, doc_to_choice {{choices}}, doc_to_target
                                 {{gold}}, metrics acc and acc_norm), model "hf" on the SmolLM2
                                 directory that tools/ref/hf_smollm2.py writes (float32, batch 1):
      acc <acc> acc_norm <acc_norm> n <items>
      item <i> <gold> <n_choices> <loglikelihood of each choice>    (%.9g, from log_samples)
      end
Run by hand (not by CI): /work/venv/bin/python tools/ref/mc_fixtures.py [HF_DIR]
(lm_eval 0.4.13, transformers 5.25, datasets; ~2 minutes on 2 cores)."""
import json
import os
import random
import sys
import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")
HF_DIR = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/finetune/hf/SmolLM2-135M-Instruct")
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
ITEMS = os.path.join(ROOT, "tests", "fixtures", "mc_items.jsonl")
OUT = os.path.join(ROOT, "tests", "fixtures", "mc_lmeval.txt")

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Russia", "Moscow"),
            ("China", "Beijing"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Greece", "Athens"),
            ("Portugal", "Lisbon"), ("Poland", "Warsaw")]
OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("happy", "sad"), ("fast", "slow"),
             ("light", "dark"), ("early", "late"), ("open", "closed"), ("full", "empty"), ("old", "young")]
PLURALS = [("child", "children"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("goose", "geese"),
           ("man", "men")]
FRENCH = [("coffee", "café"), ("school", "école"), ("summer", "été"), ("brother", "frère"), ("party", "fête"),
          ("elephant", "éléphant")]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def items():
    rng = random.Random(1234)
    out = []

    def add(ctx, right, wrong):
        ch = [right] + wrong
        rng.shuffle(ch)
        out.append({"context": ctx, "choices": ch, "gold": ch.index(right)})

    caps = [c for _, c in CAPITALS]
    for country, cap in CAPITALS:
        add(f"The capital of {country} is", cap, rng.sample([c for c in caps if c != cap], 3))
    for i in range(12):
        a, b = rng.randint(0, 6), rng.randint(0, 6)
        wrong = rng.sample([n for n in NUMBERS if n != NUMBERS[a + b]], 3)
        add(f"Question: What is {NUMBERS[a]} plus {NUMBERS[b]}?\nAnswer:", NUMBERS[a + b], wrong)
    opp = [o for _, o in OPPOSITES]
    for w, o in OPPOSITES:
        add(f"The opposite of \"{w}\" is \"", o + "\"", [x + "\"" for x in rng.sample([x for x in opp if x != o], 2)])
    pl = [p for _, p in PLURALS]
    for w, p in PLURALS:
        add(f"One {w}, two ", p, rng.sample([x for x in pl if x != p], 3) + [w + "s"])       # trailing space
    fr = [f for _, f in FRENCH]
    for e, f in FRENCH:
        add(f"In French, the word for {e} is", f, rng.sample([x for x in fr if x != f], 3))
    add("Roses are red, violets are", "blue", ["green", "loud", "square"])
    add("", "The", ["Zebra", "Of", "Quantum"])                                              # no context
    add("Water freezes at zero degrees  ", "Celsius", ["Kelvin", "Fahrenheit"])              # two spaces
    add("The sun rises in the", "east", ["west", "north", "south"])
    return out


def main():
    its = items()
    with open(ITEMS, "w") as f:
        for it in its:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    print(len(its), "items ->", ITEMS)
    import lm_eval
    from lm_eval.tasks import TaskManager
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "ft_mc.yaml"), "w") as f:
            f.write(f"""task: ft_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {ITEMS}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
        res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={HF_DIR},dtype=float32",
                                      tasks=["ft_mc"], task_manager=TaskManager(include_path=tmp),
                                      batch_size=1, log_samples=True, device="cpu")
    r = res["results"]["ft_mc"]
    samples = sorted(res["samples"]["ft_mc"], key=lambda s: s["doc_id"])
    with open(OUT, "w") as f:
        f.write(f"# tools/ref/mc_fixtures.py: lm_eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else '?'} on {os.path.basename(HF_DIR)}\n")
        f.write("acc %.9g acc_norm %.9g n %d\n" % (r["acc,none"], r["acc_norm,none"], len(samples)))
        for s in samples:
            lls = [float(x[0][0]) for x in s["resps"]]
            f.write("item %d %d %d %s\n" % (s["doc_id"], int(s["doc"]["gold"]), len(lls), " ".join("%.9g" % x for x in lls)))
        f.write("end\n")
    print("acc", r["acc,none"], "acc_norm", r["acc_norm,none"], "->", OUT)


if __name__ == "__main__":
    main()
