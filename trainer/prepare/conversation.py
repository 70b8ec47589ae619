"""Chat records: OpenAI-style `messages` or ShareGPT-style `conversations`, checked and mapped
onto one shape, [{"role": system|user|assistant, "content": str}], before any stage sees them.

A conversation travels through the stages as one document whose text is its messages' contents
joined by newlines (what the filters and dedup look at); normalisation and PII redaction apply
to each message's content. A preference record (prompt, chosen, rejected) is one document too,
so a pair is never split between train and validation.
"""

from __future__ import annotations

from collections import Counter

from capstan_trainer.prepare import pii
from capstan_trainer.prepare.normalize import normalize

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "gpt": "assistant",
    "user": "user",
    "assistant": "assistant",
}


class BadRecord(ValueError):
    """A chat record that cannot be used; the message names the field."""


def parse(obj: object) -> list[dict]:
    """The record's messages as [{"role", "content"}]; BadRecord naming the field otherwise."""
    if not isinstance(obj, dict):
        raise BadRecord("not a JSON object")
    if "messages" in obj:
        return _turns(obj["messages"], "messages", "role", "content", {r: r for r in ROLES})
    if "conversations" in obj:
        return _turns(obj["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)
    raise BadRecord("no `messages` (OpenAI style) or `conversations` (ShareGPT style) field")


def _turns(items: object, field: str, role_key: str, text_key: str, roles: dict[str, str]) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise BadRecord(f"{field}: expected a non-empty list")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise BadRecord(f"{field}[{i}]: expected an object")
        role, text = m.get(role_key), m.get(text_key)
        if role not in roles:
            raise BadRecord(f"{field}[{i}].{role_key}: {role!r} is not one of {sorted(roles)}")
        if not isinstance(text, str):
            raise BadRecord(f"{field}[{i}].{text_key}: expected a string")
        out.append({"role": roles[role], "content": text})
    if not any(m["role"] == "assistant" for m in out):
        raise BadRecord(f"{field}: no assistant turn, so nothing to learn from")
    return out


def parse_preference(obj: object) -> dict:
    """A preference record as {"prompt", "chosen", "rejected"}, each a list of messages: a prompt
    string is one user turn, an answer string one assistant turn."""
    if not isinstance(obj, dict):
        raise BadRecord("not a JSON object")
    out = {}
    for key in ("prompt", "chosen", "rejected"):
        value = obj.get(key)
        if isinstance(value, str):
            out[key] = [{"role": "user" if key == "prompt" else "assistant", "content": value}]
        elif isinstance(value, list):
            out[key] = _turns_or_empty(value, key)
        else:
            raise BadRecord(f"{key}: expected a string or a list of messages")
    for key in ("chosen", "rejected"):
        if not any(m["role"] == "assistant" for m in out[key]):
            raise BadRecord(f"{key}: no assistant turn")
    return out


def _turns_or_empty(items: list, field: str) -> list[dict]:
    try:
        return _turns(items, field, "role", "content", {r: r for r in ROLES})
    except BadRecord as exc:
        if "no assistant turn" in str(exc):  # a prompt need not hold one
            return [{"role": m["role"], "content": m["content"]} for m in items]
        raise


def _messages(record: list[dict] | dict) -> list[dict]:
    """Every message of a conversation or of a preference pair (prompt, chosen, rejected)."""
    if isinstance(record, dict):
        return [*record["prompt"], *record["chosen"], *record["rejected"]]
    return record


def _each(record: list[dict] | dict, f) -> list[dict] | dict:
    if isinstance(record, dict):
        return {k: [f(m) for m in v] for k, v in record.items()}
    return [f(m) for m in record]


def text_of(record: list[dict] | dict) -> str:
    """The text the filters and dedup judge: the contents, one per line."""
    return "\n".join(m["content"] for m in _messages(record))


def normalised(record: list[dict] | dict, cleaning) -> list[dict] | dict:
    """Each message's content normalised as a document's text would be."""
    return _each(record, lambda m: {**m, "content": normalize(m["content"], cleaning)})


def redacted(record: list[dict] | dict, rules) -> tuple[list[dict] | dict, dict[str, int]]:
    """Each content PII-redacted; the replacements per type summed over the messages."""
    found: Counter = Counter()

    def one(m: dict) -> dict:
        content, n = pii.redact(m["content"], rules)
        found.update(n)
        return {**m, "content": content}

    return _each(record, one), dict(found)
