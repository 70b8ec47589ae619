"""Pieces shared by the Evaluation and Deployment specs: references to other resources and the
pod resources of a workload."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from capstan_api.common import NAME_PATTERN, ApiModel

# A quantity as resource.Quantity parses it ("500m", "2", "4Gi", "1.5G", "1e3"), never negative.
QUANTITY_PATTERN = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
Quantity = Annotated[str, Field(max_length=64, pattern=QUANTITY_PATTERN)]
# A label value: at most 63 characters, alphanumeric at both ends, '-', '_', '.' inside.
LabelValue = Annotated[str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]


class LocalRef(ApiModel):
    """A resource of a known kind in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="name of the resource in the same namespace (a DNS-1123 subdomain).",
    )


class PodResources(ApiModel):
    """Requests of each workload pod; limits equal requests for memory and GPUs."""

    cpu: Quantity = Field(default="1", description="cpu is the CPU request, e.g. 500m or 4.")
    memory: Quantity = Field(default="4Gi", description="memory is the memory request, e.g. 8Gi.")
    gpus: int = Field(default=0, ge=0, le=8, description="gpus is the nvidia.com/gpu count; 0 for CPU.")
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="nodeSelector constrains pod placement."
    )


Device = Literal["auto", "cpu", "cuda"]
