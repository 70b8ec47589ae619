"""TrainingRun spec: what to train, on which data, how, where, and how to survive failures.

Rules that can be checked without running anything are written twice (CEL for the API server,
a pydantic validator for `capstan_trainer.train --validate-only`) with the same message. Rules
that need the data or the model preset (vocabulary, maxSeqLen) are checked by the trainer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from capstan_api.common import ApiModel, cel, immutable

PRESET_NAMES = ("test", "125m", "350m", "1b", "8b")


def _set(field: str) -> str:
    """CEL: a string field is present and non-empty (works with or without schema defaulting)."""
    return f"(has(self.{field}) && self.{field} != '')"


class DatasetSource(ApiModel):
    """One entry of the training mixture: a Dataset by name, or a manifest URI directly."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (f"{_set('datasetRef')} != {_set('uri')}", "exactly one of datasetRef or uri must be set")
        )
    )

    dataset_ref: str = Field(
        default="",
        description="datasetRef is the name of a Dataset in the same namespace; the operator "
        "resolves it to that Dataset's manifest URI once it is Ready.",
    )
    uri: str = Field(
        default="",
        description="uri is a token-shard manifest (manifest.json or its folder) on any fsspec "
        "storage (s3://, file://); lets the trainer run without a cluster.",
    )
    weight: float = Field(
        default=1.0,
        gt=0,
        description="weight is this source's share of training sequences, relative to the "
        "other entries' weights (normalised; resolution 1/1024).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetSource:
        if bool(self.dataset_ref) == bool(self.uri):
            raise ValueError("exactly one of datasetRef or uri must be set")
        return self


class ModelSpec(ApiModel):
    """A preset shape with optional explicit overrides; 0 means "the preset's value"."""

    preset: Literal["test", "125m", "350m", "1b", "8b"] = Field(
        default="125m",
        description="preset is the base shape: test (~1M parameters, for CPU tests), 125m, 350m, 1b, 8b.",
    )
    dim: int = Field(default=0, ge=0, description="dim is the residual width; 0 keeps the preset's.")
    n_layers: int = Field(
        default=0, ge=0, description="nLayers is the number of blocks; 0 keeps the preset's."
    )
    n_heads: int = Field(default=0, ge=0, description="nHeads is the query head count; 0 keeps the preset's.")
    n_kv_heads: int = Field(
        default=0,
        ge=0,
        description="nKvHeads is the key/value head count (divides nHeads); 0 keeps the preset's.",
    )
    ffn_dim: int = Field(
        default=0, ge=0, description="ffnDim is the SwiGLU hidden width; 0 keeps the preset's."
    )
    max_seq_len: int = Field(
        default=0, ge=0, description="maxSeqLen is the longest context in tokens; 0 keeps the preset's."
    )
    vocab_size: int = Field(
        default=0, ge=0, description="vocabSize is the embedding rows; 0 takes the dataset tokenizer's size."
    )
    rope_theta: float = Field(
        default=0.0, ge=0, description="ropeTheta is the RoPE base; 0 keeps the preset's."
    )
    norm_eps: float = Field(
        default=0.0, ge=0, description="normEps is the RMSNorm epsilon; 0 keeps the preset's."
    )
    tie_embeddings: Literal["preset", "tied", "untied"] = Field(
        default="preset", description="tieEmbeddings shares the output projection with the embedding, or not."
    )


class InitSpec(ApiModel):
    """Where the weights start. Neither field set means from scratch (random init from the seed)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                f"!({_set('checkpointUri')} && {_set('fromTrainingRun')})",
                "at most one of checkpointUri or fromTrainingRun may be set",
            )
        )
    )

    checkpoint_uri: str = Field(
        default="",
        description="checkpointUri is a checkpoint step folder or root to start from (weights only; "
        "the architecture comes from its capstan.json and spec.model is ignored).",
    )
    from_training_run: str = Field(
        default="",
        description="fromTrainingRun names a TrainingRun in the same namespace whose last checkpoint "
        "is the start (fine-tuning, continued training); the operator resolves it to checkpointUri.",
    )

    @model_validator(mode="after")
    def _at_most_one(self) -> InitSpec:
        if self.checkpoint_uri and self.from_training_run:
            raise ValueError("at most one of checkpointUri or fromTrainingRun may be set")
        return self


class OptimizerSpec(ApiModel):
    """AdamW with linear warmup and cosine decay; batch sizes in tokens and sequences."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.globalBatchTokens % (self.microBatch * self.seqLen) == 0",
                "globalBatchTokens must be divisible by microBatch x seqLen",
            ),
            ("self.minLr <= self.lr", "minLr must not exceed lr"),
            ("self.warmupSteps < self.totalSteps", "warmupSteps must be less than totalSteps"),
        )
    )

    global_batch_tokens: int = Field(
        default=524288,
        gt=0,
        description="globalBatchTokens is the tokens per optimizer step over all processes; a multiple "
        "of microBatch x seqLen x world size (gradient accumulation makes up the rest).",
    )
    micro_batch: int = Field(
        default=8, gt=0, description="microBatch is the sequences per process per forward pass."
    )
    seq_len: int = Field(default=2048, gt=0, description="seqLen is the training sequence length in tokens.")
    lr: float = Field(default=3e-4, gt=0, description="lr is the peak learning rate, reached after warmup.")
    min_lr: float = Field(
        default=3e-5, ge=0, description="minLr is the learning rate at the end of the cosine decay."
    )
    warmup_steps: int = Field(
        default=100, ge=0, description="warmupSteps is the linear warmup length in steps."
    )
    total_steps: int = Field(
        default=1000, gt=0, description="totalSteps is the number of optimizer steps to run."
    )
    weight_decay: float = Field(
        default=0.1, ge=0, description="weightDecay is AdamW's decoupled decay on matrices (not norms)."
    )
    betas: list[float] = Field(
        default_factory=lambda: [0.9, 0.95],
        min_length=2,
        max_length=2,
        description="betas are AdamW's (beta1, beta2), each in [0, 1).",
    )
    grad_clip: float = Field(
        default=1.0, ge=0, description="gradClip is the max global gradient norm; 0 disables clipping."
    )
    seed: int = Field(
        default=1234,
        ge=0,
        description="seed fixes the initialisation and the data order (a pure function of seed, "
        "manifest and sequence index, whatever the world size).",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="precision of parameters in compute: auto is bf16 (fp32 reduce) on GPU, fp32 on CPU.",
    )

    @model_validator(mode="after")
    def _check(self) -> OptimizerSpec:
        per_micro = self.micro_batch * self.seq_len
        if self.global_batch_tokens % per_micro:
            raise ValueError(
                f"globalBatchTokens must be divisible by microBatch x seqLen "
                f"({self.global_batch_tokens} % ({self.micro_batch} x {self.seq_len}) != 0)"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"minLr must not exceed lr ({self.min_lr} > {self.lr})")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmupSteps must be less than totalSteps ({self.warmup_steps} >= {self.total_steps})"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {self.betas}")
        return self

    @property
    def global_batch_sequences(self) -> int:
        return self.global_batch_tokens // self.seq_len


class FsdpSpec(ApiModel):
    """FSDP2 options."""

    reshard_after_forward: bool = Field(
        default=True,
        description="reshardAfterForward frees gathered parameters after forward (less memory, "
        "one more all-gather in backward).",
    )
    activation_checkpointing: Literal["none", "full"] = Field(
        default="none", description="activationCheckpointing recomputes each block's activations in backward."
    )
    compile: bool = Field(default=False, description="compile applies torch.compile to each block.")


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str = Field(default="", description="key is the taint key; empty with Exists matches every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="operator is Exists or Equal.")
    value: str = Field(default="", description="value is the taint value for Equal.")
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
        default=1, ge=1, description="minNodes is the fewest nodes (pods) training continues with."
    )
    max_nodes: int = Field(
        default=1, ge=1, description="maxNodes is the most nodes the elastic job scales to."
    )
    nproc_per_node: int = Field(
        default=1,
        ge=1,
        description="nprocPerNode is the trainer processes per node (one per GPU on GPU nodes).",
    )
    gpus_per_node: int = Field(
        default=0, ge=0, description="gpusPerNode is the nvidia.com/gpu count each pod requests; 0 for CPU."
    )
    requests: dict[str, str] = Field(
        default_factory=dict,
        description="requests are extra pod resource requests, e.g. {cpu: '8', memory: 64Gi}.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector constrains pod placement."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="tolerations for the trainer pods."
    )
    priority_class_name: str = Field(
        default="", description="priorityClassName for the trainer pods; empty uses the cluster default."
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
        description="uri is the checkpoint root (s3://bucket/prefix or file://); step folders and "
        "progress.json go under it. Empty: the operator fills in its default artifact location.",
    )
    interval_steps: int = Field(
        default=500, ge=1, description="intervalSteps between checkpoints (and at the end)."
    )
    keep_last: int = Field(
        default=3, ge=1, description="keepLast is how many committed checkpoints are kept."
    )


class EarlyStoppingSpec(ApiModel):
    """Stop when validation loss stops improving."""

    patience: int = Field(
        default=0,
        ge=0,
        description="patience is evaluations without improvement before stopping; 0 disables it.",
    )
    min_delta: float = Field(default=0.0, ge=0, description="minDelta is the smallest decrease that counts.")


class EvalSpec(ApiModel):
    """Periodic validation loss on each source's held-out split."""

    interval_steps: int = Field(
        default=0, ge=0, description="intervalSteps between evaluations; 0 disables them."
    )
    batches: int = Field(
        default=4,
        ge=1,
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
        description="maxRestarts is torchrun's --max-restarts: whole-gang restarts (resuming from the "
        "newest checkpoint) before the run fails.",
    )


class SchedulingSpec(ApiModel):
    """Gang scheduling: all trainer pods run together or none does."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.scheduler != 'kueue' || " + _set("queueName"),
                "queueName is required when scheduler is kueue",
            )
        )
    )

    scheduler: Literal["native", "kueue", "volcano"] = Field(
        default="native",
        description="scheduler: native (the operator's gang timeout guard), kueue (queue label on a "
        "suspended Job) or volcano (PodGroup).",
    )
    queue_name: str = Field(default="", description="queueName is the Kueue LocalQueue (or Volcano queue).")
    gang_timeout_seconds: int = Field(
        default=600,
        ge=1,
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
        min_length=1, description="datasets is the training mixture: one or more sources with weights."
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
