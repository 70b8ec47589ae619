"""The files the workloads write to object storage and the operator reads, as typed models.

- `<checkpoint root>/progress.json` (`TrainingProgress`): written by the trainer's rank 0, read
  by the TrainingRun reconciler into status.
- `<outputUri>/status.json` (`EvaluationOutcome`): written by the evaluation workload at the end,
  read by the Evaluation reconciler into status.
- `<step folder>/hf/EXPORTED` (`ExportMarker`): written last by `capstan_trainer.export`, read by
  the Deployment reconciler (runtime vllm) to know the Hugging Face export is there whole.

Both sides use these models, so a field renamed on one side cannot silently vanish on the other.
Unknown keys are ignored when reading (a newer workload may write more than this operator knows).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from capstan_api.lineage import ReplayInfo
from capstan_api.objective import DpoFigures
from capstan_api.status import CheckpointRef, Phase, UnreadableCheckpoint

PROGRESS_FILE = "progress.json"
EVALUATION_STATUS_FILE = "status.json"
RESULTS_FILE = "results.json"
MODEL_CARD_FILE = "README.md"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"  # beside a Dataset's manifest.json: the tokenizer its tokens came from
DATASHEET_FILE = "datasheet.md"
TRAINING_SUMMARY_FILE = "training-summary.md"  # beside the model card: the EU AI Act summary
TRAINING_SUMMARY_JSON = "training-summary.json"
# On the resource a TrainingRun's trainers read with -f: the capacity plan's GPU-hours estimate
# (status.plan.gpuHours), recorded beside the measured compute in each checkpoint's capstan.json.
PLANNED_GPU_HOURS_ANNOTATION = "capstan.dev/planned-gpu-hours"


def planned_gpu_hours(metadata: dict) -> float | None:
    """The PLANNED_GPU_HOURS_ANNOTATION of a resource's metadata; None when absent or not a number."""
    raw = (metadata.get("annotations") or {}).get(PLANNED_GPU_HOURS_ANNOTATION)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


EXPORT_DIR = "hf"
EXPORT_MARKER = "EXPORTED"
COMMIT_MARKER = "COMMITTED"
"""COMMIT_MARKER is written last into a checkpoint step folder; a folder without it does not count."""
STEP_FOLDER_RE = re.compile(r"^step-(\d{8})$")
"""STEP_FOLDER_RE matches the last segment of a checkpoint step folder (`step-00000100`)."""


def join(base: str, *parts: str) -> str:
    """Join URI parts with single slashes, keeping the scheme intact (`s3://b/x` + `y` -> `s3://b/x/y`)."""
    out = base.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


def step_folder(root: str, step: int) -> str:
    """The folder of optimizer step `step` under the checkpoint root `root` (`<root>/step-00000100`)."""
    return join(root, f"step-{step:08d}")


def step_of(uri: str) -> int | None:
    """The step of a checkpoint step folder URI, None for anything else (a root, an export)."""
    m = STEP_FOLDER_RE.match(uri.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def export_uri(step_folder: str) -> str:
    """Where a step folder's Hugging Face export lives: inside it, so it is one per checkpoint,
    found by every Deployment that serves the checkpoint, and deleted with it."""
    return join(step_folder, EXPORT_DIR)


class FileModel(BaseModel):
    """camelCase on the wire like the API; unknown keys ignored on read."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_json(self, exclude_none: bool = False) -> str:
        return (
            json.dumps(self.model_dump(by_alias=True, mode="json", exclude_none=exclude_none), indent=2)
            + "\n"
        )


ProgressPhase = Literal["Starting", "Running", "Stopped", "Succeeded", "EarlyStopped"]


SPEC_HASH_ENV = "CAPSTAN_SPEC_HASH"
"""SPEC_HASH_ENV: set by the operator on trainer pods, the hash of the spec the gang trains from."""


class TrainingProgress(FileModel):
    """progress.json: where a TrainingRun's trainers are."""

    phase: ProgressPhase = Phase.STARTING
    """phase: Stopped after a SIGTERM checkpoint; Succeeded or EarlyStopped when the run is done."""
    step: int = 0
    """step: optimizer steps completed."""
    total_steps: int | None = None
    """total_steps: the spec's optimizer.totalSteps."""
    loss: float | None = None
    """loss: training loss (mean over ranks) at the last metrics step; None before it."""
    eval_loss: float | None = None
    """eval_loss: mixture-weighted validation loss at the last evaluation; None before it."""
    overfitting: bool = False
    """overfitting: validation loss rose while training loss fell since the evaluation before."""
    lr: float | None = None
    """lr: learning rate of the last step."""
    tokens_seen: int = 0
    """tokens_seen: training tokens consumed (sequences consumed x seqLen), restored on resume."""
    tokens_per_sec: float | None = None
    """tokens_per_sec: all ranks together, over the last metrics interval."""
    mfu: float | None = None
    """mfu: model FLOPs utilisation per GPU, 0..1; None on CPU, in fp32, or on an unknown GPU."""
    loss_tokens: int | None = None
    """loss_tokens: tokens that carried loss in the last metrics step's global batch (sft and dpo)."""
    dpo: DpoFigures | None = None
    """dpo: DPO's rewards, margin and accuracy at the last metrics step (objective dpo)."""
    last_checkpoint: CheckpointRef | None = None
    """last_checkpoint: the newest committed checkpoint; None before the first."""
    unreadable_checkpoints: list[UnreadableCheckpoint] = Field(default_factory=list)
    """unreadable_checkpoints: committed ones that failed to load at this start; an older one was used."""
    replay: ReplayInfo | None = None
    """replay: where a replay (init.replayFrom) started and the steps it saved; None otherwise."""
    world_size: int | None = None
    """world_size: trainer processes in this attempt."""
    trainable_params: int | None = None
    """trainable_params: parameters the optimizer updates (with spec.lora, the adapters')."""
    total_params: int | None = None
    """total_params: all parameters of the model being trained (adapters included)."""
    restarts: int = 0
    """restarts: torchrun restarts so far (this pod's agent)."""
    time: str | None = None
    """time: UTC time of this write (RFC 3339)."""
    spec_hash: str = ""
    """spec_hash: SPEC_HASH_ENV of the trainers that wrote it ("" without the operator)."""


class GateVerdict(FileModel):
    """One gate of status.json (the same fields as the Evaluation's status.gates, plus why)."""

    metric: str
    # int | float keeps a bound written as 50 printing as 50 in messages, as the user wrote it.
    value: int | float | None = None
    min: int | float | None = None
    max: int | float | None = None
    passed: bool = False
    reason: str | None = None
    """reason: why a gate failed without a value (e.g. the metric was not computed)."""


class EvaluationOutcome(FileModel):
    """status.json: an Evaluation's metrics and gate verdicts."""

    metrics: dict[str, float] = Field(default_factory=dict)
    """metrics: every numeric metric by name (nested results stay in results.json)."""
    gates: list[GateVerdict] = Field(default_factory=list)
    """gates: each gate's value and verdict."""
    passed: bool = False
    """passed: every gate passed."""
    model_uri: str | None = None
    """model_uri: the checkpoint or export that was evaluated."""
    results_uri: str | None = None
    """results_uri: results.json; the reader defaults it to `<outputUri>/results.json`."""
    model_card_uri: str | None = None
    """model_card_uri: the model card; the reader defaults it to `<outputUri>/README.md`."""
    training_summary_uri: str | None = None
    """training_summary_uri: the EU AI Act training-data summary (markdown) beside the card;
    None from images that did not write one."""

    @field_validator("metrics", mode="before")
    @classmethod
    def _numbers_only(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {k: x for k, x in v.items() if isinstance(x, int | float) and not isinstance(x, bool)}


class ExportMarker(FileModel):
    """EXPORTED: the last file of a Hugging Face export; a folder without it is half-written."""

    checkpoint: str
    """checkpoint: the step folder exported."""
    step: int
    """step: that folder's optimizer step."""
    dtype: str
    """dtype of the exported weights (float32, bfloat16, float16)."""
    files: list[str] = Field(default_factory=list)
    """files: the export's files, the marker excepted."""
