"""Chat records: OpenAI-style `messages` or ShareGPT-style `conversations`, checked and mapped
onto one shape, [{"role": system|user|assistant, "content": str}], before any stage sees them.

A conversation travels through the stages as one document whose text is its messages' contents
joined by newlines (what the filters and dedup look at); normalisation and PII redaction apply
to each message's content.
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


def text_of(messages: list[dict]) -> str:
    """The text the filters and dedup judge: the contents, one per line."""
    return "\n".join(m["content"] for m in messages)


def normalised(messages: list[dict], cleaning) -> list[dict]:
    """Each message's content normalised as a document's text would be."""
    return [{**m, "content": normalize(m["content"], cleaning)} for m in messages]


def redacted(messages: list[dict], rules) -> tuple[list[dict], dict[str, int]]:
    """Each content PII-redacted; the replacements per type summed over the messages."""
    out, found = [], Counter()
    for m in messages:
        content, n = pii.redact(m["content"], rules)
        out.append({**m, "content": content})
        found.update(n)
    return out, dict(found)
