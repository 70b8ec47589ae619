"""The local control plane behaves like a cluster to a user of kubectl: Ready GPU nodes, pods that
reach each other by DNS and through Services, and a lifecycle that leaves nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.pods import pod_yaml

pytestmark = pytest.mark.cluster
PY = sys.executable


def test_nodes_are_ready_with_gpus(cluster):
    nodes = cluster.list("nodes", namespace="default")
    assert len(nodes) == 2
    for n in nodes:
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready == "True", n["metadata"]["name"]
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    version = cluster.kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.37.2"' in version


def test_indexed_job_pods_reach_each_other_by_dns(cluster, namespace):
    script = textwrap.dedent("""\
        import os, socket, time
        i = int(os.environ['JOB_COMPLETION_INDEX'])
        me, peer = f'pair-{i}', f'pair-{1 - i}.pair'
        srv = socket.create_server((socket.gethostbyname(me), 9000))
        srv.settimeout(60)
        deadline = time.time() + 60
        while True:
            try:
                c = socket.create_connection((peer, 9000), timeout=2); break
            except OSError:
                if time.time() > deadline: raise
                time.sleep(0.2)
        c.sendall(f'hello from {i}'.encode()); c.close()
        conn, _ = srv.accept(); print('got', conn.recv(100).decode())
        """)
    cluster.apply(
        textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: pair}}
        spec:
          clusterIP: None
          selector: {{job-name: pair}}
        ---
        apiVersion: batch/v1
        kind: Job
        metadata: {{name: pair}}
        spec:
          completions: 2
          parallelism: 2
          completionMode: Indexed
          backoffLimit: 0
          template:
            spec:
              subdomain: pair
              restartPolicy: Never
              containers:
              - name: main
                image: capstan/trainer:0.1.0
                command: [python, -u, -c, {script!r}]
        """),
        namespace,
    )

    def done():
        job = cluster.get("job", "pair", namespace)
        conds = {c["type"]: c["status"] for c in job["status"].get("conditions") or []}
        return (
            "Complete"
            if conds.get("Complete") == "True"
            else "Failed"
            if conds.get("Failed") == "True"
            else None
        )

    result = cluster.wait_for("job pair to finish", done, timeout=90)
    logs = cluster.kubectl("logs", "-n", namespace, "-l", "job-name=pair", "--prefix").stdout
    assert result == "Complete", logs
    assert "got hello from 1" in logs and "got hello from 0" in logs


def test_deployment_service_readiness_and_replacement(cluster, namespace):
    server = textwrap.dedent("""\
        import http.server, os
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = os.environ['HOSTNAME'].encode()
                self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
                self.wfile.write(body)
        http.server.HTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()
        """)
    cluster.apply(
        textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: web}}
        spec:
          replicas: 2
          selector: {{matchLabels: {{app: web}}}}
          template:
            metadata: {{labels: {{app: web}}}}
            spec:
              terminationGracePeriodSeconds: 2
              containers:
              - name: web
                image: capstan/trainer:0.1.0
                command: [python, -u, -c, {server!r}]
                env:
                - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
                ports: [{{name: http, containerPort: 8080}}]
                readinessProbe:
                  httpGet: {{path: /, port: http}}
                  periodSeconds: 1
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: web}}
        spec:
          selector: {{app: web}}
          ports: [{{port: 80, targetPort: 8080}}]
        """),
        namespace,
    )

    def ready_pods():
        pods = cluster.list("pods", namespace, "app=web")
        ready = [
            p["metadata"]["name"]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []
            )
        ]
        return sorted(ready) if len(ready) == 2 else None

    before = cluster.wait_for("2 ready web pods", ready_pods, timeout=60)
    client = "import urllib.request; print('answer', urllib.request.urlopen('http://web:8080/', timeout=5).read().decode())"
    cluster.apply(pod_yaml("client", client), namespace)
    cluster.wait_for(
        "client pod to finish", lambda: cluster.pod_phase("client", namespace) in ("Succeeded", "Failed")
    )
    out = cluster.kubectl("logs", "client", "-n", namespace).stdout
    assert any(f"answer {name}" in out for name in before), out

    cluster.kubectl("delete", "pod", before[0], "-n", namespace, "--wait=false")
    after = cluster.wait_for(
        "the deleted web pod to be replaced by a ready one",
        lambda: (r := ready_pods()) and before[0] not in r and r,
        timeout=60,
    )
    assert before[1] in after and len(after) == 2


def test_cluster_down_leaves_no_processes(tmp_path):
    """A second, small cluster: start it, run a pod, stop it with the CLI, find nothing left."""
    repo = Path(__file__).resolve().parents[2]
    root = tmp_path / "c"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    subprocess.run(
        [PY, "-m", "hack.localcluster", "up", "--root", str(root), "--nodes", "1", "--no-s3"],
        check=True,
        env=env,
        cwd=repo,
        timeout=180,
        capture_output=True,
    )
    from hack.localcluster.cluster import Cluster, ClusterOptions, _marked_processes
    from tests.support.cluster import ClusterHandle

    c = ClusterHandle(
        Cluster(ClusterOptions(root=root, bin_dir=repo / ".capstan" / "bin", nodes=1, s3=False))
    )
    state = c.cluster._state()
    c.apply(pod_yaml("sleeper", "import time; time.sleep(600)"))
    c.wait_for("sleeper to run", lambda: c.pod_phase("sleeper") == "Running")
    assert len(_marked_processes(state["id"])) >= 7  # etcd, 3 control-plane, Prometheus, agent, the pod
    assert "prometheus" in state["pids"]
    subprocess.run(
        [PY, "-m", "hack.localcluster", "down", "--root", str(root)],
        check=True,
        env=env,
        cwd=repo,
        timeout=120,
        capture_output=True,
    )
    assert _marked_processes(state["id"]) == []
    for name, pid in state["pids"].items():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], (
            name
        )


def test_simulate_mode_runs_no_processes(tmp_path):
    """Scale-test mode: pods turn Running and Ready without any process being started, and a
    deleted pod is gone at once (no 30 s grace: nothing runs that could need it)."""
    repo = Path(__file__).resolve().parents[2]
    from hack.localcluster.cluster import Cluster, ClusterOptions, _marked_processes
    from tests.support.cluster import ClusterHandle

    c = Cluster(
        ClusterOptions(
            root=tmp_path / "sim", bin_dir=repo / ".capstan" / "bin", nodes=3, s3=False, simulate=True
        )
    )
    c.up()
    try:
        h = ClusterHandle(c)
        before = len(_marked_processes(c._state()["id"]))
        h.kubectl(
            "create",
            "deployment",
            "many",
            "--image=capstan/trainer:0.1.0",
            "--replicas=20",
            "--",
            "sleep",
            "600",
        )
        h.wait_for(
            "20 ready replicas",
            lambda: h.get("deployment", "many")["status"].get("readyReplicas") == 20,
            timeout=60,
        )
        assert len(_marked_processes(c._state()["id"])) == before
        nodes = {p["spec"]["nodeName"] for p in h.list("pods", selector="app=many")}
        assert len(nodes) == 3  # spread over every simulated node
        h.kubectl("scale", "deployment", "many", "--replicas=0")
        h.wait_for(
            "the 20 simulated pods to be deleted (not left Terminating)",
            lambda: len(h.list("pods", selector="app=many")) == 0,
            timeout=20,
        )
    finally:
        c.down()
