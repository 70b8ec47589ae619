"""Resolve a TrainingRun's references: datasetRef -> the Dataset's manifest URI, fromTrainingRun
-> that run's last checkpoint, empty checkpoint.uri -> the operator's artifact location. Pure: the
caller passes the referenced objects (None when missing)."""

from __future__ import annotations

from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import refs
from capstan_operator.config import OperatorConfig
from capstan_operator.refs import Resolution


def resolve(
    namespace: str,
    name: str,
    spec: TrainingRunSpec,
    datasets: dict[str, dict | None],
    runs: dict[str, dict | None],
    cfg: OperatorConfig,
) -> Resolution:
    manifests = [
        refs.manifest(f"spec.datasets[{i}].datasetRef", src.dataset_ref, datasets.get(src.dataset_ref))
        if src.dataset_ref
        else None
        for i, src in enumerate(spec.datasets)
    ]
    entries = [
        src.model_copy(update={"dataset_ref": "", "uri": ref.uri}) if ref else src
        for src, ref in zip(spec.datasets, manifests, strict=True)
    ]
    init, base = spec.init, None
    if init.from_training_run:
        base = refs.last_checkpoint(
            "spec.init.fromTrainingRun", init.from_training_run, runs.get(init.from_training_run)
        )
        init = init.model_copy(update={"from_training_run": "", "checkpoint_uri": base.uri})
    ckpt, where = spec.checkpoint, None
    if not ckpt.uri:
        where = refs.artifact_uri(cfg, "spec.checkpoint.uri", "checkpoints", namespace, name, "checkpoints")
        ckpt = ckpt.model_copy(update={"uri": where.uri})
    blocked = refs.unresolved(*manifests, base) or refs.unresolved(where)
    if blocked:
        return blocked
    resolved = spec.model_copy(update={"datasets": entries, "init": init, "checkpoint": ckpt})
    return Resolution(spec=TrainingRunSpec.model_validate(resolved.model_dump()))
