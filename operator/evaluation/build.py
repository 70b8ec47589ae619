"""Children of an Evaluation: a ConfigMap with the resolved resource as the `-f` file and one Job
running `python -m capstan_trainer.evaluate`; and the resolution of its references (TrainingRun ->
its last checkpoint, Dataset -> its manifest, empty outputUri -> the artifact location).
Pure functions: the caller passes the referenced objects (None when missing)."""

from __future__ import annotations

from typing import Any

from capstan_api.evaluation import EvaluationSpec
from capstan_operator import children
from capstan_operator.config import OperatorConfig

COMPONENT = "evaluate"
BACKOFF_LIMIT = 1  # one more try for a crash (storage hiccup); results are rewritten whole
ANNOTATION_GENERATION = "capstan.dev/generation"
"""The Evaluation generation a Job evaluates: a later spec is evaluated again by a new Job."""
OPERATOR_FIELDS = ("schedule", "onRegression")
"""Fields only the operator acts on, left out of the workload's file (an evaluate image from
before they existed reads the file too)."""
ANNOTATION_SCHEDULED = "capstan.dev/scheduled-for"
"""The schedule time (status.lastScheduleTime) of the run a Job is for; "" for the first run."""


def job_name(name: str) -> str:
    return children.child_name(name, COMPONENT)


def build(body: dict, spec: EvaluationSpec, cfg: OperatorConfig, scheduled: str = "") -> list[dict[str, Any]]:
    """[ConfigMap, Job] for `body` (the Evaluation as stored) and its resolved `spec`;
    `scheduled` is the schedule time of the run (status.lastScheduleTime)."""
    name = job_name(body["metadata"]["name"])
    wire = {k: v for k, v in spec.to_wire().items() if k not in OPERATOR_FIELDS}
    resource = children.resolved_resource(body, wire)
    container = {
        "name": COMPONENT,
        "image": spec.image or cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", "capstan_trainer.evaluate", "-f", children.CONFIG_PATH],
        "env": children.workload_env(body, cfg),
        "resources": children.container_resources(spec.resources),
        "volumeMounts": [children.config_mount()],
    }
    job = children.workload_job(
        body,
        name,
        COMPONENT,
        container,
        BACKOFF_LIMIT,
        cfg,
        children.placement(spec.resources),
    )
    job["metadata"]["annotations"] = {
        ANNOTATION_GENERATION: str(body["metadata"].get("generation") or 0),
        ANNOTATION_SCHEDULED: scheduled,
    }
    return [children.config_map(body, name, COMPONENT, resource), job]
