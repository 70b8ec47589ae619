"""Children of a Dataset: a ConfigMap with the resource as the `-f` file and one Job running
`python -m capstan_trainer.prepare`. Pure functions: no I/O."""

from __future__ import annotations

from typing import Any

from capstan_operator import build_common as common
from capstan_operator.api.dataset import DatasetSpec
from capstan_operator.config import OperatorConfig

COMPONENT = "prepare"
EXIT_INVALID = 3  # capstan_trainer.prepare: bad input, retrying cannot help
BACKOFF_LIMIT = 2  # transient failures (storage hiccups) get two more tries


def job_name(name: str) -> str:
    return common.child_name(name, COMPONENT)


def licence_refusals(spec: DatasetSpec, cfg: OperatorConfig) -> list[str]:
    """Why the operator's licence policy refuses this Dataset (empty: it may run).

    A source whose declared licence is outside the policy is refused outright; per-document
    licences are narrowed by the workload itself (CAPSTAN_ALLOWED_LICENCES)."""
    policy = set(cfg.allowed_licences)
    out = [
        f"spec.sources[{i}].licence: {s.licence} is not allowed by the operator's policy"
        for i, s in enumerate(spec.sources)
        if s.licence not in policy
    ]
    if not policy.intersection(spec.allowed_licences):
        out.append(
            "spec.allowedLicences: none of "
            f"{', '.join(spec.allowed_licences)} is allowed by the operator's policy"
        )
    return out


def build(body: dict, spec: DatasetSpec, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """[ConfigMap, Job] for `body` (the Dataset as stored), in creation order."""
    name = job_name(body["metadata"]["name"])
    resource = common.resolved_resource(body, spec.to_wire())
    env = common.workload_env(body, cfg, {"CAPSTAN_ALLOWED_LICENCES": ",".join(cfg.allowed_licences)})
    container = {
        "name": COMPONENT,
        "image": cfg.workload_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", "capstan_trainer.prepare", "-f", common.CONFIG_PATH],
        "env": env,
        "volumeMounts": [common.config_mount()],
    }
    job = common.workload_job(body, name, COMPONENT, container, BACKOFF_LIMIT, EXIT_INVALID)
    return [common.config_map(body, name, COMPONENT, resource), job]
