"""Stage 7: PII redaction with typed placeholders (<EMAIL>, <IP_ADDRESS>, <PHONE>, <CREDIT_CARD>, extras).

Order matters: card numbers before phone numbers (a 16-digit card also looks like a long phone
number), addresses before phones (dotted quads look like dotted phone numbers).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import NamedTuple

import phonenumbers

from capstan_api.cleaning import Pii

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# 13-19 digits, optionally grouped by single spaces or dashes.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# A phone candidate: digit groups joined by single separators, optionally after +country code and a
# parenthesised area or trunk code ("+49 (0)30 1234567"). A '.', '-', ':' or '/' next to a digit on
# either side means a longer token (version, date, time, path). Atomic, so a candidate that fails
# the lookahead is not retried shorter. libphonenumber then decides (_phones).
PHONE = re.compile(
    r"(?<![\w+.:/-])(?>(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d+(?:[ .-]?\(\d{1,5}\)[ .-]?\d+|[ .-]\d+)*)"
    r"(?!\w|[.:/-]\d)"
)
# Dates the candidate pattern lets through: 2026-11-28, 28.11.2026, 11-28-2026.
DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}([.-])\d{1,2}\1\d{2}(?:\d{2})?")
# Longer candidates are runs of numbers (tables, lists), not one phone number; they are not parsed,
# which also bounds the matcher's work per candidate.
MAX_PHONE_CHARS = 32


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


def _valid_in(t: str, region: str | None) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(t, region))
    except phonenumbers.NumberParseException:
        return False


def _phones(s: str, regions: tuple[str, ...]) -> tuple[str, int]:
    """The candidate with the phone number libphonenumber finds in it replaced, and 1; or (s, 0)."""
    if len(s) > MAX_PHONE_CHARS or not 7 <= sum(c.isdigit() for c in s) <= 17:
        return s, 0
    plus = s[0] == "+"
    if not plus and (s.isdigit() or DATE.fullmatch(s)):  # ids, order numbers, amounts and dates
        return s, 0
    # Groups joined by single spaces may glue a number to its neighbours ("page 2 030 1234 5678"):
    # if the whole does not parse, try without the last or (no + given) the first group.
    tries = [(0, s)]
    if " " in s:
        tries.append((0, s[: s.rindex(" ")]))
        if not plus:
            tries.append((s.index(" ") + 1, s[s.index(" ") + 1 :]))
    for offset, t in tries:
        if sum(c.isdigit() for c in t) < 7:
            continue
        for region in (None,) if plus else regions:  # with +, the country code decides the plan
            # parse + is_valid_number first: ~4x cheaper than the matcher, and most candidates fail it.
            # The matcher then applies its VALID leniency (e.g. a trunk prefix where the plan needs
            # one) and gives the number's span.
            if not _valid_in(t, region):
                continue
            for m in phonenumbers.PhoneNumberMatcher(t, region, leniency=phonenumbers.Leniency.VALID):
                return s[: offset + m.start] + "<PHONE>" + s[offset + m.end :], 1
    return s, 0


class Rule(NamedTuple):
    """Each match of `pattern` becomes `replace(match)`: (its text with redactions, their number)."""

    name: str
    pattern: re.Pattern
    replace: Callable[[str], tuple[str, int]]


def _all(placeholder: str, check: Callable[[str], bool] | None = None) -> Callable[[str], tuple[str, int]]:
    """Replace the whole match, if `check` accepts it."""

    def replace(s: str) -> tuple[str, int]:
        return (placeholder, 1) if check is None or check(s) else (s, 0)

    return replace


def build_rules(p: Pii) -> list[Rule]:
    unknown = sorted(set(p.phone_regions) - phonenumbers.SUPPORTED_REGIONS)
    if unknown:
        raise ValueError(f"pii.phoneRegions: libphonenumber has no numbering plan for {', '.join(unknown)}")
    regions = tuple(p.phone_regions)
    rules: list[Rule] = []
    if p.email:
        rules.append(Rule("EMAIL", EMAIL, _all("<EMAIL>")))
    if p.credit_card:
        rules.append(Rule("CREDIT_CARD", CARD, _all("<CREDIT_CARD>", _card)))
    if p.ip_address:
        rules.append(Rule("IP_ADDRESS", IPV4, _all("<IP_ADDRESS>", _public_ip)))
        rules.append(Rule("IP_ADDRESS", IPV6, _all("<IP_ADDRESS>", _public_ip)))
    if p.phone:
        rules.append(Rule("PHONE", PHONE, lambda s: _phones(s, regions)))
    for x in p.extra:
        rules.append(Rule(x.name, re.compile(x.pattern), _all(f"<{x.name}>")))
    return rules


def redact(text: str, rules: list[Rule]) -> tuple[str, dict[str, int]]:
    """Text with each match replaced by <TYPE>, and the number of replacements per type."""
    counts: dict[str, int] = {}
    for name, pattern, replace in rules:

        def sub(m: re.Match, name=name, replace=replace) -> str:
            out, n = replace(m.group(0))
            if n:
                counts[name] = counts.get(name, 0) + n
            return out

        text = pattern.sub(sub, text)
    return text, counts
