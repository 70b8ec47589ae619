"""Reconcile scale: N TrainingRuns (2 pods each) applied at once to a local control plane whose
node agent simulates pods (Running without processes).

Measures, for the operator path: time until every Job and pod exists, time until every status
says Running, the operator's peak RSS and CPU seconds, and API requests per TrainingRun (the
API server's priority-and-fairness counter for the operator's ServiceAccount flow schema).
Baseline in the same run: the same Jobs (from the same builder) created directly by this script,
timed until every pod exists. Prints the ratio operator / direct.

    .venv/bin/python -m bench.operator_scale --runs 1000     (from the repository root)
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import kube
from capstan_operator.config import OperatorConfig
from capstan_operator.trainingrun import build
from hack.localcluster.cluster import Cluster, ClusterOptions
from hack.localcluster.ports import free_port
from tests.support.cluster import ClusterHandle
from tests.support.driver import use_kubeconfig
from tests.support.operator_proc import http_get

REPO = Path(__file__).resolve().parents[1]
SA_FLOW = "service-accounts"  # APF flow schema of ServiceAccounts outside kube-system


def run_spec(i: int) -> dict:
    return {
        "datasets": [{"uri": "s3://bench/data/manifest.json"}],
        "model": {"preset": "test"},
        "optimizer": {"globalBatchTokens": 256, "microBatch": 2, "seqLen": 32, "totalSteps": 1000},
        "resources": {"minNodes": 2, "maxNodes": 2, "nprocPerNode": 1},
        "checkpoint": {"uri": f"s3://bench/ckpt/run-{i}"},
    }


def body(i: int, ns: str) -> dict:
    return {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": f"run-{i}", "namespace": ns},
        "spec": run_spec(i),
    }


def wait(what: str, check, timeout: float, interval: float = 1.0) -> float:
    """Seconds until check() is truthy; raises naming `what` after `timeout`."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        last = check()
        if last is True:
            return time.monotonic() - t0
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last}")


def count(api_version: str, kind: str, ns: str, pred=lambda o: True) -> int:
    return sum(1 for o in kube.list_(api_version, kind, ns) if pred(o))


def pods_state(ns: str, n: int, want: str) -> bool | str:
    pods = kube.list_("v1", "Pod", ns)
    running = sum(1 for o in pods if (o.get("status") or {}).get("phase") == "Running")
    done = len(pods) if want == "exist" else running
    return True if done >= 2 * n else f"{len(pods)} pods, {running} Running"


def apf_requests(h: ClusterHandle) -> float:
    text = h.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_flowcontrol_dispatched_requests_total")
            and f'flow_schema="{SA_FLOW}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def operator_kubeconfig(h: ClusterHandle, path: Path) -> Path:
    """A kubeconfig with a ServiceAccount token, so the operator's requests are countable."""
    h.kubectl("create", "namespace", "capstan-system", check=False)
    h.kubectl("create", "serviceaccount", "bench-operator", "-n", "capstan-system", check=False)
    h.kubectl(
        "create",
        "clusterrolebinding",
        "bench-operator",
        "--clusterrole=cluster-admin",
        "--serviceaccount=capstan-system:bench-operator",
        check=False,
    )
    token = h.kubectl(
        "create", "token", "bench-operator", "-n", "capstan-system", "--duration=2h"
    ).stdout.strip()
    cfg = json.loads(h.kubectl("config", "view", "--raw", "-o", "json").stdout)
    cfg["users"] = [{"name": "bench-operator", "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = "bench-operator"
    path.write_text(json.dumps(cfg))
    return path


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return hwm, (int(fields[11]) + int(fields[12])) / ticks


def reconcile_totals(metrics_text: str) -> tuple[float, float]:
    """(TrainingRun reconciles, seconds spent in them) from the operator's /metrics."""
    count = busy = 0.0
    for line in metrics_text.splitlines():
        if 'kind="TrainingRun"' not in line:
            continue
        if line.startswith("capstan_reconciles_total"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("capstan_reconcile_duration_seconds_sum"):
            busy += float(line.rsplit(" ", 1)[1])
    return count, busy


def create_all(objs: list[dict], create) -> None:
    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(create, objs))


def baseline(h: ClusterHandle, n: int, cfg: OperatorConfig, timeout: float) -> tuple[float, float]:
    """Seconds until the same children, created directly, have every pod existing and Running."""
    h.namespace("direct")
    children = []
    for i in range(n):
        b = {**body(i, "direct"), "metadata": {"name": f"run-{i}", "namespace": "direct", "uid": f"u{i}"}}
        for o in build.build(b, TrainingRunSpec.model_validate(b["spec"]), cfg):
            meta = {k: v for k, v in o["metadata"].items() if k != "ownerReferences"}
            children.append({**o, "metadata": meta})
    t0 = time.monotonic()
    create_all(children, kube.apply)
    wait(f"{2 * n} direct pods", lambda: pods_state("direct", n, "exist"), timeout, 0.5)
    direct_exist = time.monotonic() - t0
    wait(f"{2 * n} direct pods Running", lambda: pods_state("direct", n, "Running"), timeout, 0.5)
    direct_running = time.monotonic() - t0
    # The baseline's pods hold node capacity (250 pods a node) until they are gone.
    h.kubectl("delete", "namespace", "direct", "--wait=true", "--timeout=600s", timeout=660)
    return direct_exist, direct_running


@dataclass
class OperatorRun:
    """What the operator path took, from the moment the TrainingRuns were created."""

    applied: float  # s to create every TrainingRun
    t_children: float  # s until every Job and pod exists
    t_running: float  # s until every status says Running
    rss: float  # operator peak RSS, MiB
    cpu: float  # operator CPU, s
    reqs: float  # API requests by the operator's ServiceAccount
    reconciles: float
    busy: float  # s spent in reconciles


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=10, help="simulated nodes (250 pods each)")
    p.add_argument("--workers", type=int, default=8, help="operator reconcile threads")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the direct baseline (for profiling; no ratio)"
    )
    return p.parse_args()


def start_operator(h: ClusterHandle, root: Path, workers: int) -> tuple[subprocess.Popen, int]:
    """The operator watching namespace bench as a ServiceAccount; returns it and its metrics port."""
    kc = operator_kubeconfig(h, root / "operator.kubeconfig")
    metrics_port = free_port()
    env = {
        **h.env,
        "KUBECONFIG": str(kc),
        "CAPSTAN_NAMESPACES": "bench",
        "CAPSTAN_LOG_LEVEL": "WARNING",
        "CAPSTAN_WORKERS": str(workers),
        "CAPSTAN_LIVENESS_PORT": "0",
        "CAPSTAN_METRICS_PORT": str(metrics_port),
        "CAPSTAN_BIND_ADDRESS": "127.0.0.1",
    }
    with (root / "operator.log").open("w") as log:
        op = subprocess.Popen([sys.executable, "-m", "capstan_operator"], env=env, stdout=log, stderr=log)
    time.sleep(3)  # let it list and watch (an empty namespace) before the burst
    return op, metrics_port


def measure_operator(
    h: ClusterHandle, op: subprocess.Popen, metrics_port: int, n: int, timeout: float
) -> OperatorRun:
    """Create n TrainingRuns at once; time their children and their Running status."""
    req0 = apf_requests(h)
    crd = client.CustomObjectsApi(kube.api_client())
    t0 = time.monotonic()
    create_all(
        [body(i, "bench") for i in range(n)],
        lambda b: crd.create_namespaced_custom_object("capstan.dev", "v1alpha1", "bench", "trainingruns", b),
    )
    applied = time.monotonic() - t0

    def all_children() -> bool | str:
        jobs = count("batch/v1", "Job", "bench")
        return True if jobs >= n and pods_state("bench", n, "exist") is True else f"{jobs} Jobs"

    def all_running() -> bool | str:
        runs = kube.list_custom("trainingruns", "bench")
        running = sum(1 for r in runs if (r.get("status") or {}).get("phase") == "Running")
        return True if running >= n else f"{running} Running"

    wait(f"{n} Jobs and {2 * n} pods", all_children, timeout)
    t_children = time.monotonic() - t0
    wait(f"{n} TrainingRuns Running", all_running, timeout)
    t_running = time.monotonic() - t0
    rss, cpu = proc_stats(op.pid)
    reqs = apf_requests(h) - req0
    reconciles, busy = reconcile_totals(http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1])
    return OperatorRun(applied, t_children, t_running, rss, cpu, reqs, reconciles, busy)


def report(a: argparse.Namespace, r: OperatorRun, direct: tuple[float, float] | None) -> None:
    n = a.runs
    each_ms = 1000 * r.busy / max(r.reconciles, 1)
    print(f"TrainingRuns: {n} (2 pods each), simulated nodes: {a.nodes}, operator workers: {a.workers}")
    print(f"  created {n} TrainingRuns in               {r.applied:7.1f} s")
    print(f"  every Job and pod exists after            {r.t_children:7.1f} s")
    print(f"  every status Running after                {r.t_running:7.1f} s")
    print(f"  operator peak RSS                         {r.rss:7.0f} MiB")
    print(f"  operator CPU                              {r.cpu:7.1f} s")
    print(f"  API requests by the operator              {r.reqs:7.0f} ({r.reqs / n:.1f} per TrainingRun)")
    print(
        f"  reconciles                                {r.reconciles:7.0f}"
        f" ({r.reconciles / n:.1f} per TrainingRun, {each_ms:.0f} ms each on average)"
    )
    if direct is None:
        return
    direct_exist, direct_running = direct
    print(f"baseline: the same children created directly: all {2 * n} pods exist after {direct_exist:.1f} s,")
    print(f"          all Running after {direct_running:.1f} s")
    exist_ratio, running_ratio = r.t_children / direct_exist, r.t_running / direct_running
    print(f"ratio operator / direct: children exist {exist_ratio:.2f}, Running {running_ratio:.2f}")


def main() -> int:
    a = parse_args()
    root = Path(tempfile.mkdtemp(prefix="capstan-scale-"))
    options = ClusterOptions(
        root=root,
        bin_dir=REPO / ".capstan" / "bin",
        nodes=a.nodes,
        gpus_per_node=8,
        cpus_per_node=1000,
        memory_per_node="4000Gi",
        simulate=True,
    )
    c = Cluster(options)
    c.up()
    h = ClusterHandle(c)
    use_kubeconfig(str(h.kubeconfig))
    op = None
    try:
        h.kubectl("apply", "-f", str(REPO / "manifests" / "crds"))
        h.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/trainingruns.capstan.dev")
        cfg = OperatorConfig()
        direct = None if a.no_baseline else baseline(h, a.runs, cfg, a.timeout)
        h.namespace("bench")
        op, metrics_port = start_operator(h, root, a.workers)
        result = measure_operator(h, op, metrics_port, a.runs, a.timeout)
    finally:
        if op is not None:
            op.terminate()
            op.wait(30)
        c.down(quiet=True)
    report(a, result, direct)
    return 0


if __name__ == "__main__":
    sys.exit(main())
