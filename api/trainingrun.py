"""TrainingRun spec: what to train, on which data, how, where, and how to survive failures.

Rules that can be checked without running anything are written twice (CEL for the API server,
a pydantic validator for `capstan_trainer.train --validate-only`) with the same message. Rules
that need the data or the model preset (vocabulary, maxSeqLen) are checked by the trainer.
The model, optimizer and FSDP2 sections are in `training`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from capstan_api.common import (
    OPTIONAL_NAME_PATTERN,
    OPTIONAL_URI_PATTERN,
    ApiModel,
    cel,
    cel_set,
    immutable,
)
from capstan_api.lora import LoraSpec
from capstan_api.objective import DpoSpec, Objective
from capstan_api.training import MAX_STEPS, FsdpSpec, ModelSpec, OptimizerSpec
from capstan_api.workload import (
    AFFINITY_DESCRIPTION,
    TOLERATIONS_DESCRIPTION,
    EnvValueSource,
    LabelValue,
    Quantity,
    StorageAccess,
    Toleration,
    service_account_field,
    storage_field,
)

_INIT_FIELDS = ("checkpointUri", "fromTrainingRun", "huggingFace", "replayWithout", "replayFrom")
LORA_NEEDS_INIT = (
    "spec.lora needs spec.init (checkpointUri, fromTrainingRun, huggingFace or a replay): adapters over "
    "random base weights that never train make no sense; drop spec.lora to pretrain from scratch"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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
    """Where the weights start. No field set means from scratch (random init from the seed)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                " + ".join(
                    f"({cel_set(f)} ? 1 : 0)"
                    for f in (
                        "checkpointUri",
                        "fromTrainingRun",
                        "huggingFace",
                        "replayWithout",
                        "replayFrom",
                    )
                )
                + " <= 1",
                "at most one of checkpointUri, fromTrainingRun, huggingFace, replayWithout or replayFrom may be set",
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
    # None, not "": unset, they stay off the wire, so a trainer image older than them still
    # accepts the resolved file the operator writes.
    replay_without: str | None = Field(
        default=None,
        max_length=253,
        pattern=OPTIONAL_NAME_PATTERN,
        description="replayWithout names a TrainingRun in the same namespace to replay on a newer revision "
        "of its datasets (documents removed): this run starts from that run's newest checkpoint before its "
        "first step that saw a removed document (whole state) and trains on from there. Seed, batch, "
        "seqLen, totalSteps and weights must be that run's. The operator resolves it to replayFrom.",
    )
    replay_from: str | None = Field(
        default=None,
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="replayFrom is the checkpoint root of the run to replay (what replayWithout resolves to).",
    )

    hugging_face: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="huggingFace is a Hugging Face Llama directory (config.json, model.safetensors or "
        "model.safetensors.index.json and its shards, tokenizer.json) on any fsspec storage to start "
        "from. The architecture comes from its config.json: spec.model must be left unset, except "
        "maxSeqLen, which may shorten the context. The datasets must be tokenized with its "
        "tokenizer.json (Dataset spec.tokenizer.fromModel).",
    )

    @model_validator(mode="after")
    def _at_most_one(self) -> InitSpec:
        given = [
            self.checkpoint_uri,
            self.from_training_run,
            self.hugging_face,
            self.replay_without,
            self.replay_from,
        ]
        if sum(bool(x) for x in given) > 1:
            raise ValueError(
                "at most one of checkpointUri, fromTrainingRun, huggingFace, replayWithout or replayFrom may be set"
            )
        return self


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
        description="gpusPerNode is the nvidia.com/gpu count each pod gets (request and limit); 0 for "
        "CPU. Pods with GPUs tolerate the nvidia.com/gpu taint.",
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="requests are extra pod resource requests, e.g. {cpu: '8', memory: 64Gi}; an "
        "extended resource named here (vpc.amazonaws.com/efa, rdma/ib) is set as a limit too, as "
        "Kubernetes requires.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="limits are pod resource limits, e.g. {memory: 512Gi, vpc.amazonaws.com/efa: '32'}.",
    )
    shm_size: Quantity = Field(
        default="8Gi",
        description="shmSize bounds /dev/shm, a memory-backed emptyDir that data-loader workers and "
        "NCCL share tensors through (the container default is 64 MB); it counts against the pod's "
        "memory.",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="nodeSelector constrains pod placement."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description=TOLERATIONS_DESCRIPTION
    )
    affinity: dict[str, Any] = Field(default_factory=dict, description=AFFINITY_DESCRIPTION)
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
        description="maxRestarts is the run's one budget of failures: each counts once in "
        "status.restarts, and the run fails when one more would pass it. A failure is a trainer "
        "that crashed (torchrun is given --max-restarts=0 in a fixed-size gang: the pod fails and "
        "the operator recreates the gang, resuming from the newest checkpoint), a lost pod, or a "
        "failed Job; in an elastic gang each crashed pod the Job controller replaced counts too "
        "(its backoffLimit is what is left of the budget). Not counted: pods that stopped after "
        "checkpointing on SIGTERM (suspend, a spec edit, preemption) and pods evicted or preempted "
        "(condition DisruptionTarget). In an elastic gang torchrun also restarts the workers of the "
        "surviving pods when one leaves (a re-rendezvous, up to maxRestarts times per pod): it "
        "cannot tell a peer that left from a local crash.",
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
        "operator tears the gang down and retries; it is also the start deadline: pods that cannot "
        "start (an image that cannot be pulled, a missing Secret, refused by admission) are named "
        "in status meanwhile, and fail the run, naming why, once it has passed.",
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


class PlanSpec(ApiModel):
    """Inputs of the capacity plan (status.plan) the operator computes before creating any pod."""

    assumed_mfu: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="assumedMfu is the model FLOPs utilisation the throughput, ETA and GPU-hours "
        "are estimated with (0-1; 0.4 is typical of a tuned FSDP2 run).",
    )
    gpu_memory_gib: float = Field(
        alias="gpuMemoryGiB",
        default=0,
        ge=0,
        le=4096,
        description="gpuMemoryGiB is each GPU's memory; 0 reads the nvidia.com/gpu.memory label "
        "(MiB, set by GPU feature discovery) of the nodes matching resources.nodeSelector. When "
        "known, a run whose plan needs more is refused before any pod.",
    )
    gpu_product: str = Field(
        default="",
        max_length=253,
        description="gpuProduct names the GPU for its peak FLOP/s (e.g. H100); empty reads the "
        "nodes' nvidia.com/gpu.product label.",
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
            (
                "!has(self.lora) || (has(self.init) && ("
                + " || ".join(f"(has(self.init.{f}) && self.init.{f} != '')" for f in _INIT_FIELDS)
                + "))",
                LORA_NEEDS_INIT,
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
    objective: Objective = Field(
        default="pretrain",
        description=(
            "objective: pretrain (loss on every token), sft (loss only where a chat Dataset's mask is "
            "on, conversations never attending to each other) or dpo (preference pairs); immutable."
        ),
        json_schema_extra=immutable("objective"),
    )
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="dpo settings, read when objective is dpo.")
    init: InitSpec = Field(
        default_factory=InitSpec,
        description="init: from scratch, a checkpoint, or a TrainingRun; immutable.",
        json_schema_extra=immutable("init"),
    )
    # Which weights train and the checkpoints' shape follow from it: fixed once the run exists.
    lora: LoraSpec | None = Field(
        default=None,
        description="lora trains low-rank adapters (rank, alpha, targetModules, dropout) on the "
        "frozen init weights instead of every weight; the export merges them. Needs spec.init. "
        "Absent: full fine-tuning. Immutable.",
        json_schema_extra=immutable("lora"),
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
    plan: PlanSpec = Field(
        default_factory=PlanSpec, description="plan: inputs of the capacity plan in status.plan."
    )
    suspend: bool = Field(
        default=False, description="suspend stops the trainer pods (checkpoints are kept); false resumes."
    )
    image: str = Field(
        default="",
        max_length=1000,
        description="image overrides the operator's workload image for the trainer pods (e.g. one "
        "built for your CUDA driver).",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        max_length=128,
        description="env are extra environment variables of the trainer containers (NCCL_*, "
        "FI_EFA_*, TORCH_*); names the operator sets itself (CAPSTAN_*, AWS_*) are refused.",
        json_schema_extra=cel(
            (
                "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$') && !k.startsWith('CAPSTAN_') && !k.startsWith('AWS_'))",
                "env names must be C identifiers and not start with CAPSTAN_ or AWS_",
            )
        ),
    )
    env_value_from: dict[str, EnvValueSource] = Field(
        default_factory=dict,
        max_length=64,
        description="envValueFrom are trainer environment variables whose values come from a Secret "
        "or ConfigMap key in this namespace, or a pod field (e.g. HF_TOKEN from a Secret), by "
        "name; the same names as env are refused, and none may also be in env.",
        json_schema_extra=cel(
            (
                "self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$') && !k.startsWith('CAPSTAN_') && !k.startsWith('AWS_'))",
                "envValueFrom names must be C identifiers and not start with CAPSTAN_ or AWS_",
            )
        ),
    )
    host_network: bool = Field(
        default=False,
        description="hostNetwork runs the trainer pods in their nodes' network namespace (for "
        "RDMA/EFA/InfiniBand setups that need it): the rendezvous endpoint, pod 0's DNS name, then "
        "resolves to its node's address, the rendezvous port (29400) must be free on each node, "
        "and dnsPolicy is ClusterFirstWithHostNet. Such pods break the Pod Security level "
        "restricted: the namespace must allow privileged.",
    )
    termination_grace_period_seconds: int = Field(
        default=0,
        ge=0,
        le=24 * 3600,
        description="terminationGracePeriodSeconds a trainer pod has to write its checkpoint after "
        "SIGTERM (suspend, preemption, a spec edit) before it is killed. 0 derives it from the "
        "model: 60 s plus the time to write 12 bytes per parameter (weights and Adam moments), "
        "split over minNodes, at 200 MB/s per node.",
    )
    service_account_name: str = service_account_field()
    storage: StorageAccess = storage_field()

    @model_validator(mode="after")
    def _check(self) -> TrainingRunSpec:
        for field, names in (("env", self.env), ("envValueFrom", self.env_value_from)):
            bad_env = [k for k in names if not _ENV_NAME.match(k) or k.startswith(("CAPSTAN_", "AWS_"))]
            if bad_env:
                raise ValueError(
                    f"{field} names must be C identifiers and not start with CAPSTAN_ or AWS_ "
                    f"(got {', '.join(bad_env)})"
                )
        both = sorted(set(self.env) & set(self.env_value_from))
        if both:
            raise ValueError(f"env and envValueFrom both set {', '.join(both)}: give each variable once")
        i = self.init
        if self.lora is not None and not any(
            (i.checkpoint_uri, i.from_training_run, i.hugging_face, i.replay_without, i.replay_from)
        ):
            raise ValueError(LORA_NEEDS_INIT)
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
