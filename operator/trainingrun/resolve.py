"""Resolve a TrainingRun's references: datasetRef -> the Dataset's manifest URI, fromTrainingRun
-> that run's last checkpoint, replayWithout -> that run's checkpoint root, empty checkpoint.uri -> the operator's artifact location. Pure: the
caller passes the referenced objects (None when missing)."""

from __future__ import annotations

from capstan_api.status import RUN_DONE, Phase
from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import refs
from capstan_operator.config import OperatorConfig
from capstan_operator.refs import Resolution

FINISHED = (*RUN_DONE, Phase.FAILED)


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
    if init.replay_without:
        base = refs.checkpoint_root(
            "spec.init.replayWithout", init.replay_without, runs.get(init.replay_without)
        )
        init = init.model_copy(update={"replay_without": None, "replay_from": base.uri or None})
    ckpt, where = spec.checkpoint, None
    if not ckpt.uri:
        where = refs.artifact_uri(cfg, "spec.checkpoint.uri", "checkpoints", namespace, name, "checkpoints")
        ckpt = ckpt.model_copy(update={"uri": where.uri})
    blocked = refs.unresolved(*manifests, base) or refs.unresolved(where)
    if blocked:
        return blocked
    resolved = spec.model_copy(update={"datasets": entries, "init": init, "checkpoint": ckpt})
    return Resolution(spec=TrainingRunSpec.model_validate(resolved.model_dump()))


def checkpoint_taken(body: dict, uri: str, others: list[dict]) -> str:
    """Why this run may not write checkpoints to `uri`, or "" when it may: another live run of
    the namespace writes there and came first (it has started, or was created earlier; names
    break a tie, so of two runs created together exactly one goes ahead)."""
    me = body["metadata"]

    def rank(o: dict) -> tuple[bool, str, str]:
        m = o["metadata"]
        return (not (o.get("status") or {}).get("startTime"), m.get("creationTimestamp", ""), m["name"])

    for other in others:
        m, status = other["metadata"], other.get("status") or {}
        if m["name"] == me["name"] or m.get("deletionTimestamp") or status.get("phase") in FINISHED:
            continue
        theirs = status.get("outputUri") or ((other.get("spec") or {}).get("checkpoint") or {}).get("uri")
        if theirs and theirs.rstrip("/") == uri.rstrip("/") and rank(other) < rank(body):
            return (
                f"spec.checkpoint.uri {uri} is already written by TrainingRun {m['name']} "
                f"({status.get('phase') or 'Pending'}); two live runs cannot share a checkpoint location"
            )
    return ""
