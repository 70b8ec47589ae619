"""TrainingRun spec: what to train, on which data, how, where, and how to survive failures.

Rules that can be checked without running anything are written twice (CEL for the API server,
a pydantic validator for `capstan_trainer.train --validate-only`) with the same message. Rules
that need the data or the model preset (vocabulary, maxSeqLen) are checked by the trainer.
The model, optimizer and FSDP2 sections are in `training`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from capstan_api.common import (
    OPTIONAL_NAME_PATTERN,
    OPTIONAL_URI_PATTERN,
    ApiModel,
    cel,
    cel_set,
    immutable,
)
from capstan_api.training import MAX_STEPS, FsdpSpec, ModelSpec, OptimizerSpec
from capstan_api.workload import LabelValue, Quantity

# More nodes than any cluster gives one job, fewer than a typo asks for.
MAX_NODES = 4096


class DatasetSource(ApiModel):
    """One entry of the training mixture: a Dataset by name, or a manifest URI directly."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (f"{cel_set('datasetRef')} != {cel_set('uri')}", "exactly one of datasetRef or uri must be set")
        )
    )

    dataset_ref: str = Field(
        default="",
        max_length=253,
        pattern=OPTIONAL_NAME_PATTERN,
        description="datasetRef is the name of a Dataset in the same namespace; the operator "
        "resolves it to that Dataset's manifest URI once it is Ready.",
    )
    uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="uri is a token-shard manifest (manifest.json or its folder) on any fsspec "
        "storage (s3://, file://); lets the trainer run without a cluster.",
    )
    weight: float = Field(
        default=1.0,
        gt=0,
        le=1e6,
        description="weight is this source's share of training sequences, relative to the "
        "other entries' weights (normalised; resolution 1/1024).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetSource:
        if bool(self.dataset_ref) == bool(self.uri):
            raise ValueError("exactly one of datasetRef or uri must be set")
        return self


class InitSpec(ApiModel):
    """Where the weights start. Neither field set means from scratch (random init from the seed)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                f"!({cel_set('checkpointUri')} && {cel_set('fromTrainingRun')})",
                "at most one of checkpointUri or fromTrainingRun may be set",
            )
        )
    )

    checkpoint_uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="checkpointUri is a checkpoint step folder or root to start from (weights only; "
        "the architecture comes from its capstan.json and spec.model is ignored).",
    )
    from_training_run: str = Field(
        default="",
        max_length=253,
        pattern=OPTIONAL_NAME_PATTERN,
        description="fromTrainingRun names a TrainingRun in the same namespace whose last checkpoint "
        "is the start (fine-tuning, continued training); the operator resolves it to checkpointUri.",
    )

    @model_validator(mode="after")
    def _at_most_one(self) -> InitSpec:
        if self.checkpoint_uri and self.from_training_run:
            raise ValueError("at most one of checkpointUri or fromTrainingRun may be set")
        return self


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


class ResourcesSpec(ApiModel):
    """Nodes and processes; the world size is nodes x nprocPerNode."""

    model_config = ConfigDict(
        json_schema_extra=cel(("self.minNodes <= self.maxNodes", "minNodes must not exceed maxNodes"))
    )

    min_nodes: int = Field(
        default=1,
        ge=1,
        le=MAX_NODES,
        description="minNodes is the fewest nodes (pods) training continues with.",
    )
    max_nodes: int = Field(
        default=1, ge=1, le=MAX_NODES, description="maxNodes is the most nodes the elastic job scales to."
    )
    nproc_per_node: int = Field(
        default=1,
        ge=1,
        le=64,
        description="nprocPerNode is the trainer processes per node (one per GPU on GPU nodes).",
    )
    gpus_per_node: int = Field(
        default=0,
        ge=0,
        le=16,
        description="gpusPerNode is the nvidia.com/gpu count each pod requests; 0 for CPU.",
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="requests are extra pod resource requests, e.g. {cpu: '8', memory: 64Gi}.",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="nodeSelector constrains pod placement."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="tolerations for the trainer pods."
    )
    priority_class_name: str = Field(
        default="",
        max_length=253,
        pattern=OPTIONAL_NAME_PATTERN,
        description="priorityClassName for the trainer pods; empty uses the cluster default.",
    )

    @model_validator(mode="after")
    def _check(self) -> ResourcesSpec:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes must not exceed maxNodes ({self.min_nodes} > {self.max_nodes})")
        return self


class CheckpointSpec(ApiModel):
    """Where and how often to checkpoint."""

    uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="uri is the checkpoint root (s3://bucket/prefix or file://); step folders and "
        "progress.json go under it. Empty: the operator fills in its default artifact location.",
    )
    interval_steps: int = Field(
        default=500, ge=1, le=MAX_STEPS, description="intervalSteps between checkpoints (and at the end)."
    )
    keep_last: int = Field(
        default=3, ge=1, le=1000, description="keepLast is how many committed checkpoints are kept."
    )


class EarlyStoppingSpec(ApiModel):
    """Stop when validation loss stops improving."""

    patience: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="patience is evaluations without improvement before stopping; 0 disables it.",
    )
    min_delta: float = Field(
        default=0.0, ge=0, le=100, description="minDelta is the smallest decrease that counts."
    )


class EvalSpec(ApiModel):
    """Periodic validation loss on each source's held-out split."""

    interval_steps: int = Field(
        default=0, ge=0, le=MAX_STEPS, description="intervalSteps between evaluations; 0 disables them."
    )
    batches: int = Field(
        default=4,
        ge=1,
        le=100_000,
        description="batches is how many global batches of validation sequences each evaluation uses.",
    )
    early_stopping: EarlyStoppingSpec = Field(
        default_factory=EarlyStoppingSpec, description="earlyStopping on validation loss."
    )


class FailurePolicySpec(ApiModel):
    """How many failures the run survives."""

    max_restarts: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="maxRestarts is torchrun's --max-restarts: whole-gang restarts (resuming from the "
        "newest checkpoint) before the run fails.",
    )


class SchedulingSpec(ApiModel):
    """Gang scheduling: all trainer pods run together or none does."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.scheduler != 'kueue' || " + cel_set("queueName"),
                "queueName is required when scheduler is kueue",
            )
        )
    )

    scheduler: Literal["native", "kueue", "volcano"] = Field(
        default="native",
        description="scheduler: native (the operator's gang timeout guard), kueue (queue label on a "
        "suspended Job) or volcano (PodGroup).",
    )
    queue_name: str = Field(
        default="",
        max_length=253,
        pattern=OPTIONAL_NAME_PATTERN,
        description="queueName is the Kueue LocalQueue (or Volcano queue).",
    )
    gang_timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=7 * 24 * 3600,
        description="gangTimeoutSeconds is how long all pods may take to be running before the "
        "operator tears the gang down and retries.",
    )

    @model_validator(mode="after")
    def _check(self) -> SchedulingSpec:
        if self.scheduler == "kueue" and not self.queue_name:
            raise ValueError("queueName is required when scheduler is kueue")
        return self


class MetricsSpec(ApiModel):
    """Metrics reporting."""

    interval_steps: int = Field(
        default=10,
        ge=1,
        le=MAX_STEPS,
        description="intervalSteps between metrics lines on stdout and progress.json updates.",
    )


class TrainingRunSpec(ApiModel):
    """TrainingRun desired state."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "size(self.datasets) >= 1",
                "datasets needs at least one entry",
            ),
            (
                "(self.optimizer.globalBatchTokens / self.optimizer.seqLen) % (self.optimizer.microBatch * "
                "self.resources.minNodes * self.resources.nprocPerNode) == 0 && "
                "(self.optimizer.globalBatchTokens / self.optimizer.seqLen) % (self.optimizer.microBatch * "
                "self.resources.maxNodes * self.resources.nprocPerNode) == 0",
                "global batch sequences must be divisible by microBatch x world size at every node count",
            ),
        )
    )

    datasets: list[DatasetSource] = Field(
        min_length=1,
        max_length=64,
        description="datasets is the training mixture: one or more sources with weights.",
    )
    # A run's checkpoints only load into the shape they were saved from, and from the start they
    # were made from: both are fixed once the run exists.
    model: ModelSpec = Field(
        default_factory=ModelSpec,
        description="model shape: a preset plus overrides; immutable.",
        json_schema_extra=immutable("model"),
    )
    init: InitSpec = Field(
        default_factory=InitSpec,
        description="init: from scratch, a checkpoint, or a TrainingRun; immutable.",
        json_schema_extra=immutable("init"),
    )
    optimizer: OptimizerSpec = Field(
        default_factory=OptimizerSpec, description="optimizer and batch settings."
    )
    fsdp: FsdpSpec = Field(default_factory=FsdpSpec, description="fsdp options for FSDP2.")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="resources: nodes and processes."
    )
    checkpoint: CheckpointSpec = Field(
        default_factory=CheckpointSpec, description="checkpoint location and cadence."
    )
    eval: EvalSpec = Field(
        default_factory=EvalSpec, description="eval: periodic validation and early stopping."
    )
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="metrics reporting cadence.")
    failure_policy: FailurePolicySpec = Field(
        default_factory=FailurePolicySpec, description="failurePolicy: restarts before failing."
    )
    scheduling: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="scheduling: gang and queues."
    )
    suspend: bool = Field(
        default=False, description="suspend stops the trainer pods (checkpoints are kept); false resumes."
    )

    @model_validator(mode="after")
    def _check(self) -> TrainingRunSpec:
        seqs = self.optimizer.global_batch_sequences
        r = self.resources
        # Every node count an elastic job may run at must split the batch evenly (CEL checks the ends).
        for nodes in range(r.min_nodes, r.max_nodes + 1):
            world = nodes * r.nproc_per_node
            if seqs % (self.optimizer.micro_batch * world):
                raise ValueError(
                    "global batch sequences must be divisible by microBatch x world size at every node count "
                    f"({seqs} sequences = {self.optimizer.global_batch_tokens} tokens / seqLen "
                    f"{self.optimizer.seq_len}, not divisible by microBatch {self.optimizer.micro_batch} "
                    f"x world size {world} at {nodes} nodes)"
                )
        return self
