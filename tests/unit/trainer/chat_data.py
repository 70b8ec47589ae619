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


def prepare_chat(tmp: Path, n: int = 400, **spec) -> str:
    """Writes and prepares the conversations; returns the output folder's URI."""
    (tmp / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in conversations(n)))
    body = {
        "sources": [{"uri": f"file://{tmp}/chat.jsonl", "licence": "MIT", "format": "chat"}],
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
