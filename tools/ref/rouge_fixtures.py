#!/usr/bin/env python3
"""ROUGE-L fixtures for tests/test_synth.c: rougeL fmeasure as rouge_score computes it with its
default tokenizer (pip install rouge-score; the values in the test came from rouge-score 0.1.2).
Prints C initialisers: {"target", "prediction", fmeasure}."""
import json
from rouge_score import rouge_scorer

PAIRS = [
    ("Write a short poem about the sea.", "Write a short poem about the ocean."),
    ("Give three tips for staying healthy.", "What are three tips for staying healthy?"),
    ("Translate 'good morning' into French.", "Sort these numbers: 5, 2, 9."),
    ("The cat sat on the mat", "the mat sat on the cat"),
    ("Explain photosynthesis", "explain PHOTOSYNTHESIS!!!"),
    ("", "anything at all"),
    ("!!! ...", "no tokens on the left"),
    ("Café au lait, s'il vous plaît", "cafe au lait sil vous plait"),
    ("a b c d e f g", "a x c y e z g"),
    ("Rewrite the sentence in passive voice: The dog chased the ball.",
     "Rewrite the following sentence in the passive voice and keep it under ten words: The dog chased the ball."),
    ("İstanbul is a city", "i stanbul is a city"),
    ("3.14 is pi; 2,718 is e", "pi is 3 14 and e is 2 718"),
]

def main():
    sc = rouge_scorer.RougeScorer(["rougeL"])
    for t, p in PAIRS:
        f = sc.score(t, p)["rougeL"].fmeasure
        print("    {%s, %s, %.17g}," % (json.dumps(t, ensure_ascii=False), json.dumps(p, ensure_ascii=False), f))

if __name__ == "__main__":
    main()
