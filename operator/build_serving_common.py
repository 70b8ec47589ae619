"""Pod pieces the Evaluation and Deployment builders share: requests and limits from a
`PodResources`, and placement. Pure functions: no I/O."""

from __future__ import annotations

from typing import Any

from capstan_operator.api.workload import PodResources

GPU = "nvidia.com/gpu"


def container_resources(res: PodResources) -> dict[str, Any]:
    """Requests from the spec; memory and GPUs limited to what is requested (an OOM is the pod's
    own, not its neighbours'), CPU left unlimited so loading a model is not throttled."""
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, Any] = {"memory": res.memory}
    if res.gpus:
        requests[GPU] = res.gpus
        limits[GPU] = res.gpus
    return {"requests": requests, "limits": limits}


def placement(res: PodResources) -> dict[str, Any]:
    """Pod spec fields that place the pod: the node selector, and the GPU taint toleration."""
    out: dict[str, Any] = {}
    if res.node_selector:
        out["nodeSelector"] = dict(res.node_selector)
    if res.gpus:
        out["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return out
