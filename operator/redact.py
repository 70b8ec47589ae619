"""Credentials scrubbed from text the operator copies into status and Events (a failed pod's log
tail): anyone who can read a resource's status would otherwise read the keys a workload printed."""

from __future__ import annotations

import re

MASK = "***"
_PATTERNS = (
    # key=value / key: value for names that hold secrets (AWS_SECRET_ACCESS_KEY=..., "password": "...")
    re.compile(
        r"""(?i)((?:secret|password|passwd|token|api[_-]?key|access[_-]?key(?:[_-]?id)?|credential)s?["']?\s*[:=]\s*["']?)[^\s"',;&]+"""
    ),
    re.compile(r"(?i)(authorization:\s*(?:bearer|basic)\s+)\S+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(://[^/\s:@]+:)[^@\s/]+(@)"),  # user:password@host in a URL
    re.compile(r"()\b(?:AKIA|ASIA)[0-9A-Z]{16}\b()"),  # an AWS access key id on its own
    # An STS session token on its own (base64 of a protobuf that starts the same way every time).
    re.compile(r"()\b(?:IQoJb3JpZ2lu|FwoGZXIvYXdz)[A-Za-z0-9/+=]{16,}()"),
    re.compile(r"(?i)((?:x-amz-signature|signature|sig)=)[^\s&\"']+"),  # a presigned URL's signature
    # Tokens with a well-known prefix: Google OAuth, Hugging Face, GitHub.
    re.compile(r"()\b(?:ya29\.[A-Za-z0-9._-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{30,})()"),
)


def _mask(m: re.Match) -> str:
    """The match with its secret part (between group 1 and an optional group 2) masked."""
    return m.group(1) + MASK + (m.group(2) if m.re.groups > 1 else "")


def scrub(text: str) -> str:
    for p in _PATTERNS:
        text = p.sub(_mask, text)
    return text
