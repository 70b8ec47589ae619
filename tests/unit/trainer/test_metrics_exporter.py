"""Rank 0's training metrics at /metrics, as Prometheus scrapes them from a trainer pod."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from capstan_trainer.train.metrics import Exporter
from hack.localcluster.ports import free_port


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_first_process_of_a_pod_serves_rank_0s_figures_on_the_pod_ip(monkeypatch):
    port = free_port()
    monkeypatch.setenv("CAPSTAN_TRAIN_METRICS_PORT", str(port))
    monkeypatch.setenv("POD_IP", "127.0.0.1")  # a local-cluster pod: listen on its own address
    monkeypatch.setenv("LOCAL_RANK", "0")
    e = Exporter()
    assert e.serve_from_env() == port
    url = f"http://127.0.0.1:{port}/metrics"
    assert "capstan_train_loss" not in scrape(url)  # no series before rank 0's first report
    e.update(step=20, total_steps=100, loss=2.5, tps=14000.0, mfu=None, step_s=0.05, eval_loss=2.7)
    got = scrape(url)
    assert got["capstan_train_loss"] == 2.5 and got["capstan_train_eval_loss"] == 2.7
    assert got["capstan_train_tokens_per_second"] == 14000.0 and got["capstan_train_step_seconds"] == 0.05
    assert (got["capstan_train_step"], got["capstan_train_total_steps"]) == (20, 100)
    assert "capstan_train_mfu" not in got  # unknown on CPU: absent rather than a misleading 0
    e.update(step=40, total_steps=100, loss=2.1, tps=15000.0, mfu=0.41, step_s=0.04, eval_loss=None)
    got = scrape(url)
    assert got["capstan_train_mfu"] == 0.41 and got["capstan_train_eval_loss"] == 2.7


def test_no_port_outside_a_pod_or_on_other_local_ranks(monkeypatch):
    monkeypatch.delenv("CAPSTAN_TRAIN_METRICS_PORT", raising=False)
    assert Exporter().serve_from_env() is None
    monkeypatch.setenv("CAPSTAN_TRAIN_METRICS_PORT", str(free_port()))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert Exporter().serve_from_env() is None


def test_a_taken_port_leaves_training_running_without_metrics(monkeypatch, caplog):
    port = free_port()
    monkeypatch.setenv("CAPSTAN_TRAIN_METRICS_PORT", str(port))
    monkeypatch.setenv("POD_IP", "127.0.0.1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert Exporter().serve_from_env() == port
    assert Exporter().serve_from_env() is None  # a second server on the same address
    assert "not serving /metrics on 127.0.0.1" in caplog.text
