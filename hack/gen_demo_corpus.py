"""Write the bundled demo corpus (manifests/examples/corpus/): original generated English prose.

    python hack/gen_demo_corpus.py

Deterministic (fixed seed), no third-party text. Besides clean documents it plants what the
preparation should catch, so `kubectl describe dataset` shows non-zero counts: exact and near
duplicates, a little PII, low-quality pages, and a few documents under a non-allowed licence.
`gazetteer-000.jsonl` states the facts of the demo's invented towns (hack/demo_world.py), which
the demo conversations (hack/gen_demo_chat.py) ask about.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from hack import demo_world

NOUNS = [
    "river",
    "town",
    "harbour",
    "bridge",
    "market",
    "garden",
    "library",
    "school",
    "orchard",
    "valley",
    "hill",
    "road",
    "station",
    "mill",
    "forest",
    "lake",
    "village",
    "meadow",
    "tower",
    "clock",
    "bakery",
    "workshop",
    "ferry",
    "island",
    "lighthouse",
    "farm",
    "well",
    "square",
    "museum",
    "theatre",
    "canal",
    "path",
    "field",
    "barn",
    "chapel",
    "inn",
    "quarry",
    "shore",
    "reef",
    "dune",
    "glacier",
    "cave",
]
PEOPLE = [
    "baker",
    "teacher",
    "farmer",
    "sailor",
    "miller",
    "weaver",
    "doctor",
    "painter",
    "carpenter",
    "gardener",
    "librarian",
    "fisher",
    "potter",
    "musician",
    "engineer",
    "nurse",
    "mayor",
    "student",
    "traveller",
    "shepherd",
]
VERBS = [
    "visited",
    "repaired",
    "described",
    "painted",
    "measured",
    "planted",
    "crossed",
    "opened",
    "followed",
    "studied",
    "mapped",
    "guarded",
    "cleaned",
    "built",
    "remembered",
    "photographed",
    "explored",
    "restored",
    "admired",
    "counted",
]
ADJS = [
    "quiet",
    "old",
    "narrow",
    "busy",
    "bright",
    "green",
    "stone",
    "wooden",
    "windy",
    "sunny",
    "distant",
    "small",
    "broad",
    "ancient",
    "cold",
    "warm",
    "famous",
    "hidden",
    "steep",
    "gentle",
]
SEASONS = ["spring", "summer", "autumn", "winter"]
FRAMES = [
    "In {season} the {person} {verb} the {adj} {noun} near the {noun}.",
    "The {noun} by the {adj} {noun} was {verb} by a {person} and a {person}.",
    "Each morning a {person} walks from the {noun} to the {adj} {noun}.",
    "The {adj} {noun} has stood beside the {noun} since a {person} {verb} it.",
    "When the {person} {verb} the {noun}, the whole {noun} came to watch and to help.",
    "A {adj} path leads from the {noun} past the {noun} and down to the {adj} {noun}.",
    "Children play in the {noun} while a {person} talks about the {adj} {noun}.",
    "Nobody {verb} the {adj} {noun} until a {person} arrived in {season}.",
    "Beyond the {noun} lies a {adj} {noun} that only a {person} {verb}.",
    "Last {season} a {adj} storm {verb} the {noun} and the {adj} {noun}.",
    "From the {adj} {noun} one can see the {noun}, the {noun} and a {adj} {noun}.",
    "Her {person} friend {verb} a {adj} {noun} behind the {noun}.",
    "Few visitors know why the {noun} is {adj} while the {noun} stays {adj}.",
    "Each {person} keeps a {adj} map of the {noun} and its {adj} {noun}.",
    "The {person} wrote that the {noun} looked {adj} in {season} and even more {adj} in {season}.",
]


def sentence(rng: random.Random) -> str:
    s = rng.choice(FRAMES)
    for key, pool in (
        ("{season}", SEASONS),
        ("{person}", PEOPLE),
        ("{verb}", VERBS),
        ("{adj}", ADJS),
        ("{noun}", NOUNS),
    ):
        while key in s:
            s = s.replace(key, rng.choice(pool), 1)
    return s


def document(rng: random.Random) -> str:
    paras = []
    for _ in range(rng.randint(2, 4)):
        paras.append("\n".join(" ".join(sentence(rng) for _ in range(2)) for _ in range(2)))
    return "\n\n".join(paras)


GAZETTEER_DOCS = 300  # ~40 mentions of each town's facts
OUT = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "corpus"


def main() -> None:
    rng = random.Random(2026)
    out = OUT
    out.mkdir(parents=True, exist_ok=True)
    docs = [{"text": document(rng), "url": f"https://stories.example/{i}"} for i in range(300)]
    docs += [dict(docs[i]) for i in range(0, 20)]  # exact duplicates
    for i in range(20, 30):  # near duplicates: one sentence changed
        d = dict(docs[i])
        d["text"] = d["text"].replace(".", ". " + sentence(rng), 1)
        docs.append(d)
    for i in range(30, 36):  # a little PII
        docs[i]["text"] += (
            f"\nWrite to the keeper at keeper{i}@harbour.example or call +44 20 7946 {1000 + i}."
        )
    docs += [
        {"text": "Click here. Buy now."},
        {"text": "Menu\nHome\nAbout\nContact\nLogin"},
    ] * 5  # low quality
    for i in range(36, 42):  # a licence the example does not allow
        docs[i]["licence"] = "CC-BY-NC-4.0"
    rng.shuffle(docs)
    half = len(docs) // 2
    for name, part in (("stories-000.jsonl", docs[:half]), ("stories-001.jsonl", docs[half:])):
        (out / name).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in part))
    gazetteer = [
        {"text": text, "url": f"https://gazetteer.example/{i}"}
        for i, text in enumerate(demo_world.gazetteer(GAZETTEER_DOCS))
    ]
    (out / "gazetteer-000.jsonl").write_text("".join(json.dumps(d) + "\n" for d in gazetteer))


if __name__ == "__main__":
    main()
