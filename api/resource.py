"""Read a Capstan resource file (`-f x.yaml`) and validate it with the API models."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel

from capstan_api.common import InvalidResource, parse_spec

T = TypeVar("T", bound=BaseModel)


def load_resource(path: str | Path, spec_cls: type[T], kind: str) -> tuple[dict, T]:
    """Return (the raw resource dict, its validated spec). The file may hold several documents;
    the first of the given kind is used. Errors name the file and the field."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except FileNotFoundError as exc:
        raise InvalidResource(f"{path}: no such file") from exc
    except yaml.YAMLError as exc:
        raise InvalidResource(f"{path}: not valid YAML: {exc}") from exc
    matching = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]
    if not matching:
        kinds = [d.get("kind") for d in docs if isinstance(d, dict)]
        raise InvalidResource(f"{path}: no {kind} resource in the file (found kinds {kinds})")
    obj = matching[0]
    return obj, parse_spec(spec_cls, obj, kind, source=str(path))
