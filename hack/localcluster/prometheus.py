"""Prometheus on loopback: `cmd/prometheus` (hack/build-prometheus.sh) scraping the pods the local
API server lists (kubernetes_sd_configs, role pod) that carry the `prometheus.io/scrape` annotation
the chart and the operator put on the operator, serving and trainer pods. The local cluster spawns
it with its marker; tests start their own with `start` (extra static targets allowed).
Standard library only, like the rest of the harness."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from hack.localcluster import procs
from hack.localcluster.ports import free_port

SCRAPE_INTERVAL = "2s"
"""SCRAPE_INTERVAL: short, so a canary step of tens of seconds has several points; loopback only."""

POD_LABELS = {
    "capstan.dev/revision": "revision",
    "capstan.dev/owner": "capstan_owner",
    "capstan.dev/kind": "capstan_kind",
    "app.kubernetes.io/component": "component",
    "app.kubernetes.io/name": "app",
}
"""POD_LABELS: pod labels copied onto every series under a short name (the dashboard and the
canary queries select on them)."""


def _meta_label(key: str) -> str:
    """Prometheus' name for a pod label in discovery: every character outside [a-zA-Z0-9_] is `_`."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in key)


def pod_scrape_job(kubeconfig: Path) -> dict:
    """The scrape job discovering annotated pods through the API server (the common
    prometheus.io/scrape, /port, /path convention: what the chart and the operator write)."""
    ann = "__meta_kubernetes_pod_annotation_prometheus_io_"
    relabel = [
        {"source_labels": [ann + "scrape"], "regex": "true", "action": "keep"},
        # Running pods only: a finished trainer pod's address may be another pod's now.
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
        {"source_labels": [ann + "path"], "regex": "(.+)", "target_label": "__metrics_path__"},
        {
            "source_labels": ["__meta_kubernetes_pod_ip", ann + "port"],
            "regex": "(.+);(\\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    relabel += [{"source_labels": [_meta_label(k)], "target_label": v} for k, v in POD_LABELS.items()]
    return {
        "job_name": "kubernetes-pods",
        # role pod yields one target per declared container port; the port annotation rewrites
        # them to one address and label set, which Prometheus scrapes once.
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        "relabel_configs": relabel,
    }


Targets = tuple[str, ...] | dict[str, dict[str, str]]
"""Targets: host:port addresses, or each mapped to labels added to its series (as the pod job
adds namespace and revision)."""


def config(kubeconfig: Path | None, static_targets: Targets = ()) -> str:
    """prometheus.yml (JSON is YAML): the pod job when a kubeconfig is given, and a static job for
    `static_targets` (the tests' own HTTP targets)."""
    jobs = [pod_scrape_job(kubeconfig)] if kubeconfig is not None else []
    labelled = static_targets if isinstance(static_targets, dict) else dict.fromkeys(static_targets, {})
    if labelled:
        groups = [{"targets": [t], "labels": labels} for t, labels in labelled.items()]
        jobs.append({"job_name": "static", "static_configs": groups})
    body = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": jobs,
    }
    return json.dumps(body, indent=2)


def command(binary: str, config_path: Path, data_dir: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        # A dev cluster's history: a day is plenty, and it keeps the disk small.
        "--storage.tsdb.retention.time=1d",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def ready(port: int) -> bool:
    """/-/ready answers 200 once the TSDB is open and the configuration loaded."""
    try:
        with urllib.request.urlopen(url(port) + "/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start(
    binary: str,
    data_dir: Path,
    log: Path,
    kubeconfig: Path | None = None,
    static_targets: Targets = (),
    deadline_s: float = 60.0,
) -> tuple[subprocess.Popen, int]:
    """A Prometheus of its own (tests); returns the process and its port once /-/ready answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = data_dir / "prometheus.yml"
    cfg.write_text(config(kubeconfig, static_targets))
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command(binary, cfg, data_dir / "tsdb", port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    what = f"Prometheus' /-/ready on 127.0.0.1:{port}"
    end = time.monotonic() + deadline_s
    while not ready(port):
        if proc.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with {proc.returncode} waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > end:
            stop(proc)
            raise TimeoutError(
                f"timed out after {deadline_s:.0f} s waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)
    return proc, port


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM (Prometheus closes its TSDB), then SIGKILL after `grace_s`."""
    procs.stop(proc, grace_s)
