"""The invalid resources under tests/data/invalid/: each file is one resource with a header
saying which field must be named (`# field:`), optionally the rule's message (`# message:`) and,
for immutable fields, a merge patch applied after creation (`# patch:`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INVALID_DIR = Path(__file__).resolve().parents[1] / "data" / "invalid"


@dataclass(frozen=True)
class InvalidCase:
    path: Path
    field: str
    message: str
    patch: dict[str, Any] | None

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def resource(self) -> dict[str, Any]:
        return yaml.safe_load(self.text)

    def named_by(self, error: str) -> bool:
        """Does an API server or model error name this field (and the rule's message, if any)?
        `field: ...` is how both report a value; `"field"` is kubectl's unknown-field form."""
        named = f"{self.field}: " in error or f'unknown field "{self.field}"' in error
        return named and self.message in error


def load_cases() -> list[InvalidCase]:
    cases = []
    for path in sorted(INVALID_DIR.glob("*.yaml")):
        header = {}
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            key, sep, value = line.lstrip("# ").partition(": ")
            if sep:
                header[key] = value
        if "field" not in header:
            raise ValueError(f"{path}: header has no '# field:' line")
        patch = json.loads(header["patch"]) if "patch" in header else None
        cases.append(InvalidCase(path, header["field"], header.get("message", ""), patch))
    return cases
