"""Write the bundled demo conversations (manifests/examples/chat/) about the demo's invented towns.

    python -m hack.gen_demo_chat

Deterministic. Every question is about a fact the pretraining corpus states (hack/demo_world.py,
written into the corpus by hack/gen_demo_corpus.py). `train.jsonl`: chat format (OpenAI
`messages`), the trained question phrasings with the answer, for the sft Dataset. `heldout.jsonl`:
the other phrasings, never trained on, as an Evaluation chat task (`match: regex`): a reply is
right when it names the town and then its fact as a word of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from hack import demo_world

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "manifests" / "examples" / "chat"


def expected(town: demo_world.Town, fact: str) -> str:
    """The regex a right reply matches: the town, then its fact as a word of its own."""
    return rf"\b{town.name}\b.*\b{fact}\b"


def main() -> None:
    train = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for _, q, a, _ in demo_world.questions(held_out=False)
    ]
    held_out = [
        {"messages": [{"role": "user", "content": q}], "answer": expected(town, fact)}
        for town, q, _, fact in demo_world.questions(held_out=True)
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", held_out)):
        (OUT / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(train)} conversations to train on, {len(held_out)} held-out questions, in {OUT}")


if __name__ == "__main__":
    main()
