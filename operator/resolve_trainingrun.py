"""Resolve a TrainingRun's references: datasetRef -> the Dataset's manifest URI, fromTrainingRun
-> that run's last checkpoint, empty checkpoint.uri -> the operator's artifact location. Pure: the
caller passes the referenced objects (None when missing)."""

from __future__ import annotations

from capstan_operator.api.trainingrun import TrainingRunSpec
from capstan_operator.build_common import Resolution
from capstan_operator.config import OperatorConfig

RUN_DONE = ("Succeeded", "EarlyStopped")


def _phase(obj: dict | None) -> str:
    return ((obj or {}).get("status") or {}).get("phase") or "Pending"


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
        ds = datasets.get(src.dataset_ref)
        phase = _phase(ds)
        if ds is None:
            waits.append(f"Dataset {src.dataset_ref} (not found)")
        elif phase == "Failed":
            msg = (ds.get("status") or {}).get("message", "")
            return Resolution(
                failure=f"spec.datasets[{i}].datasetRef: Dataset {src.dataset_ref} failed: {msg}"
            )
        elif phase != "Ready":
            waits.append(f"Dataset {src.dataset_ref} to be Ready (now {phase})")
        else:
            uri = ds["status"].get("manifestUri")
            entries.append(src.model_copy(update={"dataset_ref": "", "uri": uri}))
    init = spec.init
    ref = init.from_training_run
    if ref:
        run = runs.get(ref)
        phase = _phase(run)
        last = ((run or {}).get("status") or {}).get("lastCheckpoint") or {}
        if run is None:
            waits.append(f"TrainingRun {ref} (not found)")
        elif phase == "Failed":
            return Resolution(failure=f"spec.init.fromTrainingRun: TrainingRun {ref} failed")
        elif phase not in RUN_DONE:
            waits.append(f"TrainingRun {ref} to succeed (now {phase})")
        elif not last.get("uri"):
            return Resolution(failure=f"spec.init.fromTrainingRun: TrainingRun {ref} has no checkpoint")
        else:
            init = init.model_copy(update={"from_training_run": "", "checkpoint_uri": last["uri"]})
    if waits:
        return Resolution(waiting="waiting for " + ", ".join(waits))
    ckpt = spec.checkpoint
    if not ckpt.uri:
        if not cfg.artifact_uri:
            return Resolution(
                failure="spec.checkpoint.uri: empty, and the operator has no artifact location "
                "(CAPSTAN_ARTIFACT_URI) to put checkpoints under"
            )
        root = cfg.artifact_uri.rstrip("/")
        ckpt = ckpt.model_copy(update={"uri": f"{root}/{namespace}/{name}/checkpoints"})
    resolved = spec.model_copy(update={"datasets": entries, "init": init, "checkpoint": ckpt})
    return Resolution(spec=TrainingRunSpec.model_validate(resolved.model_dump()))
