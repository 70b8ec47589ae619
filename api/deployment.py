"""Deployment spec: serve a model over the OpenAI HTTP API, scale it, and roll new models out as
canaries with analysis and automatic rollback. (`deployments.capstan.dev`, not `apps/v1`.)"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from capstan_api.common import NAME_PATTERN, OPTIONAL_URI_PATTERN, ApiModel, cel
from capstan_api.workload import LocalRef, PodResources, StorageAccess, service_account_field, storage_field


class DeploymentModel(ApiModel):
    """What to serve: a passing Evaluation's model, a TrainingRun's last checkpoint, or a URI."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "(has(self.evaluationRef) ? 1 : 0) + (has(self.trainingRunRef) ? 1 : 0) + "
                "((has(self.uri) && self.uri != '') ? 1 : 0) == 1",
                "exactly one of evaluationRef, trainingRunRef or uri must be set",
            ),
            (
                "!(has(self.followPassingEvaluations) && self.followPassingEvaluations) || "
                "has(self.trainingRunRef)",
                "followPassingEvaluations needs trainingRunRef",
            ),
        )
    )

    evaluation_ref: LocalRef | None = Field(
        default=None,
        description="evaluationRef names an Evaluation; its model is served once it has passed "
        "(a failed Evaluation is never served).",
    )
    training_run_ref: LocalRef | None = Field(
        default=None,
        description="trainingRunRef names a TrainingRun; its last checkpoint is served, or with "
        "followPassingEvaluations the model of the newest passing Evaluation of that run.",
    )
    uri: str = Field(
        default="",
        max_length=2000,
        pattern=OPTIONAL_URI_PATTERN,
        description="uri is a checkpoint step folder or root, or a Hugging Face export directory.",
    )
    follow_passing_evaluations: bool = Field(
        default=False,
        description="followPassingEvaluations serves the model of the passing Evaluation of "
        "trainingRunRef with the latest checkpoint step (of equal steps, the latest to complete), "
        "rolling each new one out as a canary as it appears.",
    )
    name: str = Field(
        default="",
        max_length=253,
        description="name is the model id the API reports (GET /v1/models); empty uses the resource name.",
    )

    @model_validator(mode="after")
    def _check(self) -> DeploymentModel:
        chosen = [self.evaluation_ref is not None, self.training_run_ref is not None, bool(self.uri)]
        if sum(chosen) != 1:
            raise ValueError("exactly one of evaluationRef, trainingRunRef or uri must be set")
        if self.follow_passing_evaluations and self.training_run_ref is None:
            raise ValueError("followPassingEvaluations needs trainingRunRef")
        return self


class SecretKeyRef(ApiModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description="name of the Secret.")
    key: str = Field(
        default="api-key",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="key of the Secret's data that holds the value.",
    )


class ServerOptions(ApiModel):
    """Options of the inference server (built-in or vLLM)."""

    max_batch_size: int = Field(
        default=16, ge=1, le=1024, description="maxBatchSize is the most sequences decoded together."
    )
    max_queue: int = Field(
        default=64,
        ge=0,
        le=100000,
        description="maxQueue is how many requests may wait for a batch slot; more get 429 (built-in server only).",
    )
    max_model_len: int = Field(
        default=0,
        ge=0,
        le=1 << 20,
        description="maxModelLen is the longest prompt plus completion in tokens; 0 means the model's.",
    )
    max_prompts_per_request: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="maxPromptsPerRequest bounds the prompts of one completions request (built-in server only).",
    )
    request_timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=24 * 3600,
        description="requestTimeoutSeconds is the longest a request may run before it is ended with 504 "
        "(built-in server only).",
    )
    api_key_secret: SecretKeyRef | None = Field(
        default=None,
        description="apiKeySecret names the Secret key holding an API key; requests then need "
        "`Authorization: Bearer <key>` (vLLM's --api-key). Unset: no key.",
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on the servers' running requests."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas")
        )
    )

    enabled: bool = Field(
        default=False, description="enabled creates the autoscaler (replicas is then ignored)."
    )
    min_replicas: int = Field(default=1, ge=1, le=1000, description="minReplicas is the fewest serving pods.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="maxReplicas is the most serving pods.")
    target_running_requests: int = Field(
        default=8,
        ge=1,
        le=100_000,
        description="targetRunningRequests is the running requests per pod to aim for.",
    )

    @model_validator(mode="after")
    def _check(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas must not exceed maxReplicas ({self.min_replicas} > {self.max_replicas})"
            )
        return self


class RolloutStep(ApiModel):
    weight: int = Field(ge=1, le=100, description="weight is the canary's share of replicas, 1-100 percent.")
    pause_seconds: int = Field(
        default=60,
        ge=0,
        le=24 * 3600,
        description="pauseSeconds is how long to hold and analyse before the next step.",
    )


# The default queries read the series the local cluster's Prometheus keeps (hack/localcluster/
# prometheus.py relabels pods to namespace, capstan_owner and revision); another Prometheus needs
# the same relabeling or its own queries. Both runtimes serve these names (vLLM's).
_SELECT = 'namespace="{{ namespace }}", capstan_owner="{{ name }}", revision="{{ revision }}"'
DEFAULT_REQUESTS_QUERY = (
    f'sum(increase(http_requests_total{{{_SELECT}, handler=~"/v1/.*"}}[{{{{ window }}}}]))'
)
# `or vector(0)`: a revision without a single 5xx has no such series, which is a rate of 0.
DEFAULT_ERROR_RATE_QUERY = (
    f'(sum(increase(http_requests_total{{{_SELECT}, handler=~"/v1/.*", status="5xx"}}[{{{{ window }}}}]))'
    f' or vector(0)) / sum(increase(http_requests_total{{{_SELECT}, handler=~"/v1/.*"}}[{{{{ window }}}}]))'
)
DEFAULT_P99_LATENCY_QUERY = (
    "histogram_quantile(0.99, sum by (le) "
    f"(increase(vllm:e2e_request_latency_seconds_bucket{{{_SELECT}}}[{{{{ window }}}}])))"
)
TEMPLATE_VARIABLES = ("namespace", "name", "revision", "window")
"""TEMPLATE_VARIABLES a query may use as `{{ variable }}`: the Deployment's namespace and name, the
revision judged (the canary's, then the stable one's), and the window (the canary step's age,
e.g. `95s`)."""


class AnalysisQueries(ApiModel):
    """PromQL judged when the operator has a Prometheus URL, each run once for the canary and once
    for the stable revision (as Argo Rollouts' AnalysisTemplate and Flagger's metric templates).
    Each must return one number (a vector of one sample); `{{ namespace }}`, `{{ name }}`,
    `{{ revision }}` and `{{ window }}` are substituted first."""

    requests: str = Field(
        default=DEFAULT_REQUESTS_QUERY,
        min_length=1,
        max_length=4096,
        description="requests is PromQL for how many requests the revision served in the window.",
    )
    error_rate: str = Field(
        default=DEFAULT_ERROR_RATE_QUERY,
        min_length=1,
        max_length=4096,
        description="errorRate is PromQL for the revision's share of 5xx responses (0-1) in the window.",
    )
    p99_latency_seconds: str = Field(
        default=DEFAULT_P99_LATENCY_QUERY,
        min_length=1,
        max_length=4096,
        description="p99LatencySeconds is PromQL for the revision's p99 end-to-end latency in seconds.",
    )

    @field_validator("requests", "error_rate", "p99_latency_seconds")
    @classmethod
    def _known_variables(cls, query: str) -> str:
        unknown = sorted(set(re.findall(r"{{\s*([^}\s]*)\s*}}", query)) - set(TEMPLATE_VARIABLES))
        if unknown:
            raise ValueError(f"unknown template variable(s) {unknown}; known: {list(TEMPLATE_VARIABLES)}")
        return query


class Analysis(ApiModel):
    """What a canary must show at each step; failing it rolls back to the stable revision."""

    max_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="maxErrorRate is the highest share of 5xx responses."
    )
    max_p99_latency_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="maxP99LatencySeconds is the highest p99 end-to-end latency."
    )
    min_requests: int = Field(
        default=10,
        ge=0,
        le=1_000_000,
        description="minRequests is how many canary requests a step needs before it can be judged; "
        "fewer keeps the step paused.",
    )
    max_p99_latency_ratio: float = Field(
        default=1.2,
        ge=0,
        le=100,
        description="maxP99LatencyRatio bounds the canary's p99 latency by this multiple of the stable "
        "revision's over the same window (Prometheus analysis only; 0 turns the bound off).",
    )
    max_error_rate_increase: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="maxErrorRateIncrease bounds the canary's error rate by the stable revision's plus "
        "this (0.01 is one point; Prometheus analysis only).",
    )
    queries: AnalysisQueries = Field(
        default_factory=AnalysisQueries,
        description="queries are the PromQL the analysis runs when the operator is given a Prometheus "
        "URL; without one it scrapes the canary pods directly and judges absolute bounds only.",
    )


def _default_steps() -> list[RolloutStep]:
    return [RolloutStep(weight=10), RolloutStep(weight=50), RolloutStep(weight=100, pause_seconds=0)]


class Rollout(ApiModel):
    """Canary rollout of a new model revision, step by step."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.steps.map(s, s.weight).isSorted() && "
                "self.steps.all(x, self.steps.exists_one(y, y.weight == x.weight))",
                "rollout step weights must be strictly increasing",
            ),
            ("self.steps[size(self.steps) - 1].weight == 100", "the last rollout step must have weight 100"),
        )
    )

    steps: list[RolloutStep] = Field(
        default_factory=_default_steps,
        min_length=1,
        max_length=20,
        description="steps are the canary weights in order; the last must be 100 (promotion).",
    )
    analysis: Analysis = Field(default_factory=Analysis, description="analysis judges each step.")

    @model_validator(mode="after")
    def _check(self) -> Rollout:
        weights = [s.weight for s in self.steps]
        if any(b <= a for a, b in zip(weights, weights[1:], strict=False)):
            raise ValueError(f"rollout step weights must be strictly increasing, got {weights}")
        if weights[-1] != 100:
            raise ValueError(f"the last rollout step must have weight 100, got {weights[-1]}")
        return self


class Drift(ApiModel):
    """Drift of live prompts from the training data's validation split (capstan_api.drift)."""

    enabled: bool = Field(
        default=False,
        description="enabled scores the stable revision's live prompts against its model's "
        "training data in status.drift (the built-in runtime exports the statistics; vLLM does not).",
    )
    threshold: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="threshold of the drift score (PSI of prompt lengths + relative rise of the "
        "mean surprisal + rise of the byte-fallback share) above which the Drift condition is True.",
    )
    min_prompts: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="minPrompts the live statistics must cover before the score is judged.",
    )


class DeploymentSpec(ApiModel):
    """Deployment desired state."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.runtime != 'vllm' || self.resources.gpus >= 1", "runtime vllm needs resources.gpus >= 1")
        )
    )

    model: DeploymentModel = Field(description="model to serve.")
    runtime: Literal["builtin", "vllm"] = Field(
        default="builtin",
        description="runtime is builtin (the Capstan server, CPU or GPU) or vllm (GPU): vLLM serves the "
        "model's Hugging Face export, which the operator makes once per checkpoint (<step folder>/hf).",
    )
    server: ServerOptions = Field(default_factory=ServerOptions, description="server options.")
    replicas: int = Field(default=1, ge=0, le=1000, description="replicas is the number of serving pods.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="autoscaling of the servers.")
    rollout: Rollout = Field(default_factory=Rollout, description="rollout of new model revisions.")
    drift: Drift = Field(default_factory=Drift, description="drift of live prompts from the training data.")
    resources: PodResources = Field(
        default_factory=PodResources, description="resources of each serving pod."
    )
    image: str = Field(
        default="",
        max_length=1000,
        description="image overrides the serving image: the operator's workload image, or its vLLM image "
        "with runtime vllm.",
    )

    service_account_name: str = service_account_field()
    storage: StorageAccess = storage_field()

    @model_validator(mode="after")
    def _check(self) -> DeploymentSpec:
        if self.runtime == "vllm" and self.resources.gpus < 1:
            raise ValueError("runtime vllm needs resources.gpus >= 1")
        return self
