"""The bundled demo conversations are what hack/gen_demo_chat.py makes from the bundled corpus,
and the held-out questions are never trained on."""

from __future__ import annotations

import json

from capstan_trainer.prepare import conversation
from hack import gen_demo_chat


def test_bundled_conversations_are_regenerated_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(gen_demo_chat, "OUT", tmp_path)
    gen_demo_chat.main()
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (
            gen_demo_chat.ROOT / "manifests/examples/chat" / name
        ).read_bytes()


def test_held_out_questions_are_not_trained_on_and_parse_as_chat():
    folder = gen_demo_chat.ROOT / "manifests/examples/chat"
    split = {}
    for name in ("train.jsonl", "heldout.jsonl"):
        rows = [conversation.parse(json.loads(line)) for line in (folder / name).read_text().splitlines()]
        split[name] = {m[1]["content"] for m in rows}
    assert len(split["train.jsonl"]) > 500 and len(split["heldout.jsonl"]) > 100
    assert not split["train.jsonl"] & split["heldout.jsonl"]
