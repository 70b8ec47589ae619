"""Children of a Deployment (deployments.capstan.dev): one apps/v1 Deployment per model revision,
one Service across revisions, an optional HorizontalPodAutoscaler on the stable revision.
With runtime vllm a revision's pods serve the model's Hugging Face export (export.py) with vLLM
(vllm.py). Pure functions: no I/O."""

from __future__ import annotations

import math
from typing import Any

from capstan_api.deployment import DeploymentSpec
from capstan_operator import children
from capstan_operator.config import OperatorConfig
from capstan_operator.deployment import export, vllm

COMPONENT = "serve"
CONTAINER = "server"
PORT = 8000
PORT_NAME = "http"
LABEL_REVISION = "capstan.dev/revision"
ANNOTATION_MODEL_URI = "capstan.dev/model-uri"
ANNOTATION_SERVED_URI = "capstan.dev/served-uri"
"""With runtime vllm: the Hugging Face export the pods copy and serve."""
ANNOTATION_CANARY_STEP = "capstan.dev/canary-step"
"""On the canary's Deployment, JSON {"weight", "started", "ready"}: the step it is on, when the
step began and when its pods were all Ready (RFC 3339 or null). The pause is timed from "ready",
so an operator restart resumes the step where it was."""
MODEL_LOAD_SECONDS = 600  # the startup probe allows this long before liveness takes over
VLLM_MODEL_LOAD_SECONDS = 1200
PROBE_PERIOD = 2
RUNNING_REQUESTS_METRIC = {"builtin": vllm.RUNNING_REQUESTS_METRIC, "vllm": vllm.RUNNING_REQUESTS_METRIC}
"""The running-requests gauge each runtime serves on /metrics (one name since the built-in server
serves vLLM's): the HPA's metric."""
# Where Prometheus finds each serving pod's metrics (both runtimes serve /metrics on the API port).
SCRAPE_ANNOTATIONS = children.scrape_annotations(PORT)


def deployment_name(name: str, revision: int) -> str:
    return children.child_name(name, f"r{revision}")


def service_name(name: str) -> str:
    return name


def hpa_name(name: str) -> str:
    return children.child_name(name, COMPONENT)


def url(name: str, namespace: str) -> str:
    """The in-cluster base URL of the OpenAI API."""
    return f"http://{service_name(name)}.{namespace}.svc.cluster.local:{PORT}/v1"


def model_name(body: dict, spec: DeploymentSpec) -> str:
    return spec.model.name or body["metadata"]["name"]


def revision_labels(body: dict, revision: int) -> dict[str, str]:
    return {**children.pod_labels(body, COMPONENT), LABEL_REVISION: str(revision)}


def revision_selector(body: dict, revision: int | None = None) -> str:
    """Label selector of the serving pods: all revisions, or one."""
    sel = children.selector(children.pod_labels(body, COMPONENT))
    return sel if revision is None else f"{sel},{LABEL_REVISION}={revision}"


# Where each runtime reads its API key from (vLLM: the default of --api-key).
API_KEY_ENV = {"builtin": "CAPSTAN_API_KEY", "vllm": "VLLM_API_KEY"}


def _server_command(body: dict, spec: DeploymentSpec, model_uri: str) -> list[str]:
    s = spec.server
    if spec.runtime == "vllm":
        return vllm.command(spec, model_name(body, spec), PORT)
    return [
        "python", "-m", "capstan_trainer.serve", "--model", model_uri,
        "--served-model-name", model_name(body, spec), "--port", str(PORT),
        "--max-batch-size", str(s.max_batch_size), "--max-queue", str(s.max_queue),
        "--max-model-len", str(s.max_model_len),
        "--max-prompts-per-request", str(s.max_prompts_per_request),
        "--request-timeout-seconds", str(s.request_timeout_seconds),
    ]  # fmt: skip


def _probes(spec: DeploymentSpec) -> dict[str, Any]:
    vllm = spec.runtime == "vllm"
    health, ready = ("/health", "/health") if vllm else ("/healthz", "/readyz")
    load = VLLM_MODEL_LOAD_SECONDS if vllm else MODEL_LOAD_SECONDS

    def get(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": PORT_NAME}}

    return {
        # Loading a model can take minutes; liveness only starts once the process answers.
        "startupProbe": {
            **get(health),
            "periodSeconds": PROBE_PERIOD,
            "failureThreshold": math.ceil(load / PROBE_PERIOD),
        },
        "livenessProbe": {**get(health), "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
        "readinessProbe": {**get(ready), "periodSeconds": PROBE_PERIOD, "failureThreshold": 2},
    }


def deployment(
    body: dict,
    spec: DeploymentSpec,
    cfg: OperatorConfig,
    revision: int,
    model_uri: str,
    replicas: int,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The apps/v1 Deployment serving `model_uri` as `revision` with `replicas` pods. With
    runtime vllm the pods serve the model's Hugging Face export, which must exist (the reconciler
    waits for it before a revision is made)."""
    name = deployment_name(body["metadata"]["name"], revision)
    labels = revision_labels(body, revision)
    is_vllm = spec.runtime == "vllm"
    if is_vllm:
        env = vllm.env()  # vLLM reads a local copy: no storage credentials in its container
    else:
        env = children.workload_env(body, cfg)
        # The built-in server binds the pod IP (every local pod has its own loopback address).
        env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    key = spec.server.api_key_secret
    if key is not None:
        # The kubelet reads the Secret into the environment; the operator never sees the key.
        ref = {"secretKeyRef": {"name": key.name, "key": key.key}}
        env.append({"name": API_KEY_ENV[spec.runtime], "valueFrom": ref})
    container = {
        "name": CONTAINER,
        "image": spec.image or (cfg.vllm_image if is_vllm else cfg.workload_image),
        "imagePullPolicy": cfg.image_pull_policy,
        "command": _server_command(body, spec, model_uri),
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "resources": children.container_resources(spec.resources),
        **({"volumeMounts": vllm.mounts()} if is_vllm else {}),
        **_probes(spec),
    }
    served = export.served_uri(model_uri) if is_vllm else model_uri
    pod_notes = {ANNOTATION_MODEL_URI: model_uri, **SCRAPE_ANNOTATIONS}
    notes = {ANNOTATION_MODEL_URI: model_uri}
    if is_vllm:
        notes[ANNOTATION_SERVED_URI] = pod_notes[ANNOTATION_SERVED_URI] = served
    pod: dict[str, Any] = {
        "containers": [container],
        # SIGTERM drains in-flight requests (the server's own drain is 30 s).
        "terminationGracePeriodSeconds": 45,
        **children.pod_identity(body, cfg),
        **children.placement(spec.resources),
    }
    if is_vllm:
        pod["initContainers"] = [vllm.init_container(body, cfg, served)]
        pod["volumes"] = vllm.volumes()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **children.child_meta(body, name, COMPONENT, {LABEL_REVISION: str(revision)}),
            "annotations": {**notes, **(annotations or {})},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            # A revision's pod template never changes, so this only matters for spec edits of
            # server options: keep every old pod until its replacement is Ready.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": pod_notes},
                "spec": children.restricted(pod, cfg),
            },
        },
    }


def service(body: dict) -> dict[str, Any]:
    """One Service over every revision: the selector leaves the revision out, so traffic follows
    the Ready pods of whichever revisions exist."""
    name = service_name(body["metadata"]["name"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": children.child_meta(body, name, COMPONENT),
        "spec": {
            "selector": children.pod_labels(body, COMPONENT),
            "ports": [{"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def hpa(body: dict, spec: DeploymentSpec, revision: int) -> dict[str, Any]:
    """An autoscaling/v2 HPA on the stable revision, from the servers' running requests (served
    to the HPA by a Prometheus adapter as a pods metric, under the runtime's own name)."""
    a = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": children.child_meta(body, hpa_name(body["metadata"]["name"]), COMPONENT),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(body["metadata"]["name"], revision),
            },
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": RUNNING_REQUESTS_METRIC[spec.runtime]},
                        "target": {"type": "AverageValue", "averageValue": str(a.target_running_requests)},
                    },
                }
            ],
        },
    }


def desired_total(spec: DeploymentSpec, stable_live: dict | None) -> int:
    """Serving pods wanted in all: spec.replicas, or with autoscaling what the HPA last chose for
    the stable revision (clamped to its bounds)."""
    a = spec.autoscaling
    if not a.enabled:
        return spec.replicas
    current = ((stable_live or {}).get("spec") or {}).get("replicas") or a.min_replicas
    return min(max(current, a.min_replicas), a.max_replicas)
