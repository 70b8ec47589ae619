"""Pieces shared by the kinds' specs: references to other resources, the pod resources and
placement of a workload, and who its pods are (ServiceAccount, storage credentials)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from capstan_api.common import NAME_PATTERN, OPTIONAL_NAME_PATTERN, ApiModel, cel

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


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str = Field(
        default="",
        max_length=317,
        pattern=r"^(([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$",
        description="key is the taint key; empty with Exists matches every taint.",
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="operator is Exists or Equal.")
    value: LabelValue = Field(default="", description="value is the taint value for Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="effect to match; empty matches all effects."
    )
    toleration_seconds: int = Field(
        default=-1, ge=-1, description="tolerationSeconds bounds a NoExecute toleration; -1 means forever."
    )


AFFINITY_DESCRIPTION = (
    "affinity is a core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), passed to the "
    "pods as it is; the API server checks it when the pods are created."
)
TOLERATIONS_DESCRIPTION = (
    "tolerations of the pods; pods that ask for GPUs also tolerate the nvidia.com/gpu taint "
    "without saying so."
)


class PodResources(ApiModel):
    """Requests of each workload pod and where it may run; limits equal requests for memory and
    GPUs."""

    cpu: Quantity = Field(default="1", description="cpu is the CPU request, e.g. 500m or 4.")
    memory: Quantity = Field(default="4Gi", description="memory is the memory request, e.g. 8Gi.")
    gpus: int = Field(default=0, ge=0, le=8, description="gpus is the nvidia.com/gpu count; 0 for CPU.")
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="nodeSelector constrains pod placement."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description=TOLERATIONS_DESCRIPTION
    )
    affinity: dict[str, Any] = Field(default_factory=dict, description=AFFINITY_DESCRIPTION)


class StorageAccess(ApiModel):
    """How the workload pods reach object storage."""

    secret_name: str = Field(
        default="",
        max_length=253,
        pattern=OPTIONAL_NAME_PATTERN,
        description="secretName is a Secret in this resource's namespace with AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN and AWS_REGION optional) given to the workload "
        "pods; a pod cannot start while it is missing, and the resource fails naming it. Empty: the "
        "operator's default Secret name (objectStorage.credentialsSecret), used where this "
        "namespace has one; with neither, the pods use the default AWS credential chain (IRSA, "
        "Workload Identity, an instance role) through their ServiceAccount.",
    )


def service_account_field() -> Any:
    """spec.serviceAccountName, the same on every kind."""
    return Field(
        default="",
        max_length=253,
        pattern=OPTIONAL_NAME_PATTERN,
        description="serviceAccountName the workload pods run as, in this resource's namespace (e.g. "
        "one annotated for IRSA or Workload Identity); empty: the operator's default "
        "(workload.serviceAccountName), else the namespace's default ServiceAccount.",
    )


def storage_field() -> Any:
    """spec.storage, the same on every kind."""
    return Field(
        default_factory=StorageAccess, description="storage: the object-storage credentials of the pods."
    )


def start_deadline_field() -> Any:
    """spec.startDeadlineSeconds of a Dataset and an Evaluation (a TrainingRun's start deadline is
    scheduling.gangTimeoutSeconds)."""
    return Field(
        default=600,
        ge=1,
        le=7 * 24 * 3600,
        description="startDeadlineSeconds is how long a workload pod may be unable to start (an image "
        "that cannot be pulled, a missing Secret, refused by admission), counted from its Job's "
        "creation: the reason is named in status meanwhile, and once it has passed the Job is "
        "deleted and the resource fails naming why.",
    )


Device = Literal["auto", "cpu", "cuda"]


class KeyRef(ApiModel):
    """One key of a Secret or ConfigMap in the resource's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description="name of the object.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="key within the object's data.",
    )
    optional: bool = Field(
        default=False, description="optional: a missing object or key leaves the variable unset."
    )


class FieldRef(ApiModel):
    """A field of the pod itself (the downward API)."""

    field_path: str = Field(
        min_length=1,
        max_length=256,
        description="fieldPath, e.g. metadata.name, spec.nodeName, status.podIP or metadata.labels['x'].",
    )


class EnvValueSource(ApiModel):
    """Where an environment variable's value comes from (core/v1 EnvVarSource): exactly one of
    secretKeyRef, configMapKeyRef, fieldRef."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)].filter(x, x).size() == 1",
                "exactly one of secretKeyRef, configMapKeyRef, fieldRef",
            )
        )
    )
    secret_key_ref: KeyRef | None = Field(
        default=None, description="secretKeyRef: a key of a Secret (e.g. HF_TOKEN)."
    )
    config_map_key_ref: KeyRef | None = Field(
        default=None, description="configMapKeyRef: a key of a ConfigMap."
    )
    field_ref: FieldRef | None = Field(default=None, description="fieldRef: a field of the pod.")

    @model_validator(mode="after")
    def _one(self) -> EnvValueSource:
        if sum(x is not None for x in (self.secret_key_ref, self.config_map_key_ref, self.field_ref)) != 1:
            raise ValueError("exactly one of secretKeyRef, configMapKeyRef, fieldRef")
        return self
