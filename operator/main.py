"""The operator process: kopf with Capstan's settings, liveness, metrics, JSON logs.

    python -m capstan_operator        (configuration from CAPSTAN_* variables; see config.py)

Standalone by default. With leader election on, replicas elect a leader on a Lease (leader.py)
and only the leader's workers reconcile; the others watch and wait to take over. kopf stops gracefully on SIGTERM/SIGINT
(running handlers finish, watches close), then the metrics server is shut down.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid

import kopf

from capstan_api.common import GROUP
from capstan_operator import handlers, metrics
from capstan_operator.config import OperatorConfig
from capstan_operator.controller import Controller, Reconcile
from capstan_operator.dataset import reconcile as reconcile_dataset
from capstan_operator.deployment import reconcile as reconcile_deployment
from capstan_operator.evaluation import reconcile as reconcile_evaluation
from capstan_operator.leader import LeaderElector
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun

COMPONENT = "capstan-operator"
log = logging.getLogger("capstan.operator")


def build_settings(config: OperatorConfig, identity: str) -> kopf.OperatorSettings:
    """kopf settings for this configuration (pure: no I/O)."""
    settings = kopf.OperatorSettings()
    # Events: the handlers' kopf.info/warn calls at INFO and above (one per transition); handler
    # log lines stay logs (posting.loggers is off), so a retry loop cannot flood the Events API.
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = identity
    # Progress and diff-base in annotations: status.kopf would be pruned by the structural schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Standalone even with leader election: kopf's peering pauses only its own watches, not our
    # worker threads; leader.py's Lease gates the workers, and every replica keeps watching.
    settings.peering.standalone = True
    settings.peering.mandatory = False
    # Watches reconnect every few minutes so a silently dropped connection cannot stall the operator.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    return settings


def configure_logging(level: str) -> None:
    """JSON lines on stderr (kopf's formatter), with the object reference under `object`."""
    kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object", verbose=level == "DEBUG")
    logging.getLogger().setLevel(level)
    # aiohttp's access log and kubernetes' debug chatter are noise at INFO.
    for noisy in ("aiohttp.access", "kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def reconcilers() -> dict[str, Reconcile]:
    """Each kind's reconcile function."""
    return {
        "Dataset": reconcile_dataset.reconcile,
        "TrainingRun": reconcile_trainingrun.reconcile,
        "Evaluation": reconcile_evaluation.reconcile,
        "Deployment": reconcile_deployment.reconcile,
    }


def run(config: OperatorConfig | None = None) -> int:
    config = config or OperatorConfig.from_env()
    configure_logging(config.log_level)
    # Unique per process (two replicas on one host, or a restarted container, never share one).
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    registry = kopf.OperatorRegistry()
    # A registry of our own does not get kopf's default login: in-cluster token or kubeconfig.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    controller = Controller(reconcilers(), config, workers=config.workers)
    handlers.register(registry, controller)
    elector = None
    if config.leader_election:
        # Lost the lease: exit (kopf stops on SIGTERM) so this replica restarts as a standby.
        elector = LeaderElector(
            config.lease_namespace, identity, controller.leading, lambda: os.kill(os.getpid(), signal.SIGTERM)
        )
        kopf.on.startup(registry=registry)(lambda **_: elector.start())
        kopf.on.cleanup(registry=registry)(lambda **_: elector.stop())
    kopf.on.startup(registry=registry)(lambda **_: controller.start())
    kopf.on.cleanup(registry=registry)(lambda **_: controller.stop())
    # /healthz answers 500 when a probe raises; PERMANENT so kopf does not retry it with back-off.
    kopf.on.probe(id="workers", errors=kopf.ErrorsMode.PERMANENT, registry=registry)(
        lambda **_: controller.health()
    )
    server, _ = metrics.serve(config.bind_address, config.metrics_port)
    log.info(
        "capstan operator starting",
        extra={
            "namespaces": list(config.namespaces) or "all",
            "leaderElection": config.leader_election,
            "liveness": f"{config.bind_address}:{config.liveness_port}",
            "metrics": f"{config.bind_address}:{config.metrics_port}",
        },
    )
    settings = build_settings(config, identity)
    try:
        kopf.run(
            registry=registry,
            settings=settings,
            # peering is left to `settings`: passing peering_name here would make it mandatory.
            liveness_endpoint=f"http://{config.bind_address}:{config.liveness_port}/healthz",
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            memo=kopf.Memo(config=config),
        )
    finally:
        server.shutdown()
        log.info("capstan operator stopped")
    return 0
