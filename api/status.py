"""Status models of the four kinds. The CRD generator turns them into the status schemas; the
reconcilers write these fields (as wire-name dicts) and nothing else.

Phases are plain strings with the allowed values listed, so `kubectl get` reads them as words.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from capstan_api.capacity import CapacityPlan
from capstan_api.common import ApiModel, Condition
from capstan_api.drift import DriftScore
from capstan_api.lineage import ReplayInfo, RevisionUse, RuleCount
from capstan_api.mitigation import AugmentationCounts, ToxicityCounts
from capstan_api.objective import DpoFigures

# Condition types (module constants, as the style guide asks).
READY = "Ready"
WAITING = "Waiting"
FAILED = "Failed"
GANG_SCHEDULED = "GangScheduled"
LICENSE_NOT_ALLOWED = "LicenseNotAllowed"
SUSPENDED = "Suspended"
PASSED = "Passed"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
"""DEGRADED (Deployment): a scheduled Evaluation of the served model failed its gates."""
DRIFT = "Drift"
"""DRIFT (Deployment): live prompts drifted from the training data past spec.drift.threshold."""


class Phase:
    """status.phase values; each kind uses the subset its status model below lists."""

    PENDING = "Pending"
    WAITING = "Waiting"
    SCHEDULING = "Scheduling"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    EARLY_STOPPED = "EarlyStopped"
    FAILED = "Failed"
    READY = "Ready"
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    DEGRADED = "Degraded"
    # Only in a trainer's progress.json (capstan_api.files.TrainingProgress):
    STARTING = "Starting"
    STOPPED = "Stopped"
    """STOPPED: the trainers checkpointed the step they reached on SIGTERM and exited."""


RUN_DONE = (Phase.SUCCEEDED, Phase.EARLY_STOPPED)
"""The phases of a TrainingRun whose last checkpoint is final (what Evaluations and Deployments wait for)."""


class StatusBase(ApiModel):
    """Fields every kind's status has."""

    observed_generation: int = Field(
        default=0, description="observedGeneration is the spec generation this status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="conditions are the latest observations of the resource."
    )
    message: str = Field(default="", description="message is a one-line summary of the current state.")
    start_time: str | None = Field(default=None, description="startTime is when the work started (RFC 3339).")
    completion_time: str | None = Field(
        default=None, description="completionTime is when the work finished (RFC 3339)."
    )


class StepCount(ApiModel):
    name: str = Field(
        description="name of the cleaning step (read, licence, filters, toxicity, exactDedup, nearDedup, augment)."
    )
    documents_in: int = Field(default=0, description="documentsIn is how many documents entered the step.")
    documents_out: int = Field(default=0, description="documentsOut is how many documents left the step.")


class StageStatus(ApiModel):
    name: str = Field(
        description="name of the preparation stage (map, dedup, cluster, tokenize, shard, finish), one Job each."
    )
    workers: int = Field(description="workers is the stage's pod count (its Job's completions).")
    workers_done: int = Field(default=0, description="workersDone is how many of its pods succeeded.")
    documents_in: int = Field(
        default=0, description="documentsIn is the documents its workers read so far (their progress files)."
    )
    documents_out: int = Field(
        default=0, description="documentsOut is the documents its workers kept or wrote so far."
    )
    phase: Literal["Pending", "Running", "Complete", "Failed"] = Field(
        default="Pending", description="phase is Pending (no Job yet), Running, Complete or Failed."
    )


class DatasetStatus(StatusBase):
    phase: Literal["Pending", "Waiting", "Running", "Ready", "Failed"] = Field(
        default="Pending", description="phase is Pending, Waiting, Running, Ready or Failed."
    )
    revision: int | None = Field(
        default=None,
        description="revision is the preparation this status describes (in flight or done): its outputs "
        "are under <output.uri>/revisions/<revision>/; a spec edit that changes what is prepared starts "
        "the next one, and earlier revisions stay.",
    )
    stages: list[StageStatus] = Field(
        default_factory=list, description="stages are the preparation stages in order, each a Job."
    )
    steps: list[StepCount] = Field(
        default_factory=list,
        description="steps are the document counts in and out of each cleaning step, once Ready.",
    )
    documents: int | None = Field(default=None, description="documents is how many documents were kept.")
    tokens: int | None = Field(default=None, description="tokens is the number of training tokens written.")
    validation_tokens: int | None = Field(
        default=None, description="validationTokens is the number of validation tokens written."
    )
    shards: int | None = Field(default=None, description="shards is the number of token shards written.")
    toxicity: ToxicityCounts | None = Field(
        default=None, description="toxicity is what the toxicity filter dropped, per category, once Ready."
    )
    augmentation: AugmentationCounts | None = Field(
        default=None, description="augmentation is the counterfactual copies added, once Ready."
    )
    manifest_uri: str | None = Field(default=None, description="manifestUri is the URI of manifest.json.")
    datasheet_uri: str | None = Field(default=None, description="datasheetUri is the URI of the datasheet.")
    fingerprint: str | None = Field(
        default=None, description="fingerprint is the content hash of the prepared dataset."
    )
    removed: int | None = Field(
        default=None,
        description="removed is how many documents spec.exclusions removed from this revision (absent without rules).",
    )
    removed_by_rule: list[RuleCount] = Field(
        default_factory=list, description="removedByRule counts the documents each exclusion rule removed."
    )
    used_by: list[RevisionUse] = Field(
        default_factory=list,
        description="usedBy lists, per revision, the TrainingRuns trained on it and the Evaluations and "
        "Deployments built from those (reverse lineage).",
    )


class CheckpointRef(ApiModel):
    uri: str = Field(description="uri of the checkpoint folder.")
    step: int = Field(description="step the checkpoint was taken at.")


class UnreadableCheckpoint(CheckpointRef):
    reason: str = Field(default="", description="reason the checkpoint could not be loaded.")


class TrainingRunStatus(StatusBase):
    phase: Literal[
        "Pending", "Waiting", "Scheduling", "Running", "Suspended", "Succeeded", "EarlyStopped", "Failed"
    ] = Field(
        default="Pending",
        description="phase is Pending, Waiting, Scheduling, Running, Suspended, Succeeded, EarlyStopped or Failed.",
    )
    step: int = Field(default=0, description="step is the last optimizer step the trainer reported.")
    total_steps: int | None = Field(default=None, description="totalSteps is the step the run ends at.")
    progress: str = Field(default="", description="progress is step/totalSteps, for kubectl get.")
    tokens_seen: int = Field(default=0, description="tokensSeen is the number of training tokens consumed.")
    loss: float | None = Field(default=None, description="loss is the last reported training loss.")
    eval_loss: float | None = Field(default=None, description="evalLoss is the last validation loss.")
    overfitting: bool = Field(
        default=False,
        description="overfitting is true when, at the last evaluation, the validation loss rose "
        "while the mean training loss since the evaluation before fell (the model memorises).",
    )
    tokens_per_sec: float | None = Field(
        default=None, description="tokensPerSec is the last reported training throughput (all ranks)."
    )
    mfu: float | None = Field(
        default=None, description="mfu is the model FLOPs utilisation (0-1); absent on CPU."
    )
    loss_tokens: int | None = Field(
        default=None,
        description="lossTokens is how many targets carried loss in the last reported step (sft: the assistant tokens).",
    )
    trainable_params: int | None = Field(
        default=None,
        description="trainableParams is how many parameters the optimizer updates (with spec.lora "
        "the adapters'; else all of totalParams).",
    )
    total_params: int | None = Field(
        default=None, description="totalParams is the trained model's parameter count, adapters included."
    )
    dpo: DpoFigures | None = Field(
        default=None,
        description="dpo holds DPO's rewards, margin and accuracy at the last reported step (objective dpo).",
    )
    last_checkpoint: CheckpointRef | None = Field(
        default=None, description="lastCheckpoint is the newest committed checkpoint."
    )
    unreadable_checkpoints: list[UnreadableCheckpoint] = Field(
        default_factory=list,
        description="unreadableCheckpoints are committed checkpoints that failed to load; the run "
        "resumed from an older one.",
    )
    restarts: int = Field(default=0, description="restarts counts gang recreations after failures.")
    world_size: int | None = Field(default=None, description="worldSize is the number of trainer processes.")
    nodes: int | None = Field(default=None, description="nodes is the number of trainer pods running.")
    output_uri: str | None = Field(default=None, description="outputUri is where checkpoints are written.")
    replay: ReplayInfo | None = Field(
        default=None,
        description="replay says where a replay (init.replayWithout) started: the checkpoint, the first "
        "exposure to a removed document, and the steps saved against training from scratch.",
    )
    data_removed: str = Field(
        default="",
        description="dataRemoved names the revision trained on that held documents removed since, "
        "with the count (for kubectl get; the DataRemoved condition says the same).",
    )
    trained_on: list[str] = Field(
        default_factory=list,
        description="trainedOn are the manifest URIs of spec.datasets (in order) the first gang trained on, "
        "each a Dataset revision's for a datasetRef: what reverse lineage and DataRemoved read.",
    )
    plan: CapacityPlan | None = Field(
        default=None,
        description="plan is the capacity plan computed before any pod: parameters, FLOPs per "
        "token, memory per GPU, tokens/s, ETA and GPU-hours (estimates).",
    )


class GateResult(ApiModel):
    metric: str = Field(description="metric the gate checks.")
    value: float | None = Field(default=None, description="value of the metric (absent if not computed).")
    min: float | None = Field(default=None, description="min is the lowest passing value, if any.")
    max: float | None = Field(default=None, description="max is the highest passing value, if any.")
    passed: bool = Field(description="passed is whether the value is within the bounds.")


class EvaluationStatus(StatusBase):
    phase: Literal["Pending", "Waiting", "Running", "Succeeded", "Failed"] = Field(
        default="Pending", description="phase is Pending, Waiting, Running, Succeeded or Failed."
    )
    passed: bool | None = Field(default=None, description="passed is true when every gate passed.")
    model_uri: str | None = Field(default=None, description="modelUri is the checkpoint that was evaluated.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="metrics maps every metric name to its value."
    )
    gates: list[GateResult] = Field(
        default_factory=list, description="gates are each gate's value and verdict."
    )
    results_uri: str | None = Field(default=None, description="resultsUri is the URI of results.json.")
    model_card_uri: str | None = Field(default=None, description="modelCardUri is the URI of the model card.")
    training_summary_uri: str | None = Field(
        default=None,
        description="trainingSummaryUri is the URI of the training-data summary (EU AI Act template) "
        "beside the model card, with its JSON form next to it.",
    )
    history: list[EvaluationRun] = Field(
        default_factory=list, description="history lists the last 10 runs, newest last."
    )
    last_schedule_time: str | None = Field(
        default=None, description="lastScheduleTime is the schedule time the current run is for."
    )
    next_schedule_time: str | None = Field(
        default=None, description="nextScheduleTime is when spec.schedule runs the evaluation next."
    )


class EvaluationRun(ApiModel):
    time: str = Field(description="time the run completed (RFC 3339).")
    model_uri: str | None = Field(default=None, description="modelUri is the model the run evaluated.")
    passed: bool | None = Field(default=None, description="passed is whether every gate passed.")
    failed_gates: list[str] = Field(
        default_factory=list, description="failedGates names the metrics whose gates failed."
    )
    scheduled: str = Field(default="", description="scheduled is the schedule time of the run, if any.")


class RolloutRecord(ApiModel):
    revision: int = Field(description="revision number of the model rollout.")
    model_uri: str = Field(description="modelUri is the model the revision served.")
    outcome: Literal["Promoted", "RolledBack", "Superseded", "InProgress"] = Field(
        description="outcome is Promoted, RolledBack, Superseded or InProgress."
    )
    reason: str = Field(default="", description="reason explains the outcome (e.g. the failed analysis).")
    time: str = Field(default="", description="time of the outcome (RFC 3339).")


class DeploymentStatus(StatusBase):
    phase: Literal["Pending", "Waiting", "Progressing", "Available", "Degraded", "Failed"] = Field(
        default="Pending",
        description="phase is Pending, Waiting, Progressing, Available, Degraded or Failed.",
    )
    data_removed: str = Field(
        default="",
        description="dataRemoved is set when a TrainingRun this Deployment serves trained on documents "
        "removed since (Dataset@revision: count; the DataRemoved condition says more).",
    )
    revision: int | None = Field(default=None, description="revision is the stable revision serving traffic.")
    model_uri: str | None = Field(default=None, description="modelUri is the stable revision's model.")
    previous_revision: int | None = Field(
        default=None, description="previousRevision is the revision served before the current one."
    )
    canary_revision: int | None = Field(
        default=None, description="canaryRevision is the revision being rolled out."
    )
    canary_weight: int = Field(
        default=0, description="canaryWeight is the canary's share of replicas, 0-100."
    )
    replicas: int = Field(default=0, description="replicas is the desired number of serving pods.")
    ready_replicas: int = Field(default=0, description="readyReplicas is the number of Ready serving pods.")
    url: str | None = Field(default=None, description="url is the in-cluster base URL of the OpenAI API.")
    history: list[RolloutRecord] = Field(
        default_factory=list, description="history lists rollouts, newest last, with their outcomes."
    )
    drift: DriftScore | None = Field(
        default=None,
        description="drift scores the stable revision's live prompts against its training data "
        "(spec.drift; the formula is in capstan_api.drift).",
    )


STATUS_MODELS: dict[str, type[StatusBase]] = {
    "Dataset": DatasetStatus,
    "TrainingRun": TrainingRunStatus,
    "Evaluation": EvaluationStatus,
    "Deployment": DeploymentStatus,
}
