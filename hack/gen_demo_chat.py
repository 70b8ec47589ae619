"""Write the bundled demo conversations (manifests/examples/chat/) about the demo corpus's world.

    python hack/gen_demo_chat.py

Deterministic: questions are read off the sentences of manifests/examples/corpus/ (made by
hack/gen_demo_corpus.py), so every answer is a fact the pretraining corpus states. Only facts
stated once (one answer per question in the whole corpus) become questions. A seeded shuffle
splits them: `train.jsonl` (chat format, OpenAI `messages`, for an sft Dataset) and
`heldout.jsonl` (the same shape; questions never trained on, to ask the tuned model).
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "manifests" / "examples" / "corpus"
OUT = ROOT / "manifests" / "examples" / "chat"
SYSTEM = "You answer questions about the towns and shores of the stories."
HELD_OUT = 0.2

# (sentence pattern, question, answer): named groups fill both.
PATTERNS = [
    (
        r"Each morning a (?P<person>\w+) walks from the (?P<a>\w+) to the (?P<adj>\w+) (?P<b>\w+)\.",
        "Who walks from the {a} to the {adj} {b} each morning?",
        "A {person} walks from the {a} to the {adj} {b} each morning.",
    ),
    (
        r"Beyond the (?P<a>\w+) lies a (?P<adj>\w+) (?P<b>\w+) that only a (?P<person>\w+) (?P<verb>\w+)\.",
        "What lies beyond the {a} that only a {person} {verb}?",
        "Beyond the {a} lies a {adj} {b}.",
    ),
    (
        r"The (?P<adj>\w+) (?P<a>\w+) has stood beside the (?P<b>\w+) since a (?P<person>\w+) (?P<verb>\w+) it\.",
        "Since when has the {adj} {a} stood beside the {b}?",
        "Since a {person} {verb} it.",
    ),
    (
        r"Nobody (?P<verb>\w+) the (?P<adj>\w+) (?P<a>\w+) until a (?P<person>\w+) arrived in (?P<season>\w+)\.",
        "Who first {verb} the {adj} {a}?",
        "A {person}, who arrived in {season}.",
    ),
]


def facts(texts: list[str]) -> list[tuple[str, str]]:
    """(question, answer) for every question whose answer is the same wherever the corpus asks it."""
    answers: dict[str, set[str]] = defaultdict(set)
    for text in texts:
        for pattern, question, answer in PATTERNS:
            for m in re.finditer(pattern, text):
                answers[question.format(**m.groupdict())].add(answer.format(**m.groupdict()))
    return sorted((q, next(iter(a))) for q, a in answers.items() if len(a) == 1)


def _articles(text: str) -> str:
    """The corpus writes "a engineer"; the answers read better with "an"."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", lambda m: m.group(1) + "n ", text)


def conversation(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": _articles(question)},
            {"role": "assistant", "content": _articles(answer)},
        ]
    }


def main() -> None:
    texts = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            if "licence" not in doc:  # the documents the demo Dataset keeps
                texts.append(doc["text"])
    pairs = facts(texts)
    random.Random(2026).shuffle(pairs)
    cut = int(len(pairs) * (1 - HELD_OUT))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", pairs[:cut]), ("heldout.jsonl", pairs[cut:])):
        (OUT / name).write_text("".join(json.dumps(conversation(q, a)) + "\n" for q, a in part))
    print(f"{len(pairs)} facts: {cut} to train on, {len(pairs) - cut} held out, in {OUT}")


if __name__ == "__main__":
    main()
