"""The demo's invented world: towns, each known for one landmark and with a mayor of one trade.

The pretraining corpus states these facts in gazetteer documents (hack/gen_demo_corpus.py, in
several phrasings); the demo conversations ask about them (hack/gen_demo_chat.py): some question
phrasings are trained on, the others are held out, so the held-out set asks about facts the model
has read, in words it was never tuned on. Deterministic: fixed names, a fixed seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TOWNS = [
    "Quillon", "Varnham", "Eldmere", "Morby", "Taswick", "Brendale", "Calford", "Dunholm",
    "Fenstead", "Gorton", "Halbury", "Istrow", "Jorvale", "Kelmouth", "Lunport", "Narwick",
    "Osgrave", "Pelham", "Ravenby", "Selwood", "Ambrel", "Bexhold", "Corrin", "Drummel",
    "Ettery", "Gissing", "Hexley", "Ivelet", "Kestrel", "Lorrow",
]  # fmt: skip
LANDMARKS = [
    "lighthouse", "bakery", "mill", "orchard", "bridge", "library",
    "market", "harbour", "tower", "theatre", "museum", "canal",
]  # fmt: skip
TRADES = [
    "baker", "teacher", "farmer", "sailor", "miller", "weaver",
    "doctor", "painter", "potter", "musician", "nurse", "shepherd",
]  # fmt: skip


@dataclass(frozen=True)
class Town:
    name: str
    landmark: str
    """landmark: what the town is known for."""
    mayor: str
    """mayor: the mayor's trade."""


def towns(seed: int = 7) -> list[Town]:
    rng = random.Random(seed)
    return [Town(t, rng.choice(LANDMARKS), rng.choice(TRADES)) for t in TOWNS]


# How the gazetteer states each fact (more than one phrasing: a model that reads a fact in one
# wording only learns the wording, not the fact).
STATED = {
    "landmark": [
        "{name} is known for its {landmark}.",
        "The town of {name} is famous for its {landmark}.",
        "People travel to {name} to see its {landmark}.",
    ],
    "mayor": [
        "The mayor of {name} is a {mayor}.",
        "{name} has a {mayor} as its mayor.",
        "In {name} the mayor is a {mayor}.",
    ],
}
FILLER = [
    "Visitors often come in summer.",
    "The roads there are narrow and old.",
    "A river runs past the town.",
    "Many families have lived there for a long time.",
    "The nights are quiet and cold in winter.",
]

# Questions: the trained phrasings, then the held-out ones; one answer wording per fact.
ASKED = {
    "landmark": (
        ["What is {name} known for?", "What is {name} famous for?", "Which building is {name} known for?"],
        ["Tell me what {name} is known for.", "What is the town of {name} known for?"],
    ),
    "mayor": (
        ["Who is the mayor of {name}?", "What is the mayor of {name}?", "Tell me about the mayor of {name}."],
        ["Tell me who the mayor of {name} is.", "Who is the mayor of the town of {name}?"],
    ),
}
ANSWER = {"landmark": "{name} is known for its {landmark}.", "mayor": "The mayor of {name} is a {mayor}."}


def fields(town: Town) -> dict[str, str]:
    return {"name": town.name, "landmark": town.landmark, "mayor": town.mayor}


def gazetteer(docs: int, seed: int = 8) -> list[str]:
    """`docs` documents, each about four towns: both facts in a random phrasing, and a filler line."""
    rng = random.Random(seed)
    world = towns()
    out = []
    for _ in range(docs):
        sentences = []
        for town in rng.sample(world, 4):
            sentences += [rng.choice(STATED[fact]).format(**fields(town)) for fact in STATED]
            sentences.append(rng.choice(FILLER))
        out.append(" ".join(sentences))
    return out


def questions(held_out: bool) -> list[tuple[Town, str, str, str]]:
    """(town, question, answer sentence, the fact's word) for every town and fact: the trained
    phrasings, or the held-out ones."""
    out = []
    for town in towns():
        f = fields(town)
        for fact, (trained, kept) in ASKED.items():
            for q in kept if held_out else trained:
                out.append((town, q.format(**f), ANSWER[fact].format(**f), f[fact]))
    return out
