"""Pieces shared by the Evaluation and Deployment specs: references to other resources and the
pod resources of a workload."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from capstan_api.common import ApiModel

# Quantity strings as Kubernetes writes them: "500m", "2", "4Gi", "1.5G".
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"


class LocalRef(ApiModel):
    """A resource of a known kind in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="name of the resource in the same namespace.")


class PodResources(ApiModel):
    """Requests of each workload pod; limits equal requests for memory and GPUs."""

    cpu: str = Field(
        default="1", pattern=QUANTITY_PATTERN, description="cpu is the CPU request, e.g. 500m or 4."
    )
    memory: str = Field(
        default="4Gi", pattern=QUANTITY_PATTERN, description="memory is the memory request, e.g. 8Gi."
    )
    gpus: int = Field(default=0, ge=0, le=8, description="gpus is the nvidia.com/gpu count; 0 for CPU.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector constrains pod placement."
    )


Device = Literal["auto", "cpu", "cuda"]
