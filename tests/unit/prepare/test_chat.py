"""Chat datasets: records in both styles, rendered with the server's template, and the loss mask
that lies on exactly the assistant turns; the cleaning stages on conversations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from capstan_api.tokenizer import DEFAULT_CHAT_TEMPLATE
from capstan_trainer import chat_template, shards
from capstan_trainer.prepare import conversation
from tests.unit.prepare.test_inputs import local, resource, run

CONVERSATIONS = [
    {
        "messages": [
            {"role": "system", "content": "You answer questions about the harbour town."},
            {"role": "user", "content": "Who keeps the lighthouse?"},
            {"role": "assistant", "content": "Old Maren keeps the lighthouse on the reef."},
            {"role": "user", "content": "Since when?"},
            {"role": "assistant", "content": "Since the winter of the great storm."},
        ]
    },
    {
        "conversations": [
            {"from": "human", "value": "Where is the quarry?"},
            {"from": "gpt", "value": "The quarry lies north of the dunes."},
        ]
    },
]


def read_split(out: Path, split: str = "train") -> tuple[shards.Manifest, Tokenizer, np.ndarray, np.ndarray]:
    m = shards.read_manifest(local(out))
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = np.concatenate(
        [shards.decode_shard((out / s.path).read_bytes(), m.dtype) for s in m.splits[split].shards]
    )
    mask = np.concatenate(
        [np.frombuffer((out / s.mask).read_bytes(), np.uint8) for s in m.splits[split].shards]
    )
    return m, tok, ids, mask


def documents(ids: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split at the DOC_START bits."""
    starts = np.flatnonzero(mask & shards.DOC_START).tolist() + [len(ids)]
    return [(ids[a:b], mask[a:b]) for a, b in zip(starts, starts[1:], strict=False)]


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of LOSS tokens."""
    on = np.concatenate([[0], (mask & shards.LOSS) > 0, [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(on))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def test_mask_is_on_exactly_the_assistant_turns_and_their_end_of_turn(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS))
    res = resource(
        [{"uri": local(tmp_path / "c.jsonl"), "licence": "MIT", "format": "chat"}], tmp_path / "out"
    )
    code, out = run(tmp_path, res, capsys)
    assert code == 0, out
    m, tok, ids, mask = read_split(tmp_path / "out")
    assert m.loss_mask == "assistant"
    assert m.splits["train"].loss_tokens == int(np.count_nonzero(mask & shards.LOSS)) > 0
    eos = "<|end_of_text|>"
    docs = documents(ids, mask)
    assert len(docs) == 2
    expected = [
        [c["content"] for c in CONVERSATIONS[0]["messages"] if c["role"] == "assistant"],
        [CONVERSATIONS[1]["conversations"][1]["value"]],
    ]
    for (d_ids, d_mask), want in zip(docs, expected, strict=True):
        # The document is the server's rendering of the conversation, then end-of-text.
        assert d_ids[-1] == m.eos_id and not d_mask[-1] & shards.LOSS
        spans = [tok.decode(d_ids[a:b].tolist(), skip_special_tokens=False) for a, b in runs_of(d_mask)]
        assert spans == [w + eos for w in want]
    first = tok.decode(docs[0][0][:-1].tolist(), skip_special_tokens=False)
    msgs = CONVERSATIONS[0]["messages"]
    assert first == chat_template.render(
        DEFAULT_CHAT_TEMPLATE, msgs, add_generation_prompt=False, bos_token="<|begin_of_text|>", eos_token=eos
    )


def test_train_on_all_puts_loss_on_every_token_but_the_separator(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS))
    res = resource(
        [{"uri": local(tmp_path / "c.jsonl"), "licence": "MIT", "format": "chat"}],
        tmp_path / "out",
        trainOn="all",
    )
    assert run(tmp_path, res, capsys)[0] == 0
    m, _, ids, mask = read_split(tmp_path / "out")
    assert m.loss_mask == "all"
    for d_ids, d_mask in documents(ids, mask):
        assert runs_of(d_mask) == [(0, len(d_ids) - 1)]


def test_sharegpt_maps_onto_messages_and_bad_records_name_the_field():
    sg = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "Q"},
            {"from": "gpt", "value": "A"},
        ]
    }
    assert conversation.parse(sg) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A"},
    ]
    bad = {
        "messages": [{"role": "bot", "content": "x"}],
    }
    with pytest.raises(conversation.BadRecord, match=r"messages\[0\]\.role: 'bot'"):
        conversation.parse(bad)
    with pytest.raises(conversation.BadRecord, match=r"conversations\[1\]\.value: expected a string"):
        conversation.parse({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": 3}]})
    with pytest.raises(conversation.BadRecord, match="no assistant turn"):
        conversation.parse({"messages": [{"role": "user", "content": "Q"}]})
    with pytest.raises(conversation.BadRecord, match="no `messages`"):
        conversation.parse({"text": "plain"})


def test_too_many_bad_records_fail_naming_file_and_line(tmp_path, capsys):
    lines = [json.dumps(CONVERSATIONS[0]), json.dumps({"messages": [{"role": "robot", "content": "x"}]})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    res = resource(
        [{"uri": local(tmp_path / "c.jsonl"), "licence": "MIT", "format": "chat"}], tmp_path / "out"
    )
    code, err = run(tmp_path, res, capsys)
    assert code == 3
    assert "c.jsonl (1, the first at line 2: messages[0].role: 'robot' is not one of" in err


def test_stages_apply_to_the_message_contents(tmp_path, capsys):
    def chat(user: str, answer: str, **extra) -> dict:
        return {
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            **extra,
        }

    records = [
        chat("Mail me at maren@example.org please.", "I will write to you at once."),
        chat("Mail me at maren@example.org please.", "I will write to you at once."),  # exact duplicate
        chat("Ｗｈｏ keeps the light?", "Maren keeps it."),  # NFKC folds the full-width letters
        chat("Licensed elsewhere.", "Not allowed in.", licence="Proprietary"),
    ]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    res = resource(
        [{"uri": local(tmp_path / "c.jsonl"), "licence": "MIT", "format": "chat"}], tmp_path / "out"
    )
    res["spec"]["dedup"] = {"exact": True, "near": {"enabled": False}}
    res["spec"]["cleaning"] = {"unicode": "NFKC"}
    code, out = run(tmp_path, res, capsys)
    assert code == 0, out
    summary = json.loads(out)
    m, tok, ids, mask = read_split(tmp_path / "out")
    texts = [tok.decode(d.tolist(), skip_special_tokens=False) for d, _ in documents(ids, mask)]
    assert len(texts) == 2, texts
    assert "<|user|>\nMail me at <EMAIL> please.<|end_of_text|>" in texts[0]
    assert "maren@example.org" not in "".join(texts)
    assert "<|user|>\nWho keeps the light?" in texts[1]
    assert summary["pii"] == {"EMAIL": 1} and summary["exactDuplicates"] == 1, summary
    assert "Not allowed in." not in "".join(texts)


def test_preference_records_take_strings_or_messages_and_name_bad_fields():
    pair = conversation.parse_preference(
        {"prompt": "Q?", "chosen": "yes", "rejected": [{"role": "assistant", "content": "no"}]}
    )
    assert pair == {
        "prompt": [{"role": "user", "content": "Q?"}],
        "chosen": [{"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    with pytest.raises(conversation.BadRecord, match="rejected: expected a string or a list of messages"):
        conversation.parse_preference({"prompt": "Q?", "chosen": "yes"})
    with pytest.raises(conversation.BadRecord, match="chosen: no assistant turn"):
        conversation.parse_preference(
            {"prompt": "Q?", "chosen": [{"role": "user", "content": "x"}], "rejected": "no"}
        )
    with pytest.raises(conversation.BadRecord, match=r"prompt\[0\].role: 'bot'"):
        conversation.parse_preference(
            {"prompt": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b"}
        )
