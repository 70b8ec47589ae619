"""Two-column word lists (the toxicity lexicon, the augmentation pairs): built-in files beside
this package or a user's file at an fsspec URI, `a<TAB>b` (or spaces) a line, '#' comments."""

from __future__ import annotations

import re
from pathlib import Path

from capstan_trainer import storage
from capstan_trainer.prepare.read import InputError

BUILTIN = Path(__file__).parent / "lexicons"
_SPLIT = re.compile(r"\t|\s{2,}| ")  # the first tab, else the first run of spaces


def rows(uri: str, builtin: str, field: str) -> tuple[tuple[int, str, str], ...]:
    """(line number, first column, rest of the line) of `uri`, or of the built-in file when it is
    empty; the second column lower-cased with single spaces. Bad input names `field` and the line."""
    try:
        data = storage.read_bytes(uri) if uri else (BUILTIN / builtin).read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{field}: {uri} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{field}: {uri} is not UTF-8 text") from exc
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = _SPLIT.split(line, maxsplit=1)
        if len(parts) != 2 or not parts[1].strip():
            raise InputError(f"{field}: {uri or builtin} line {n}: expected two columns, got {line!r}")
        out.append((n, parts[0].strip(), " ".join(parts[1].lower().replace("’", "'").split())))
    if not out:
        raise InputError(f"{field}: {uri or builtin} has no entries")
    return tuple(out)
