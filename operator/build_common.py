"""Pieces every workload child shares: deterministic names, the ConfigMap holding the resolved
resource as the workload's `-f` file, and the workload's environment (object storage from the
operator's configuration, credentials from a Secret). Pure functions: no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import yaml

from capstan_operator import kube
from capstan_operator.api.common import API_VERSION
from capstan_operator.config import OperatorConfig

CONFIG_KEY = "resource.yaml"
CONFIG_DIR = "/etc/capstan"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
CONFIG_VOLUME = "capstan-resource"
# Job names become pod hostnames `<job>-<index>` and label values: keep room for the index.
MAX_CHILD_NAME = 52
SECRET_KEYS = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_REGION", True),  # optional: moto and most S3 services accept any region
)


def child_name(name: str, suffix: str, limit: int = MAX_CHILD_NAME) -> str:
    """`<name>-<suffix>`, shortened with a hash of the full name when it would pass `limit`."""
    full = f"{name}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{name[:keep].rstrip('-')}-{digest}-{suffix}"


def resolved_resource(body: dict, spec: dict[str, Any]) -> dict[str, Any]:
    """The resource the workload reads with `-f`: the user's object with `spec` replaced by the
    resolved one, and only the metadata the workload needs (no status, managedFields, uid)."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            **({"labels": dict(meta["labels"])} if meta.get("labels") else {}),
        },
        "spec": spec,
    }


def config_map(body: dict, name: str, component: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": kube.child_meta(body, name, component),
        "data": {CONFIG_KEY: yaml.safe_dump(resource, sort_keys=False)},
    }


def config_volume(config_map_name: str) -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name}}


def config_mount() -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}


def workload_env(body: dict, cfg: OperatorConfig, extra: dict[str, str] | None = None) -> list[dict]:
    """Environment of every workload container. Values the operator's own config sets win over
    nothing the user can set; `extra` (per kind) comes last."""
    meta = body["metadata"]
    env: list[dict] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "CAPSTAN_RESOURCE", "value": CONFIG_PATH},
        {"name": "CAPSTAN_KIND", "value": body["kind"]},
        {"name": "CAPSTAN_NAME", "value": meta["name"]},
        {"name": "CAPSTAN_NAMESPACE", "value": meta["namespace"]},
    ]
    if cfg.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": cfg.s3_endpoint})
    if cfg.s3_secret:
        env += [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": cfg.s3_secret, "key": key, "optional": optional}},
            }
            for key, optional in SECRET_KEYS
        ]
    env += [{"name": k, "value": v} for k, v in sorted(cfg.extra_env.items())]
    env += [{"name": k, "value": v} for k, v in (extra or {}).items()]
    return env


def pod_labels(body: dict, component: str) -> dict[str, str]:
    """Labels on workload pods; also the selector the operator lists them with."""
    return kube.labels(body["kind"], body["metadata"]["name"], component)


def selector(labels: dict[str, str]) -> str:
    """A label selector string matching the owner and component of `labels`."""
    keys = (kube.LABEL_KIND, kube.LABEL_OWNER, kube.LABEL_COMPONENT)
    return ",".join(f"{k}={labels[k]}" for k in keys)


def workload_job(
    body: dict,
    name: str,
    component: str,
    container: dict[str, Any],
    backoff_limit: int,
    exit_invalid: int,
    pod_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A one-pod Job running `container` with the resource file mounted. A container exit code of
    `exit_invalid` means the spec or the input is wrong: the Job fails at once, no retries."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": kube.child_meta(body, name, component),
        "spec": {
            "backoffLimit": backoff_limit,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": container["name"],
                            "operator": "In",
                            "values": [exit_invalid],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": pod_labels(body, component)},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [config_volume(name)],
                    **(pod_extra or {}),
                },
            },
        },
    }


@dataclass
class Resolution:
    """A spec with its references to other resources resolved, or why it cannot be (yet)."""

    spec: Any = None
    """spec with every reference replaced by a URI (None unless resolved)."""
    waiting: str = ""
    """waiting says what the resource waits for (empty when nothing)."""
    failure: str = ""
    """failure says which dependency failed or which field cannot be resolved."""
