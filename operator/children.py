"""What every child of a Capstan resource shares: deterministic names, labels and the owner
reference, the ConfigMap holding the resolved resource as the workload's `-f` file, the
workload's environment (object storage from the operator's configuration, credentials from a
Secret), requests and placement of a workload pod, and the workload Jobs: one pod, or one pod per
index.

Pure functions, no I/O: the kinds' builders import this and never `kube`."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml

from capstan_api import exitcodes
from capstan_api.common import API_VERSION
from capstan_api.workload import PodResources, Toleration
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
    ("AWS_SESSION_TOKEN", True),  # optional: only temporary (STS) credentials have one
    ("AWS_REGION", True),  # optional: most S3 services accept any region
)

# Label keys (constants, as the style guide asks).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_KIND = "capstan.dev/kind"
LABEL_OWNER = "capstan.dev/owner"
ANNOTATION_SPEC_HASH = "capstan.dev/spec-hash"
"""The hash of the spec (less the fields that do not change the work) a child was built from: a
later spec with another hash is work to do again (a new Dataset revision, a TrainingRun continued)."""
GPU = "nvidia.com/gpu"


def child_name(name: str, suffix: str, limit: int = MAX_CHILD_NAME) -> str:
    """`<name>-<suffix>`, shortened with a hash of the full name when it would pass `limit`."""
    full = f"{name}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{name[:keep].rstrip('-')}-{digest}-{suffix}"


def spec_hash(spec: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """A short hash of `spec` (wire names) without the fields `ignore` (dotted paths)."""
    kept = copy.deepcopy(spec)
    for path in ignore:
        *parents, leaf = path.split(".")
        node = kept
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    kept = _pruned(kept)
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def _pruned(node: Any) -> Any:
    """`node` without the objects left empty (an ignored field was all a spec set there: the
    same as not setting it)."""
    if not isinstance(node, dict):
        return node
    out = {k: _pruned(v) for k, v in node.items()}
    return {k: v for k, v in out.items() if v != {}}


def built_from(obj: dict | None) -> str | None:
    """The spec hash a child records (None: none, or no child)."""
    return ((obj or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)


def stamped(obj: dict[str, Any], hash_: str) -> dict[str, Any]:
    """`obj` with the spec hash it is built from in its annotations."""
    annotations = obj["metadata"].setdefault("annotations", {})
    annotations[ANNOTATION_SPEC_HASH] = hash_
    return obj


def owner_reference(body: dict) -> dict:
    """An owner reference to a Capstan resource: its children are deleted with it."""
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(kind: str, name: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: "capstan",
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: "capstan-operator",
        LABEL_PART_OF: "capstan",
        LABEL_KIND: kind.lower(),
        LABEL_OWNER: name,
    }


def child_meta(body: dict, name: str, component: str, extra_labels: dict | None = None) -> dict:
    """metadata for a child of `body`: namespace, labels, owner reference."""
    meta = body["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": {**labels(body["kind"], meta["name"], component), **(extra_labels or {})},
        "ownerReferences": [owner_reference(body)],
    }


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
        "metadata": child_meta(body, name, component),
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
    if cfg.s3_region:
        env.append({"name": "AWS_REGION", "value": cfg.s3_region})
    secret, required = storage_secret(body, cfg)
    if secret:
        env += [
            {
                "name": key,
                "valueFrom": {
                    "secretKeyRef": {"name": secret, "key": key, "optional": optional or not required}
                },
            }
            for key, optional in SECRET_KEYS
            if not (key == "AWS_REGION" and cfg.s3_region)
        ]
    env += [{"name": k, "value": v} for k, v in sorted(cfg.extra_env.items())]
    env += [{"name": k, "value": v} for k, v in (extra or {}).items()]
    return env


def storage_secret(body: dict, cfg: OperatorConfig) -> tuple[str, bool]:
    """(Secret name, required) of the object-storage credentials of `body`'s pods, in its own
    namespace (never copied there by the operator): the resource's spec.storage.secretName, which
    must exist (a pod cannot start without it, and the resource fails naming it), else the
    operator's default name, used where the namespace has it (elsewhere the pods fall back to
    the default AWS chain: IRSA, Workload Identity, an instance role). ("", False): none."""
    own = ((body.get("spec") or {}).get("storage") or {}).get("secretName") or ""
    return (own, True) if own else (cfg.s3_secret, False)


def pod_identity(body: dict, cfg: OperatorConfig) -> dict[str, Any]:
    """The pod's serviceAccountName: the resource's own, else the operator's default for
    workloads; {} leaves the namespace's default ServiceAccount."""
    name = (body.get("spec") or {}).get("serviceAccountName") or cfg.workload_service_account
    return {"serviceAccountName": name} if name else {}


def scrape_annotations(port: int) -> dict[str, str]:
    """The prometheus.io/* annotations a kubernetes_sd_configs (role pod) job keeps targets by."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def pod_labels(body: dict, component: str) -> dict[str, str]:
    """Labels on workload pods; also the selector the operator lists them with."""
    return labels(body["kind"], body["metadata"]["name"], component)


def selector(of: dict[str, str]) -> str:
    """A label selector string matching the owner and component of the labels `of`."""
    keys = (LABEL_KIND, LABEL_OWNER, LABEL_COMPONENT)
    return ",".join(f"{k}={of[k]}" for k in keys)


def workload_job(
    body: dict,
    name: str,
    component: str,
    container: dict[str, Any],
    backoff_limit: int,
    cfg: OperatorConfig,
    pod_extra: dict[str, Any] | None = None,
    with_config: bool = True,
) -> dict[str, Any]:
    """A one-pod Job running `container`, with the resource file (ConfigMap `name`) mounted unless
    `with_config` is False. A container exit code of `exitcodes.INVALID_CONFIG` means the spec or
    the input is wrong: the Job fails at once, no retries."""
    config_map = name if with_config else ""
    return _job(body, name, component, container, cfg, {"backoffLimit": backoff_limit}, config_map, pod_extra)


def indexed_job(
    body: dict,
    name: str,
    component: str,
    container: dict[str, Any],
    workers: int,
    backoff_limit_per_index: int,
    cfg: OperatorConfig,
    config_map: str,
    pod_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An Indexed Job of `workers` pods at once, one per index (JOB_COMPLETION_INDEX in the pod),
    with the resource file (ConfigMap `config_map`) mounted. A failed index is retried
    `backoff_limit_per_index` times; one index out of retries fails the Job (maxFailedIndexes 0),
    and exit code `exitcodes.INVALID_CONFIG` fails it at once, as in `workload_job`."""
    # backoffLimit stays unset: beside backoffLimitPerIndex the API server defaults it to MaxInt32,
    # while a value would cap the failures of all indexes together.
    indexed = {
        "completionMode": "Indexed",
        "completions": workers,
        "parallelism": workers,
        "backoffLimitPerIndex": backoff_limit_per_index,
        "maxFailedIndexes": 0,
    }
    return _job(body, name, component, container, cfg, indexed, config_map, pod_extra)


def _job(
    body: dict,
    name: str,
    component: str,
    container: dict[str, Any],
    cfg: OperatorConfig,
    retries: dict[str, Any],
    config_map: str,
    pod_extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """What every workload Job shares: the exit-code policy, the pod labels, the hardened pod
    (with the resource file from ConfigMap `config_map` unless it is empty)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_meta(body, name, component),
        "spec": {
            **retries,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": container["name"],
                            "operator": "In",
                            "values": [exitcodes.INVALID_CONFIG],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": pod_labels(body, component)},
                "spec": restricted(
                    {
                        "restartPolicy": "Never",
                        **pod_identity(body, cfg),
                        "containers": [container],
                        "volumes": [config_volume(config_map)] if config_map else [],
                        **(pod_extra or {}),
                    },
                    cfg,
                ),
            },
        },
    }


SCRATCH_VOLUME = "tmp"
SCRATCH_DIR = "/tmp"


def with_default_placement(pod: dict[str, Any], cfg: OperatorConfig) -> dict[str, Any]:
    """`pod` with the operator's workload placement defaults (the chart's workload.nodeSelector,
    tolerations, affinity): a node selector and affinity where the resource set none, the
    default tolerations beside the resource's."""
    d = cfg.workload_placement
    out = dict(pod)
    for key in ("nodeSelector", "affinity"):
        if d.get(key) and not out.get(key):
            out[key] = copy.deepcopy(d[key])
    extra = [t for t in d.get("tolerations") or [] if t not in (out.get("tolerations") or [])]
    if extra:
        out["tolerations"] = [*(out.get("tolerations") or []), *copy.deepcopy(extra)]
    return out


def restricted(pod: dict[str, Any], cfg: OperatorConfig) -> dict[str, Any]:
    """`pod` made to meet the Pod Security Standard "restricted", as every workload pod must: a
    non-root user (the images' 65532 unless the operator is told otherwise), RuntimeDefault
    seccomp, no privilege escalation, no capabilities, a read-only root filesystem with /tmp
    (HOME in the images) on an emptyDir: the only writable paths are volumes."""
    uid = cfg.run_as_user
    mount = {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_DIR}
    container_sc = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }

    def harden(c: dict[str, Any]) -> dict[str, Any]:
        mounts = [m for m in c.get("volumeMounts") or [] if m["mountPath"] != SCRATCH_DIR]
        return {**c, "securityContext": container_sc, "volumeMounts": [*mounts, mount]}

    return {
        **with_default_placement(pod, cfg),
        "securityContext": {
            "runAsNonRoot": uid != 0,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **(
            {"initContainers": [harden(c) for c in pod["initContainers"]]}
            if pod.get("initContainers")
            else {}
        ),
        "containers": [harden(c) for c in pod["containers"]],
        "volumes": [*(pod.get("volumes") or []), {"name": SCRATCH_VOLUME, "emptyDir": {}}],
    }


def container_resources(res: PodResources) -> dict[str, Any]:
    """Requests from the spec; memory and GPUs limited to what is requested (an OOM is the pod's
    own, not its neighbours'), CPU left unlimited so loading a model is not throttled."""
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, Any] = {"memory": res.memory}
    if res.gpus:
        requests[GPU] = res.gpus
        limits[GPU] = res.gpus
    return {"requests": requests, "limits": limits}


def toleration(t: Toleration) -> dict[str, Any]:
    """A core/v1 Toleration from the API's (empty fields left out)."""
    out: dict[str, Any] = {"operator": t.operator}
    if t.key:
        out["key"] = t.key
    if t.value and t.operator == "Equal":
        out["value"] = t.value
    if t.effect:
        out["effect"] = t.effect
    if t.toleration_seconds >= 0:
        out["tolerationSeconds"] = t.toleration_seconds
    return out


GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
"""GPU_TOLERATION: GPU node pools are tainted nvidia.com/gpu (GKE does it, EKS and the GPU
Operator's guides recommend it) so that pods without GPUs stay off them."""


def tolerations(given: list[Toleration], gpus: int) -> list[dict[str, Any]]:
    """The user's tolerations, and the GPU taint's when the pod asks for GPUs and none names it."""
    out = [toleration(t) for t in given]
    if gpus and not any(t.get("key") in (GPU, None) for t in out):
        out.append(dict(GPU_TOLERATION))
    return out


def placement(res: PodResources) -> dict[str, Any]:
    """Pod spec fields that place the pod: node selector, tolerations (with the GPU taint's for
    a pod with GPUs), affinity."""
    out: dict[str, Any] = {}
    if res.node_selector:
        out["nodeSelector"] = dict(res.node_selector)
    tols = tolerations(res.tolerations, res.gpus)
    if tols:
        out["tolerations"] = tols
    if res.affinity:
        out["affinity"] = copy.deepcopy(res.affinity)
    return out
