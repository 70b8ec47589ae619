"""Evaluation spec: which model, which metrics (perplexity, tasks, bias probes), which gates.

`python -m capstan_trainer.evaluate -f evaluation.yaml` validates its file with these models. The
operator resolves references before it writes that file: `model.trainingRunRef` becomes
`model.uri` (the run's last checkpoint, or its checkpoint of `model.step`), `datasetRef` becomes
`validationUri` (the Dataset's manifest) and `baselineRef` becomes `baselineResultsUri` (that
Evaluation's results.json), so the workload never needs the Kubernetes API.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from capstan_api import cron, files
from capstan_api.common import (
    OPTIONAL_SPDX_PATTERN,
    OPTIONAL_URI_PATTERN,
    URI_PATTERN,
    ApiModel,
    cel,
    cel_set,
)
from capstan_api.training import MAX_STEPS
from capstan_api.workload import (
    Device,
    LocalRef,
    PodResources,
    StorageAccess,
    service_account_field,
    start_deadline_field,
    storage_field,
)

# Metric names are dotted words: "perplexity.word_perplexity", "task.arc.acc_norm", "bias.pct_stereotype".
METRIC_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$"
TASK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
STEP_FOLDER_CEL = r"/step-[0-9]{8}/?$"
"""STEP_FOLDER_CEL matches a URI that ends in a step folder (files.STEP_FOLDER_RE, as a CEL regex)."""
STEP_WITH_STEP_FOLDER = "step needs uri to be a checkpoint root, not a step folder"
ONE_MODEL = "exactly one of trainingRunRef, deploymentRef or uri must be set"
ONE_BASELINE = "at most one of baselineRef or baselineResultsUri may be set"
HISTORY_LIMIT = 10
"""HISTORY_LIMIT: runs kept in status.history, newest last."""


class EvaluationModel(ApiModel):
    """The model under evaluation: a TrainingRun's checkpoint (its last, or the one of `step`) or a URI."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "(has(self.trainingRunRef) ? 1 : 0) + (has(self.deploymentRef) ? 1 : 0) + "
                f"({cel_set('uri')} ? 1 : 0) == 1",
                ONE_MODEL,
            ),
            ("!has(self.deploymentRef) || !has(self.step)", "step cannot be set with deploymentRef"),
            (
                f"!has(self.step) || !{cel_set('uri')} || !self.uri.matches('{STEP_FOLDER_CEL}')",
                STEP_WITH_STEP_FOLDER,
            ),
        )
    )

    training_run_ref: LocalRef | None = Field(
        default=None,
        description="trainingRunRef names a TrainingRun whose last committed checkpoint is evaluated "
        "once the run has succeeded (with step: its checkpoint of that step, once committed).",
    )
    deployment_ref: LocalRef | None = Field(
        default=None,
        description="deploymentRef names a Deployment whose stable revision's model (its "
        "status.modelUri) is evaluated, again at each run of spec.schedule: a served model keeps "
        "being checked.",
    )
    uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="uri is a checkpoint step folder, a checkpoint root (newest committed step) or a "
        "Hugging Face export directory (config.json + safetensors).",
    )
    step: int | None = Field(
        default=None,
        ge=1,
        le=MAX_STEPS,
        description="step names the checkpoint of that optimizer step. With trainingRunRef: the run's "
        "committed checkpoint at that step; the Evaluation waits only until that checkpoint is "
        "committed, not for the run to finish, and fails if the run ends without it (keep "
        "checkpoint.keepLast large enough that it is not removed first). With uri: the step folder "
        "under that checkpoint root. Unset: the run's last checkpoint, or the root's newest.",
    )
    tokenizer_uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="tokenizerUri overrides the tokenizer.json stored with the model.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EvaluationModel:
        if (self.training_run_ref is not None) + (self.deployment_ref is not None) + bool(self.uri) != 1:
            raise ValueError(ONE_MODEL)
        if self.deployment_ref is not None and self.step is not None:
            raise ValueError("step cannot be set with deploymentRef")
        if self.step is not None and files.step_of(self.uri) is not None:
            raise ValueError(STEP_WITH_STEP_FOLDER)
        return self

    def checkpoint_uri(self) -> str:
        """What the workload loads: `uri`, or with `step` that root's step folder."""
        return files.step_folder(self.uri, self.step) if self.step is not None else self.uri


class Task(ApiModel):
    """A task file in JSONL; one example per line.

    multipleChoice lines: {"context": str, "choices": [str, ...], "gold": int}; scored by summed
    log-likelihood of each choice after the context (acc) and per character (acc_norm).
    exactMatch lines: {"prompt": str, "answer": str}; greedy generation cut at the first stop string,
    compared after stripping surrounding whitespace.
    chat lines: {"messages": [...], "answer": str}, or chat-format lines whose last message is the
    assistant's expected answer; the messages are rendered with the model's chat template (as the
    server does), the greedy reply is scored by `match`, and accuracy is reported.
    """

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=TASK_NAME_PATTERN,
        description="name of the task; metrics are reported as task.<name>.<metric>.",
    )
    type: Literal["multipleChoice", "exactMatch", "chat"] = Field(
        description="type is multipleChoice (log-likelihood ranking), exactMatch (greedy generation) or chat (a chat-template reply scored by match)."
    )
    match: Literal["exact", "contains", "regex"] = Field(
        default="exact",
        description="match scores a chat reply: exact (equal after stripping), contains (the answer is in the reply) or regex (the answer is a Python regular expression the reply matches somewhere).",
    )
    uri: str = Field(
        min_length=1, max_length=2000, pattern=URI_PATTERN, description="uri of the JSONL file (fsspec URI)."
    )
    limit: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="limit is the number of examples used, from the top; 0 means all.",
    )
    stop: list[str] = Field(
        default_factory=lambda: ["\n"],
        max_length=8,
        description="stop strings end an exactMatch generation (the stop string is not part of the answer).",
    )
    max_tokens: int = Field(
        default=32, ge=1, le=4096, description="maxTokens is the longest exactMatch generation in tokens."
    )


class BiasProbes(ApiModel):
    """Counterfactual sentence pairs that differ only in a group term.

    Lines: {"category": str, "group": str, "stereotype": str, "antiStereotype": str}; a template line
    {"category", "template": "... {group} ...", "groups": [a, b], "stereotypeGroup": a} expands to a pair.
    """

    builtin: bool = Field(
        default=True,
        description="builtin includes the project's probe set (gender, ethnicity via names, religion, "
        "age, nationality).",
    )
    uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="uri of an extra probe JSONL file; empty for none.",
    )


class Gate(ApiModel):
    """A threshold on one metric; the Evaluation passes only when every gate does."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("has(self.min) || has(self.max)", "a gate needs min, max or both"),
            ("!has(self.min) || !has(self.max) || self.min <= self.max", "gate min must not exceed max"),
        )
    )

    metric: str = Field(
        min_length=1,
        max_length=200,
        pattern=METRIC_PATTERN,
        description="metric is a name from status.metrics, e.g. perplexity.token_perplexity, "
        "task.arith.exact_match or bias.pct_stereotype.",
    )
    min: float | None = Field(default=None, description="min is the lowest passing value (inclusive).")
    max: float | None = Field(default=None, description="max is the highest passing value (inclusive).")

    @model_validator(mode="after")
    def _bounds(self) -> Gate:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate min must not exceed max ({self.min} > {self.max})")
        return self


class EvaluationSpec(ApiModel):
    """Evaluation desired state."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                f"!(has(self.datasetRef) && {cel_set('validationUri')})",
                "at most one of datasetRef or validationUri may be set",
            ),
            (
                f"!(has(self.baselineRef) && {cel_set('baselineResultsUri')})",
                ONE_BASELINE,
            ),
            (
                "self.tasks.all(x, self.tasks.exists_one(y, y.name == x.name))",
                "task names must be unique",
            ),
        )
    )

    model: EvaluationModel = Field(description="model to evaluate and its tokenizer.")
    dataset_ref: LocalRef | None = Field(
        default=None,
        description="datasetRef names a Dataset whose validation split is used for perplexity.",
    )
    validation_uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="validationUri is a shard manifest (its validation split is used), a JSONL file "
        "with a text field, or a plain text file, for perplexity. Neither this nor datasetRef: no "
        "perplexity.",
    )
    context_length: int = Field(
        default=0,
        ge=0,
        le=1 << 20,
        description="contextLength is the rolling-window length for perplexity and the longest "
        "task context, in tokens; 0 means the model's maxSeqLen.",
    )
    max_validation_documents: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="maxValidationDocuments caps the perplexity documents; 0 means all.",
    )
    batch_size: int = Field(
        default=16, ge=1, le=4096, description="batchSize is the sequences per forward pass."
    )
    tasks: list[Task] = Field(default_factory=list, max_length=64, description="tasks to score.")
    bias_probes: BiasProbes = Field(
        default_factory=BiasProbes, description="biasProbes: counterfactual log-likelihood probes."
    )
    gates: list[Gate] = Field(
        default_factory=list, max_length=64, description="gates are thresholds every metric must meet."
    )
    output_uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="outputUri is the folder for results.json, README.md (the model card) and "
        "status.json; empty: the operator fills in its default artifact location.",
    )
    baseline_results_uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="baselineResultsUri is the results.json of an Evaluation of the base model (e.g. before "
        "fine-tuning); the model card then shows base and tuned side by side. Empty: no comparison.",
    )
    baseline_ref: LocalRef | None = Field(
        default=None,
        description="baselineRef names an Evaluation (same namespace) of the base model: this one "
        "waits for it to succeed and compares against its results.json, as baselineResultsUri "
        "would. With spec.schedule each run takes its results anew.",
    )
    license: str = Field(
        default="",
        max_length=128,
        pattern=OPTIONAL_SPDX_PATTERN,
        description="license is the SPDX id written to the model card; empty takes the training data's.",
    )
    device: Device = Field(default="auto", description="device: auto (cuda when present), cpu or cuda.")
    resources: PodResources = Field(
        default_factory=PodResources, description="resources of the evaluation pod."
    )
    image: str = Field(
        default="", max_length=1000, description="image overrides the operator's workload image."
    )

    schedule: str = Field(
        default="",
        max_length=100,
        # The shape at apply time; the values (ranges, names) are checked by capstan_api.cron.
        json_schema_extra=cel(
            (
                "self == '' || self.matches('^ *(@(hourly|daily|midnight|weekly|monthly|yearly|annually)"
                "|[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+) *$')",
                f"schedule must be {cron.FIVE_FIELDS} or a macro (@hourly, @daily, @weekly, @monthly, @yearly)",
            )
        ),
        description="schedule re-evaluates the model on a cron schedule in UTC (5 fields as in a "
        "CronJob, e.g. '0 3 * * *', or @hourly/@daily/@weekly); empty evaluates once. Each run "
        "resolves the model again (with deploymentRef: the model served then) and is kept in "
        "status.history.",
    )
    on_regression: Literal["none", "rollback"] = Field(
        default="none",
        description="onRegression: with deploymentRef, what a run whose gates fail on the served "
        "model does besides setting the Deployment's Degraded condition: none, or rollback (the "
        "Deployment returns to the last revision that served another model and was promoted).",
    )

    service_account_name: str = service_account_field()
    storage: StorageAccess = storage_field()
    start_deadline_seconds: int = start_deadline_field()

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if v:
            cron.parse(v)  # ValueError names the cron field
        return v

    @model_validator(mode="after")
    def _check(self) -> EvaluationSpec:
        if self.on_regression == "rollback" and self.model.deployment_ref is None:
            raise ValueError("onRegression rollback needs model.deploymentRef")
        if self.dataset_ref is not None and self.validation_uri:
            raise ValueError("at most one of datasetRef or validationUri may be set")
        if self.baseline_ref is not None and self.baseline_results_uri:
            raise ValueError(ONE_BASELINE)
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"task names must be unique (repeated: {', '.join(dup)})")
        return self
