"""Stage 3: normalisation (Unicode form, control characters, whitespace, mojibake)."""

from __future__ import annotations

import re
import unicodedata

import ftfy

from capstan_api.cleaning import Cleaning

# Control (Cc) and format (Cf) characters other than \n and \t; zero-width joiners and BOMs included.
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ufff9-\ufffb]"
)
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")
# ftfy's encoding repair only: undo text decoded with the wrong codec (UTF-8 read as cp1252 or
# latin-1, C1 controls that stand for cp1252 characters, surrogate pairs). Its other fixes stay off
# because Cleaning's own options own them (unicode form, control characters, line breaks) or because
# they change correct text (curly quotes, ligatures, full-width letters, HTML entities).
_ENCODING_ONLY = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=False,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=True,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)


def fix_mojibake(text: str) -> str:
    # ASCII text cannot hold mojibake; most documents stop here (isascii is a C scan, GB/s).
    if text.isascii():
        return text
    return ftfy.fix_text(text, _ENCODING_ONLY)


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
