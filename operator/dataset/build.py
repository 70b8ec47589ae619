"""Children of a Dataset: a ConfigMap with the resource as the `-f` file, and per preparation stage
(capstan_api.preparation) an Indexed Job running
`python -m capstan_trainer.prepare -f <file> --stage <stage> --workers <spec.workers>`, one pod per
index. Pure functions: no I/O."""

from __future__ import annotations

from typing import Any

from capstan_api.dataset import DatasetSpec
from capstan_api.preparation import Stage
from capstan_operator import children
from capstan_operator.config import OperatorConfig

COMPONENT = "prepare"
BACKOFF_LIMIT_PER_INDEX = 2  # transient failures (storage hiccups) get two more tries per index


def config_map_name(name: str) -> str:
    """One ConfigMap for every stage: they all read the spec the preparation started with."""
    return children.child_name(name, COMPONENT)


def stage_job_name(name: str, stage: str) -> str:
    return children.child_name(name, f"{COMPONENT}-{stage}")


def build_config_map(body: dict, spec: DatasetSpec, cfg: OperatorConfig) -> dict[str, Any]:
    """The ConfigMap holding `body` (the Dataset as stored) with `spec` as the workers' `-f` file."""
    resource = children.resolved_resource(body, spec.to_wire())
    return children.config_map(body, config_map_name(body["metadata"]["name"]), COMPONENT, resource)


def build_stage_job(body: dict, spec: DatasetSpec, cfg: OperatorConfig, stage: Stage) -> dict[str, Any]:
    """The Indexed Job of one stage: `stage.workers` pods, each given its index by the Job."""
    name = body["metadata"]["name"]
    env = children.workload_env(body, cfg, {"CAPSTAN_ALLOWED_LICENCES": ",".join(cfg.allowed_licences)})
    command = ["python", "-m", "capstan_trainer.prepare", "-f", children.CONFIG_PATH]
    container = {
        "name": COMPONENT,
        "image": cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": [*command, "--stage", stage.name, "--workers", str(spec.workers)],
        "env": env,
        "resources": children.container_resources(spec.resources),
        "volumeMounts": [children.config_mount()],
    }
    return children.indexed_job(
        body,
        stage_job_name(name, stage.name),
        COMPONENT,
        container,
        stage.workers,
        BACKOFF_LIMIT_PER_INDEX,
        cfg,
        config_map_name(name),
        children.placement(spec.resources),
    )
