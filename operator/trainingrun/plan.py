"""The capacity plan in status.plan, and refusing a run that cannot fit before any pod.

GPU memory comes from spec.plan.gpuMemoryGiB or else the nvidia.com/gpu.memory label (MiB) that
GPU feature discovery puts on GPU nodes, read from the nodes matching resources.nodeSelector:
the smallest one, since the gang may land on any of them.
"""

from __future__ import annotations

import logging

from capstan_api import capacity
from capstan_api.modelshape import ModelConfig
from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import kube

log = logging.getLogger(__name__)
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def gpu_of(nodes: list[dict]) -> tuple[float | None, str]:
    """(GiB per GPU, product) of the labelled node with the least GPU memory; (None, "") if none."""
    labelled = []
    for n in nodes:
        labels = n["metadata"].get("labels") or {}
        mib = labels.get(GPU_MEMORY_LABEL, "")
        if mib.isdigit():
            labelled.append((int(mib) / 1024, labels.get(GPU_PRODUCT_LABEL, "")))
    return min(labelled, default=(None, ""))


def compute(
    spec: TrainingRunSpec, model: ModelConfig | None = None
) -> tuple[capacity.CapacityPlan, str | None]:
    """(the plan, why the run cannot fit or None); `model`: the shape when spec.model does not
    give it. Nodes are listed only for a GPU run that does not give both figures itself."""
    memory, product = None, ""
    p = spec.plan
    if spec.resources.gpus_per_node and not (p.gpu_memory_gib and p.gpu_product):
        selector = ",".join(f"{k}={v}" for k, v in spec.resources.node_selector.items())
        try:
            memory, product = gpu_of(kube.list_nodes(selector))
        except kube.ApiException as exc:
            if exc.status != 403:
                raise
            # A chart installed without the nodes rule (rbac.create=false): plan without them.
            log.warning("cannot list nodes (403): GPU memory unknown; spec.plan.gpuMemoryGiB gives it")
    plan = capacity.plan(spec, memory, product, model)
    return plan, capacity.refusal(spec, plan, model)
