"""Helpers for spec-model tests shared by the evaluation and serving suites."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from capstan_api.common import InvalidResource, parse_spec


def resource(kind: str, spec: dict) -> dict:
    return {"apiVersion": "capstan.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}


def rejected(cls: type[BaseModel], kind: str, spec: dict) -> str:
    """The error message a workload CLI would print for this spec."""
    with pytest.raises(InvalidResource) as exc:
        parse_spec(cls, resource(kind, spec), kind, source="x.yaml")
    return str(exc.value)


def undocumented_fields(cls: type[BaseModel]) -> list[str]:
    """Fields (recursively) whose description does not start with their wire name."""
    bad, seen, todo = [], set(), [cls]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            wire = info.alias or name
            if not (info.description or "").startswith(wire):
                bad.append(f"{model.__name__}.{wire}")
            for arg in _model_args(info.annotation):
                todo.append(arg)
    return bad


def _model_args(tp) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    out = []
    for arg in getattr(tp, "__args__", ()) or ():
        out += _model_args(arg)
    return out
