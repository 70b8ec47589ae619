"""A TrainingRun with `init.huggingFace`: the model's config.json read and checked before any pod,
so an unsupported architecture fails the run with the field named instead of a crashing gang;
the shape it gives sizes the capacity plan (spec.model does not describe such a run)."""

from __future__ import annotations

from capstan_api import hfmodel
from capstan_api.modelshape import ModelConfig
from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import objectstore
from capstan_operator.config import OperatorConfig


def shape(spec: TrainingRunSpec, config: dict | None) -> tuple[ModelConfig | None, str]:
    """(the model's shape, "") or (None, why not). Pure: `config` is config.json, None if absent."""
    uri = spec.init.hugging_face
    if config is None:
        return None, f"{hfmodel.FIELD}: {uri} has no {hfmodel.CONFIG}"
    try:
        return hfmodel.run_shape(spec.model, config, uri), ""
    except hfmodel.UnsupportedConfig as exc:
        return None, str(exc)


def read_shape(spec: TrainingRunSpec, cfg: OperatorConfig) -> tuple[ModelConfig | None, str]:
    """`shape` of the config.json in object storage (Refused / Unreadable propagate: the
    controller turns them into the StorageReadable condition)."""
    uri = f"{spec.init.hugging_face.rstrip('/')}/{hfmodel.CONFIG}"
    return shape(spec, objectstore.read_json(uri, cfg, hfmodel.FIELD))
