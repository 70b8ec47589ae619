"""The operator's own configuration, from CAPSTAN_* environment variables (set by the Helm chart
from its values). Builders take it as a plain argument; nothing reads the environment elsewhere."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from capstan_api.network import listen_address

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _own_namespace() -> str:
    """The pod's namespace, from its service-account mount; empty outside a pod."""
    try:
        with open(SA_NAMESPACE_FILE) as f:
            return f.read().strip()
    except OSError:
        return ""


# Only schemes the images can open: gcsfs and adlfs are not installed (GCS is reached through its
# S3-compatible API, docs/install.md), so gs:// or az:// would fail in a pod, not at the door.
DEFAULT_URI_SCHEMES = ("s3", "s3a")
DEFAULT_LICENCES = (
    "CC0-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "Apache-2.0",
    "MIT",
    "ODC-By-1.0",
    "public-domain",
)


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """namespaces to watch; empty means all."""
    workload_image: str = "capstan/trainer:0.1.0"
    """workload_image runs every Job and serving pod unless a resource overrides it."""
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    """vllm_image serves Deployments with runtime vllm unless one overrides it (pinned: vLLM's
    flags and metric names change between releases)."""
    image_pull_policy: str = "IfNotPresent"
    run_as_user: int = 65532
    """run_as_user (and group) of every workload pod: the images' own non-root user. 0 breaks
    the "restricted" Pod Security Standard and such pods are refused where it is enforced."""
    s3_endpoint: str = ""
    """s3_endpoint is the object-storage endpoint URL given to workloads; empty means AWS."""
    s3_secret: str = ""
    """s3_secret names a Secret (keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional
    AWS_SESSION_TOKEN and AWS_REGION) looked up in each resource's own namespace, never copied:
    workloads of a namespace that has it use it, others the default AWS chain; a resource's
    spec.storage.secretName overrides it. Empty means none."""
    s3_region: str = ""
    """s3_region is AWS_REGION for workloads (and the operator); empty: the Secret's, if any."""
    workload_placement: dict = field(default_factory=dict)
    """workload_placement holds defaults for every workload pod (JSON in CAPSTAN_WORKLOAD_PLACEMENT):
    nodeSelector and affinity where a resource sets none, tolerations added to the resource's."""
    workload_service_account: str = ""
    """workload_service_account is the ServiceAccount workload pods run as, in their own
    namespace, unless a resource names one (spec.serviceAccountName); empty: the namespace's
    default."""
    workload_service_account_create: bool = False
    """workload_service_account_create: the operator makes workload_service_account in a
    namespace before its first workload there (with workload_service_account_annotations, e.g.
    an IRSA role), so a platform team need not pre-create it in every team's namespace."""
    workload_service_account_annotations: dict = field(default_factory=dict)
    """workload_service_account_annotations on the ServiceAccounts the operator makes (JSON in
    CAPSTAN_WORKLOAD_SERVICE_ACCOUNT_ANNOTATIONS)."""
    artifact_uri: str = ""
    """artifact_uri is where TrainingRuns without spec.checkpoint.uri keep their checkpoints:
    <artifact_uri>/<namespace>/<name>/checkpoints. Empty: such runs fail with a clear condition."""
    allowed_uri_schemes: tuple[str, ...] = DEFAULT_URI_SCHEMES
    """allowed_uri_schemes the operator reads status files (manifest.json, progress.json,
    status.json) from, with its own credentials; http(s) and file are off unless listed."""
    allowed_uri_prefixes: tuple[str, ...] = ()
    """allowed_uri_prefixes (e.g. s3://team-bucket/runs): when set, only URIs under one of them
    are read; empty means any bucket of an allowed scheme."""
    allowed_licences: tuple[str, ...] = DEFAULT_LICENCES
    """allowed_licences are the SPDX ids a Dataset may declare."""
    log_level: str = "INFO"
    leader_election: bool = False
    """leader_election: replicas elect a leader on a Lease and only it reconciles (True), or every
    replica reconciles (False: run one)."""
    lease_namespace: str = "default"
    """lease_namespace holds the leader-election Lease: the operator's own namespace in a pod."""
    bind_address: str = "0.0.0.0"
    """bind_address for the liveness and metrics endpoints: CAPSTAN_BIND_ADDRESS, else 0.0.0.0
    (so `kubectl port-forward` works), else the pod IP (POD_IP, which the chart passes) when it
    is a loopback address, as on the local cluster (see capstan_api.network)."""
    liveness_port: int = 8080
    metrics_port: int = 9090
    gang_backoff_seconds: int = 10
    """gang_backoff_seconds to wait before recreating a gang that was not scheduled in time."""
    progress_interval_seconds: int = 10
    """progress_interval_seconds between reads of a running trainer's progress file."""
    workers: int = 4
    """workers are the threads running reconciles in parallel (each mostly waits on the API)."""
    prometheus_url: str = ""
    """prometheus_url (e.g. http://prometheus.monitoring:9090) judges canaries from PromQL
    (spec.rollout.analysis.queries), canary against stable; empty: the operator scrapes the canary
    pods itself and judges absolute bounds only."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """extra_env is passed to every workload container (e.g. a proxy setting)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        e = os.environ if env is None else env

        def words(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = e.get(name)
            return default if raw is None else tuple(w for w in raw.replace(",", " ").split() if w)

        return cls(
            namespaces=words("CAPSTAN_NAMESPACES", ()),
            workload_image=e.get("CAPSTAN_WORKLOAD_IMAGE", cls.workload_image),
            vllm_image=e.get("CAPSTAN_VLLM_IMAGE", cls.vllm_image),
            image_pull_policy=e.get("CAPSTAN_IMAGE_PULL_POLICY", cls.image_pull_policy),
            run_as_user=int(e.get("CAPSTAN_WORKLOAD_RUN_AS_USER", str(cls.run_as_user))),
            s3_endpoint=e.get("CAPSTAN_S3_ENDPOINT", ""),
            s3_secret=e.get("CAPSTAN_S3_SECRET", ""),
            workload_service_account=e.get("CAPSTAN_WORKLOAD_SERVICE_ACCOUNT", ""),
            workload_service_account_create=e.get("CAPSTAN_WORKLOAD_SERVICE_ACCOUNT_CREATE", "false").lower()
            in ("1", "true", "yes"),
            workload_service_account_annotations=json.loads(
                e.get("CAPSTAN_WORKLOAD_SERVICE_ACCOUNT_ANNOTATIONS") or "{}"
            ),
            s3_region=e.get("CAPSTAN_S3_REGION", ""),
            workload_placement=json.loads(e.get("CAPSTAN_WORKLOAD_PLACEMENT") or "{}"),
            artifact_uri=e.get("CAPSTAN_ARTIFACT_URI", ""),
            allowed_licences=words("CAPSTAN_ALLOWED_LICENCES", DEFAULT_LICENCES),
            allowed_uri_schemes=words("CAPSTAN_ALLOWED_URI_SCHEMES", DEFAULT_URI_SCHEMES),
            allowed_uri_prefixes=words("CAPSTAN_ALLOWED_URI_PREFIXES", ()),
            log_level=e.get("CAPSTAN_LOG_LEVEL", "INFO").upper(),
            leader_election=e.get("CAPSTAN_LEADER_ELECTION", "false").lower() in ("1", "true", "yes"),
            lease_namespace=e.get("CAPSTAN_LEASE_NAMESPACE") or _own_namespace() or "default",
            bind_address=e.get("CAPSTAN_BIND_ADDRESS") or listen_address(e.get("POD_IP")),
            liveness_port=int(e.get("CAPSTAN_LIVENESS_PORT", "8080")),
            metrics_port=int(e.get("CAPSTAN_METRICS_PORT", "9090")),
            gang_backoff_seconds=int(e.get("CAPSTAN_GANG_BACKOFF_SECONDS", "10")),
            workers=int(e.get("CAPSTAN_WORKERS", "4")),
            progress_interval_seconds=int(e.get("CAPSTAN_PROGRESS_INTERVAL_SECONDS", "10")),
            prometheus_url=e.get("CAPSTAN_PROMETHEUS_URL", ""),
        )
