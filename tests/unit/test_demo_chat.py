"""The bundled demo conversations and corpus are what hack/gen_demo_chat.py and
hack/gen_demo_corpus.py make; the held-out questions are never trained on, and every fact they
ask about is stated in the pretraining corpus."""

from __future__ import annotations

import json
import re

from capstan_trainer.prepare import conversation
from hack import demo_world, gen_demo_chat, gen_demo_corpus

CHAT = gen_demo_chat.ROOT / "manifests/examples/chat"


def test_bundled_conversations_and_corpus_are_regenerated_byte_for_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(gen_demo_chat, "OUT", tmp_path / "chat")
    monkeypatch.setattr(gen_demo_corpus, "OUT", tmp_path / "corpus")
    gen_demo_chat.main()
    gen_demo_corpus.main()
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / "chat" / name).read_bytes() == (CHAT / name).read_bytes(), name
    for made in sorted((tmp_path / "corpus").glob("*.jsonl")):
        assert made.read_bytes() == (gen_demo_corpus.OUT / made.name).read_bytes(), made.name


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (CHAT / name).read_text().splitlines()]


def test_held_out_questions_are_not_trained_on_and_their_facts_are_in_the_corpus():
    train = [conversation.parse(r) for r in rows("train.jsonl")]
    held_out = rows("heldout.jsonl")
    assert len(train) == 180 and len(held_out) == 120  # 30 towns x 2 facts x (3 | 2) phrasings
    trained = {m[0]["content"] for m in train}
    assert all(m[0]["role"] == "user" and m[1]["role"] == "assistant" for m in train)
    assert not trained & {r["messages"][0]["content"] for r in held_out}
    gazetteer = (gen_demo_corpus.OUT / "gazetteer-000.jsonl").read_text()
    by_name = {t.name: t for t in demo_world.towns()}
    for r in held_out:
        question = r["messages"][0]["content"]
        town = next(by_name[name] for name in by_name if name in question)
        kind = "landmark" if "known" in question else "mayor"
        fact = demo_world.fields(town)[kind]
        # The answer pattern takes the right reply and refuses a near miss.
        assert re.search(r["answer"], f"In {town.name} it is the {fact}."), r
        assert not re.search(r["answer"], f"In {town.name} it is the {fact}s."), r
        assert any(s.format(**demo_world.fields(town)) in gazetteer for s in demo_world.STATED[kind]), r
