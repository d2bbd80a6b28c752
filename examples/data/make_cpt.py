#!/usr/bin/env python3
"""Writes the continued-pretraining data of finetune.h's examples, deterministically:

  islands_train.jsonl / islands_eval.jsonl  a domain the model cannot know: gazetteer entries
      about the invented Kestrel Islands (names, capitals, harbours, exports, festivals), one
      {"text": ...} document per island; the held-out islands never occur in training.
  general_train.jsonl / general_eval.jsonl  general English prose written for the project
      (plain encyclopedic paragraphs on science, history, geography and daily life): the replay
      data against forgetting, and the held-out general text whose perplexity is the forgetting check.

python3 examples/data/make_cpt.py"""
import json, os, random

SYL = ["ka", "re", "lo", "mi", "tan", "vor", "el", "sa", "qui", "dor", "an", "bel", "tho", "ri", "us", "mar", "en", "fel", "oa", "zin"]
EXPORTS = ["salted eel", "blue kelp paper", "copper bells", "sea-glass beads", "smoked mackerel", "woven reed mats",
           "pearl buttons", "storm lanterns", "dried plums", "whale-bone combs", "tide clocks", "amber resin"]
TERRAIN = ["a volcanic cone ringed by black sand", "low chalk cliffs and wide meadows", "a forested ridge with three waterfalls",
           "salt marshes crossed by wooden causeways", "a flat coral shelf with a shallow lagoon", "terraced hills planted with vines"]
SEASONS = ["early spring", "midsummer", "the first week of autumn", "the longest night of winter"]

PROSE = [
    "Water boils at one hundred degrees Celsius at sea level. At higher altitudes the air pressure is lower, so water boils at a lower temperature, which is why cooking pasta in the mountains takes longer.",
    "The heart is a muscular organ that pumps blood through the body. In humans it has four chambers: two atria that receive blood and two ventricles that push it out to the lungs and to the rest of the body.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make sugar. Oxygen is released as a by-product, and nearly all life on Earth depends on it.",
    "The Roman Empire was at its largest in the second century. Its roads, aqueducts and laws influenced Europe for many centuries after the western half of the empire fell.",
    "A library lends books, films and music to the people of a town. Many libraries also offer quiet rooms for study, free internet access and reading groups for children.",
    "The Pacific is the largest and deepest ocean on the planet. It covers about a third of the surface of the Earth and contains thousands of islands.",
    "Bread is made by mixing flour, water, salt and yeast. The yeast feeds on sugars in the dough and releases gas, which makes the bread rise before it is baked in a hot oven.",
    "The printing press, developed in Europe in the fifteenth century, made books much cheaper to produce. Ideas spread faster, and more people learned to read.",
    "Bicycles are an efficient way to travel short distances. They need no fuel, take little space to park, and regular cycling is good for the heart and the legs.",
    "The Moon orbits the Earth about once every twenty-seven days. Its gravity pulls on the oceans and causes the tides that rise and fall twice a day along most coasts.",
    "Vaccines train the immune system to recognise a germ without causing the disease. When the real germ arrives later, the body can fight it off quickly.",
    "A good night of sleep helps the brain store memories and clears waste from its tissue. Most adults need between seven and nine hours of sleep each night.",
    "The Nile is one of the longest rivers in the world. For thousands of years its yearly floods left rich soil along its banks, where farmers grew wheat and barley.",
    "Electric current is the flow of charge through a wire. The voltage pushes the charge, and the resistance of the wire limits how much current can flow.",
    "Honey bees live in colonies with one queen, thousands of workers and a few drones. The workers collect nectar and pollen, build wax combs and care for the young.",
    "Mountains form when plates of the Earth's crust push against each other over millions of years. The Himalayas are still rising a few millimetres every year.",
    "A budget lists the money a household expects to earn and to spend. Writing one down makes it easier to save for large costs and to avoid debt.",
    "The violin has four strings tuned in fifths and is played with a bow. It is the highest member of the string family and often carries the melody in an orchestra.",
    "Rain forms when water vapour in clouds condenses into droplets that grow heavy enough to fall. In cold air the droplets may freeze and fall as snow instead.",
    "Chess is played on a board of sixty-four squares. Each player starts with sixteen pieces, and the goal is to trap the opposing king so that it cannot escape.",
    "Glass is made by melting sand with soda and lime at a very high temperature. While it is hot it can be blown, pressed or rolled into almost any shape.",
    "The first successful powered aeroplane flight took place in 1903. It lasted only twelve seconds, but within a few decades aircraft were crossing oceans.",
    "Trees take in carbon dioxide as they grow and store the carbon in their wood. Forests therefore play an important part in the climate of the planet.",
    "A map uses symbols, colours and a scale to show a place on a flat surface. Contour lines join points of equal height and reveal the shape of hills and valleys.",
    "Children learn language by listening and imitating long before they can read. By the age of five most children use thousands of words in full sentences.",
    "Salt has been traded for thousands of years because it preserves food. Some ancient roads were built mainly to carry salt from the coast to inland towns.",
    "Earthquakes happen when stress in the rocks of the crust is suddenly released. Buildings in active regions are designed to sway rather than crack.",
    "The human eye focuses light on the retina, a thin layer of cells at the back of the eye. Rods detect dim light and cones detect colour.",
    "Markets have existed wherever people gather to trade. Farmers bring fruit and vegetables, and buyers compare prices before choosing what to take home.",
    "A lighthouse warns ships of rocks and shallow water. Each one flashes its light in its own pattern, so sailors at night can tell which lighthouse they see.",
    "Recycling paper saves trees and water. Old paper is soaked, cleaned of ink and pressed into new sheets, which can be recycled several more times.",
    "The seasons change because the axis of the Earth is tilted. When the northern half leans toward the Sun it has summer, while the southern half has winter.",
    "Clocks once relied on swinging pendulums to keep time. Modern clocks count the vibrations of a small quartz crystal, and the most precise ones count atoms.",
    "Olive trees grow well in hot, dry summers and mild winters. Their fruit is pressed to make oil, which has been used for cooking and lamps since ancient times.",
    "A volcano erupts when molten rock, called magma, rises through cracks in the crust. Ash from large eruptions can travel around the world and cool the climate for a year.",
    "Good teachers explain ideas in several ways and ask questions that make students think. They also give feedback that shows how to improve.",
    "The camel can travel for days without drinking because its body loses very little water. Its wide feet keep it from sinking into soft sand.",
    "Cotton is a soft fibre that grows around the seeds of the cotton plant. It is spun into thread and woven into cloth for shirts, towels and sheets.",
    "Most of the fresh water on Earth is frozen in ice sheets and glaciers. Only a small share is found in lakes and rivers, where people can easily use it.",
    "Soap removes dirt because its molecules have one end that attracts water and another that attracts oil. Together they lift grease from skin and cloth.",
]

def name(rng, n=None):
    n = n or rng.choice([2, 2, 3])
    return "".join(rng.choice(SYL) for _ in range(n)).capitalize()

def island(rng):
    isl, cap, har, fest = name(rng), name(rng, 2), name(rng, 3), name(rng, 2)
    ex = rng.sample(EXPORTS, 2)
    pop = rng.randrange(4, 90) * 100
    return (f"{isl} is an island of the Kestrel archipelago. Its capital is {cap}, a town of about {pop} people, "
            f"and its main harbour is {har}. The island is {rng.choice(TERRAIN)}. {isl} is known for {ex[0]} and {ex[1]}, "
            f"which its boats carry to the other Kestrel Islands. Every year in {rng.choice(SEASONS)} the people of {cap} "
            f"hold the {fest} festival, when the harbour of {har} is lit with lanterns and the elders read the old tide laws aloud.")

def main():
    rng = random.Random(11)
    here = os.path.dirname(os.path.abspath(__file__))
    docs = [island(rng) for _ in range(360)]
    def write(nm, texts):
        with open(os.path.join(here, nm), "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
    write("islands_train.jsonl", docs[:300]); write("islands_eval.jsonl", docs[300:])
    write("general_train.jsonl", PROSE[:30]); write("general_eval.jsonl", PROSE[30:])

if __name__ == "__main__":
    main()
