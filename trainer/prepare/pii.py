"""Stage 7: PII redaction with typed placeholders (<EMAIL>, <IP_ADDRESS>, <PHONE>, <CREDIT_CARD>, extras).

Order matters: card numbers before phone numbers (a 16-digit card also looks like a long phone
number), addresses before phones (dotted quads look like dotted phone numbers).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from capstan_api.cleaning import Pii

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# 13-19 digits, optionally grouped by single spaces or dashes.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# International (+CC ...) or grouped national numbers: 7-15 digits with separators or parentheses.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])"
    r"|(?<![\w+])\+\d{7,15}(?!\w)"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _public_ip(s: str) -> bool:
    try:
        return ipaddress.ip_address(s).is_global
    except ValueError:
        return False


def _card(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


# Without a + prefix or parentheses only unambiguous national shapes count: North American
# 3-3-4 and trunk-prefixed (0...) numbers, so dates (2026-11-28) and years (1999 2000) do not.
_NATIONAL = re.compile(r"\d{3}[ .-]\d{3}[ .-]\d{4}|0\d{1,4}(?:[ .-]\d{2,4}){2,3}")


def _phone(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    if not 7 <= digits <= 15:
        return False
    return s.startswith("+") or "(" in s or _NATIONAL.fullmatch(s) is not None


Rule = tuple[str, re.Pattern, Callable[[str], bool] | None]


def build_rules(p: Pii) -> list[Rule]:
    rules: list[Rule] = []
    if p.email:
        rules.append(("EMAIL", EMAIL, None))
    if p.credit_card:
        rules.append(("CREDIT_CARD", CARD, _card))
    if p.ip_address:
        rules.append(("IP_ADDRESS", IPV4, _public_ip))
        rules.append(("IP_ADDRESS", IPV6, _public_ip))
    if p.phone:
        rules.append(("PHONE", PHONE, _phone))
    for x in p.extra:
        rules.append((x.name, re.compile(x.pattern), None))
    return rules


def redact(text: str, rules: list[Rule]) -> tuple[str, dict[str, int]]:
    """Text with each match replaced by <TYPE>, and the number of replacements per type."""
    counts: dict[str, int] = {}
    for name, pattern, check in rules:
        placeholder = f"<{name}>"

        def sub(m: re.Match, name=name, check=check, placeholder=placeholder) -> str:
            if check is not None and not check(m.group(0)):
                return m.group(0)
            counts[name] = counts.get(name, 0) + 1
            return placeholder

        text = pattern.sub(sub, text)
    return text, counts
