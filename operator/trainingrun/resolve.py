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
    waits, entries = [], []
    for i, src in enumerate(spec.datasets):
        if not src.dataset_ref:
            entries.append(src)
            continue
        ref = refs.manifest(f"spec.datasets[{i}].datasetRef", src.dataset_ref, datasets.get(src.dataset_ref))
        if ref.failure:
            return Resolution(failure=ref.failure)
        if ref.waiting:
            waits.append(ref.waiting)
        else:
            entries.append(src.model_copy(update={"dataset_ref": "", "uri": ref.uri}))
    init = spec.init
    if init.from_training_run:
        run = init.from_training_run
        ref = refs.last_checkpoint("spec.init.fromTrainingRun", run, runs.get(run))
        if ref.failure:
            return Resolution(failure=ref.failure)
        if ref.waiting:
            waits.append(ref.waiting)
        else:
            init = init.model_copy(update={"from_training_run": "", "checkpoint_uri": ref.uri})
    if waits:
        return refs.waiting(waits)
    ckpt = spec.checkpoint
    if not ckpt.uri:
        where = refs.artifact_uri(cfg, "spec.checkpoint.uri", "checkpoints", namespace, name, "checkpoints")
        if where.failure:
            return Resolution(failure=where.failure)
        ckpt = ckpt.model_copy(update={"uri": where.uri})
    resolved = spec.model_copy(update={"datasets": entries, "init": init, "checkpoint": ckpt})
    return Resolution(spec=TrainingRunSpec.model_validate(resolved.model_dump()))
