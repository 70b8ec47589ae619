"""A small chat Dataset prepared by the real pipeline (filters and dedup off), for the sft tests."""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import yaml

from capstan_trainer.prepare.prepare import main as prepare

THINGS = ["lighthouse", "quarry", "harbour", "bakery", "library", "mill", "bridge", "tower"]
COLOURS = ["red", "blue", "green", "white", "grey", "yellow", "black", "golden"]


def conversations(n: int, seed: int = 0) -> list[dict]:
    """Questions whose answer follows from the question: the colour of each thing is fixed."""
    rng = random.Random(seed)
    colour = dict(zip(THINGS, COLOURS, strict=True))
    out = []
    for i in range(n):
        t = rng.choice(THINGS)
        msgs = [
            {"role": "user", "content": f"Question {i}: what colour is the {t}?"},
            {"role": "assistant", "content": f"The {t} is {colour[t]}."},
        ]
        out.append({"messages": msgs} if i % 2 else {"conversations": _sharegpt(msgs)})
    return out


def _sharegpt(msgs: list[dict]) -> list[dict]:
    return [{"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in msgs]


def preferences(n: int, seed: int = 0, kinds: int = 4) -> list[dict]:
    """Pairs whose chosen answer names the thing's colour and whose rejected one another colour
    (`kinds` things and colours); prompts as strings and as messages, answers as strings and as
    messages. Short, so a tiny model learns them in a few dozen steps."""
    rng = random.Random(seed)
    things, colours = THINGS[:kinds], COLOURS[:kinds]
    colour = dict(zip(things, colours, strict=True))
    out = []
    for i in range(n):
        t = rng.choice(things)
        wrong = rng.choice([c for c in colours if c != colour[t]])
        prompt = f"{i}: the {t}?"
        chosen, rejected = colour[t], wrong
        if i % 2:
            out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        else:
            out.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    return out


def prepare_chat(tmp: Path, n: int = 400, fmt: str = "chat", **spec) -> str:
    """Writes and prepares the conversations (or preference pairs); returns the output folder's URI."""
    records = conversations(n) if fmt == "chat" else preferences(n)
    (tmp / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in records))
    body = {
        "sources": [{"uri": f"file://{tmp}/chat.jsonl", "licence": "MIT", "format": fmt}],
        "filters": {
            k: {"enabled": False}
            for k in ("length", "language", "gopherRepetition", "gopherQuality", "c4", "fineweb")
        },
        "dedup": {"exact": False, "near": {"enabled": False}},
        "tokenizer": {"vocabSize": 320},
        "output": {"uri": f"file://{tmp}/out", "validationFraction": 0.1, "shardTokens": 4096},
        **spec,
    }
    res = {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "chat"},
        "spec": body,
    }
    (tmp / "ds.yaml").write_text(yaml.safe_dump(res))
    with contextlib.redirect_stdout(io.StringIO()):
        assert prepare(["-f", str(tmp / "ds.yaml")]) == 0
    return f"file://{tmp}/out"
