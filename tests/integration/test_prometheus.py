"""Prometheus on the local cluster: it discovers the pods the chart and the operator annotate
through the API server, the dashboard's operator panels answer from the operator pod, and a slow
canary is rolled back by an analysis judged from PromQL against the stable revision."""

from __future__ import annotations

import dataclasses
import json

import pytest

from capstan_operator import prometheus as client
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from tests.integration.test_helm import CHART, DATASET, helm, wait_ready
from tests.integration.test_reconcile_deployment import (
    become_available,
    change_model,
    deployment_yaml,
    send_traffic,
    status,
)
from tests.support.dashboard import panel_queries
from tests.support.operator_env import driver, op_cfg, operator_cluster
from tests.support.trainingruns import data, run_yaml

pytestmark = pytest.mark.cluster
__all__ = ["data", "driver", "op_cfg", "operator_cluster"]  # fixtures

DASHBOARD = CHART / "dashboards" / "capstan.json"


def test_operator_pod_is_discovered_and_its_dashboard_panels_answer(cluster, namespace, prometheus_url):
    env = cluster.env
    release = ["capstan", str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{namespace}}}"]
    helm("install", *release, "--set", "metrics.grafanaDashboard.enabled=true", env=env)
    pod = wait_ready(cluster, namespace)
    cluster.apply(DATASET, namespace)  # something to reconcile
    dashboard = cluster.get("configmap", "capstan-dashboard", namespace)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["capstan.json"]) == json.loads(DASHBOARD.read_text())

    up = f'up{{namespace="{namespace}", pod="{pod["metadata"]["name"]}", component="operator"}}'
    cluster.wait_for(
        f"Prometheus to discover and scrape the operator pod ({up} == 1)",
        lambda: client.number(prometheus_url, up) == 1,
        timeout=90,
    )
    reconciled = f'sum(capstan_reconciles_total{{namespace="{namespace}", kind="Dataset"}})'
    cluster.wait_for(
        f"the operator pod's reconciles in Prometheus ({reconciled})",
        lambda: (client.number(prometheus_url, reconciled) or 0) >= 1,
        timeout=90,
    )
    # rate() needs two samples of a series: a second scrape after the first reconcile.
    samples = f'max(count_over_time(capstan_reconciles_total{{namespace="{namespace}"}}[5m]))'
    cluster.wait_for(
        "two scrapes of the operator's reconcile counter",
        lambda: (client.number(prometheus_url, samples) or 0) >= 2,
    )
    for title, expr in panel_queries("Operator"):
        assert client.instant(prometheus_url, expr), f"operator panel {title!r} returned no data: {expr}"
    helm("uninstall", "capstan", "-n", namespace, "--wait", "--timeout", "180s", env=env)


@pytest.fixture
def prometheus_driver(driver, prometheus_url, tiny):
    # The canary (the checkpoint) answers 0.8 s later than the stable revision (the export): a
    # test hook in the server (trainer/serve/fault_hook.py) given to every pod, acting on one model.
    fault = {"CAPSTAN_FAULT_SERVE_DELAY_S": "0.8", "CAPSTAN_FAULT_SERVE_MODEL": tiny.checkpoint_uri}
    driver.cfg = dataclasses.replace(
        driver.cfg, prometheus_url=prometheus_url, extra_env={"OMP_NUM_THREADS": "1", **fault}
    )
    return driver


def test_a_slow_canary_is_rolled_back_by_prometheus_analysis(
    operator_cluster, namespace, prometheus_driver, tiny
):
    """Needs images with this tree's server (vLLM's metric names and the fault hook)."""
    cluster, driver = operator_cluster, prometheus_driver
    # Absolute bounds every revision meets: only the comparison with stable can fail the canary.
    analysis = {"minRequests": 3, "maxErrorRate": 0.0, "maxP99LatencySeconds": 30, "maxP99LatencyRatio": 1.2}
    steps = [{"weight": 50, "pauseSeconds": 20}, {"weight": 100, "pauseSeconds": 0}]
    cluster.apply(
        deployment_yaml("slow", tiny.export_uri, rollout={"steps": steps, "analysis": analysis}), namespace
    )
    become_available(cluster, driver, namespace, "slow")
    change_model(cluster, namespace, "slow", tiny.checkpoint_uri)

    def rolled_back():
        send_traffic(cluster, namespace, "slow")
        return any(h["outcome"] == "RolledBack" for h in status(driver, "slow").get("history", []))

    driver.run_until("the slow canary to be rolled back by the Prometheus analysis", rolled_back, 300)
    rec = status(driver, "slow")["history"][-1]
    assert (rec["revision"], rec["outcome"]) == (2, "RolledBack")
    assert "above 1.2x stable's" in rec["reason"] and "(Prometheus, last" in rec["reason"], rec["reason"]
    assert status(driver, "slow")["revision"] == 1


def test_trainer_pod_is_scraped_and_the_training_panels_answer(
    operator_cluster, namespace, driver, s3_bucket, data, prometheus_url
):
    """Needs images with this tree's trainer (rank 0's /metrics on port 9400)."""
    # Long enough for several scrapes (every 2 s) while it trains.
    operator_cluster.apply(
        # Evaluations too: the Loss panel draws the validation loss beside the training loss.
        run_yaml(
            "scraped",
            f"{s3_bucket}/ckpt/scraped",
            {"uri": data},
            steps=300,
            eval={"intervalSteps": 20, "batches": 1},
        ),
        namespace,
    )
    driver.add("trainingruns", "scraped", reconcile_trainingrun.reconcile)
    sel = f'namespace="{namespace}", capstan_owner="scraped"'
    # Summed: the run showed as two series once it had gone on a while (cause not pinned down).
    seen = f"sum(count_over_time(capstan_train_loss{{{sel}}}[5m]))"
    evaluated = f"sum(count_over_time(capstan_train_eval_loss{{{sel}}}[5m]))"

    driver.run_until(
        f"two scrapes of rank 0's training metrics ({seen}) and of an evaluation ({evaluated})",
        lambda: (
            (client.number(prometheus_url, seen) or 0) >= 2
            and (client.number(prometheus_url, evaluated) or 0) >= 2
        ),
        300,
    )
    # Over the last minutes, as Grafana draws it: the pod may have finished (its series then end).
    last = "[5m:2s]"
    assert (
        client.number(prometheus_url, f"max(max_over_time(capstan_train_tokens_per_second{{{sel}}}[5m]))") > 0
    )
    assert 0 < client.number(prometheus_url, f"max(max_over_time(capstan_train_step{{{sel}}}[5m]))") <= 300
    for title, expr in panel_queries("Training"):
        if title == "MFU":  # no peak FLOP/s on CPU: absent by design, not zero
            continue
        # A subquery's steps are aligned to 2 s: the newest may precede the newest scrape.
        operator_cluster.wait_for(
            f"training panel {title!r} to have data: {expr}",
            lambda e=expr: client.instant(prometheus_url, f"max_over_time(({e}){last})"),
            timeout=30,
        )
