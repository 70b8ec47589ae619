"""Stage 3: normalisation (Unicode form, control characters, whitespace, mojibake)."""

from __future__ import annotations

import re
import unicodedata

from capstan_api.cleaning import Cleaning

# Control (Cc) and format (Cf) characters other than \n and \t; zero-width joiners and BOMs included.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ufff9-\ufffb]"
)
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")
# UTF-8 bytes of U+0080..U+FFFF read as cp1252: a lead byte (Ã, Â, â, ...) then one or two
# continuation characters. Only runs that round-trip through cp1252 -> UTF-8 are replaced.
_MOJIBAKE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]{1,3}"
)
_MOJIBAKE_HINT = re.compile("[\u00c2-\u00f4]")


def _fix_run(m: re.Match) -> str:
    s = m.group(0)
    try:
        return s.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return s


def fix_mojibake(text: str) -> str:
    if not _MOJIBAKE_HINT.search(text):
        return text
    return _MOJIBAKE.sub(_fix_run, text)


def normalize(text: str, opts: Cleaning) -> str:
    if opts.mojibake:
        text = fix_mojibake(text)
    if opts.unicode != "none":
        text = unicodedata.normalize(opts.unicode, text)
    if opts.control_characters:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROL.sub("", text)
    if opts.whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANKS.sub("\n\n", text).strip()
    return text
