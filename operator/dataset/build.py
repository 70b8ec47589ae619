"""Children of a Dataset: a ConfigMap with the resource as the `-f` file and one Job running
`python -m capstan_trainer.prepare`. Pure functions: no I/O."""

from __future__ import annotations

from typing import Any

from capstan_api.dataset import DatasetSpec
from capstan_operator import children
from capstan_operator.config import OperatorConfig

COMPONENT = "prepare"
BACKOFF_LIMIT = 2  # transient failures (storage hiccups) get two more tries


def job_name(name: str) -> str:
    return children.child_name(name, COMPONENT)


def build(body: dict, spec: DatasetSpec, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """[ConfigMap, Job] for `body` (the Dataset as stored), in creation order."""
    name = job_name(body["metadata"]["name"])
    resource = children.resolved_resource(body, spec.to_wire())
    env = children.workload_env(body, cfg, {"CAPSTAN_ALLOWED_LICENCES": ",".join(cfg.allowed_licences)})
    container = {
        "name": COMPONENT,
        "image": cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", "capstan_trainer.prepare", "-f", children.CONFIG_PATH],
        "env": env,
        "volumeMounts": [children.config_mount()],
    }
    job = children.workload_job(body, name, COMPONENT, container, BACKOFF_LIMIT, cfg)
    return [children.config_map(body, name, COMPONENT, resource), job]
