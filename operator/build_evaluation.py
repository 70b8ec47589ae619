"""Children of an Evaluation: a ConfigMap with the resolved resource as the `-f` file and one Job
running `python -m capstan_trainer.evaluate`; and the resolution of its references (TrainingRun ->
its last checkpoint, Dataset -> its manifest, empty outputUri -> the artifact location).
Pure functions: the caller passes the referenced objects (None when missing)."""

from __future__ import annotations

from typing import Any

from capstan_operator import build_common as common
from capstan_operator import build_serving_common as pods
from capstan_operator.api.evaluation import EvaluationSpec
from capstan_operator.build_common import Resolution
from capstan_operator.config import OperatorConfig

COMPONENT = "evaluate"
EXIT_INVALID = 3  # capstan_trainer.evaluate: invalid file, retrying cannot help
BACKOFF_LIMIT = 1  # one more try for a crash (storage hiccup); results are rewritten whole
RUN_DONE = ("Succeeded", "EarlyStopped")
STATUS_FILE = "status.json"
ANNOTATION_GENERATION = "capstan.dev/generation"
"""The Evaluation generation a Job evaluates: a later spec is evaluated again by a new Job."""


def job_name(name: str) -> str:
    return common.child_name(name, COMPONENT)


def _status(obj: dict | None) -> dict:
    return (obj or {}).get("status") or {}


def resolve(
    namespace: str,
    name: str,
    spec: EvaluationSpec,
    run: dict | None,
    dataset: dict | None,
    cfg: OperatorConfig,
) -> Resolution:
    """`run` and `dataset` are the objects spec.model.trainingRunRef and spec.datasetRef name."""
    waits: list[str] = []
    model = spec.model
    if model.training_run_ref is not None:
        ref, st = model.training_run_ref.name, _status(run)
        phase = st.get("phase") or "Pending"
        uri = (st.get("lastCheckpoint") or {}).get("uri")
        if run is None:
            waits.append(f"TrainingRun {ref} (not found)")
        elif phase == "Failed":
            return Resolution(
                failure=f"spec.model.trainingRunRef: TrainingRun {ref} failed: {st.get('message', '')}"
            )
        elif phase not in RUN_DONE:
            waits.append(f"TrainingRun {ref} to succeed (now {phase})")
        elif not uri:
            return Resolution(failure=f"spec.model.trainingRunRef: TrainingRun {ref} has no checkpoint")
        else:
            model = model.model_copy(update={"training_run_ref": None, "uri": uri})
    validation_uri = spec.validation_uri
    if spec.dataset_ref is not None:
        ref, st = spec.dataset_ref.name, _status(dataset)
        phase = st.get("phase") or "Pending"
        if dataset is None:
            waits.append(f"Dataset {ref} (not found)")
        elif phase == "Failed":
            return Resolution(failure=f"spec.datasetRef: Dataset {ref} failed: {st.get('message', '')}")
        elif phase != "Ready" or not st.get("manifestUri"):
            waits.append(f"Dataset {ref} to be Ready (now {phase})")
        else:
            validation_uri = st["manifestUri"]
    if waits:
        return Resolution(waiting="waiting for " + ", ".join(waits))
    output_uri = spec.output_uri
    if not output_uri:
        if not cfg.artifact_uri:
            return Resolution(
                failure="spec.outputUri: empty, and the operator has no artifact location "
                "(CAPSTAN_ARTIFACT_URI) to put results under"
            )
        output_uri = f"{cfg.artifact_uri.rstrip('/')}/{namespace}/{name}/evaluation"
    resolved = spec.model_copy(
        update={
            "model": model,
            "dataset_ref": None,
            "validation_uri": validation_uri,
            "output_uri": output_uri,
        }
    )
    return Resolution(spec=EvaluationSpec.model_validate(resolved.model_dump()))


def build(body: dict, spec: EvaluationSpec, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """[ConfigMap, Job] for `body` (the Evaluation as stored) and its resolved `spec`."""
    name = job_name(body["metadata"]["name"])
    resource = common.resolved_resource(body, spec.to_wire())
    container = {
        "name": COMPONENT,
        "image": spec.image or cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", "capstan_trainer.evaluate", "-f", common.CONFIG_PATH],
        "env": common.workload_env(body, cfg),
        "resources": pods.container_resources(spec.resources),
        "volumeMounts": [common.config_mount()],
    }
    job = common.workload_job(
        body, name, COMPONENT, container, BACKOFF_LIMIT, EXIT_INVALID, pods.placement(spec.resources)
    )
    job["metadata"]["annotations"] = {ANNOTATION_GENERATION: str(body["metadata"].get("generation") or 0)}
    return [common.config_map(body, name, COMPONENT, resource), job]


def status_from_file(doc: dict, output_uri: str) -> dict[str, Any]:
    """EvaluationStatus fields (wire names) from the workload's status.json."""
    gates = [
        {k: g.get(k) for k in ("metric", "value", "min", "max") if g.get(k) is not None}
        | {"passed": bool(g.get("passed"))}
        for g in doc.get("gates") or []
    ]
    return {
        "metrics": {
            k: float(v)
            for k, v in (doc.get("metrics") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        "gates": gates,
        "passed": bool(doc.get("passed")),
        "resultsUri": doc.get("resultsUri") or f"{output_uri.rstrip('/')}/results.json",
        "modelCardUri": doc.get("modelCardUri") or f"{output_uri.rstrip('/')}/README.md",
    }
