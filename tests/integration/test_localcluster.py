"""The local control plane and its node agent behave like a cluster to a user of kubectl."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
PY = sys.executable


def pod_yaml(name: str, script: str, restart: str = "Never", grace: int = 30, extra: str = "") -> str:
    return (
        textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}}}
        spec:
          restartPolicy: {restart}
          terminationGracePeriodSeconds: {grace}
          containers:
          - name: main
            image: capstan/workload:dev
            command: [python, -u, -c, {script!r}]
        """)
        + extra
    )


def test_nodes_are_ready_with_gpus(cluster):
    nodes = cluster.list("nodes", namespace="default")
    assert len(nodes) == 2
    for n in nodes:
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready == "True", n["metadata"]["name"]
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    version = cluster.kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.37.2"' in version


def test_pod_runs_and_logs(cluster, namespace):
    cluster.apply(pod_yaml("hello", "print('hello')"), namespace)
    cluster.wait_for("pod hello to succeed", lambda: cluster.pod_phase("hello", namespace) == "Succeeded")
    assert cluster.kubectl("logs", "hello", "-n", namespace).stdout == "hello\n"
    status = cluster.get("pod", "hello", namespace)["status"]
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert status["podIP"].startswith("127.")


def test_env_volumes_and_in_cluster_client(cluster, namespace):
    """configMap/secret env and volumes, downward API, and the mounted service-account token
    that lets an unmodified in-cluster client talk to the API server."""
    script = (
        "import os; from kubernetes import client, config; config.load_incluster_config();"
        "v1 = client.CoreV1Api();"
        "print('pods', [p.metadata.name for p in v1.list_namespaced_pod(os.environ['NS']).items]);"
        "print('greeting', open('/etc/capstan-test/greeting').read());"
        "print('env', os.environ['GREETING'], os.environ['TOKEN'], os.environ['POD_IP'] == os.environ['MY_IP']);"
        "import socket; print('self', socket.gethostbyname(socket.gethostname()) == os.environ['POD_IP'])"
    )
    manifest = textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: envtest}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: capstan/workload:dev
            command: [python, -u, -c, {script!r}]
            env:
            - {{name: NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
            - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
            - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}}}
            - {{name: TOKEN, valueFrom: {{secretKeyRef: {{name: sec, key: token}}}}}}
            - {{name: MY_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
            envFrom:
            - configMapRef: {{name: cfg}}
              prefix: MY_
            volumeMounts:
            - {{name: cfg, mountPath: /etc/capstan-test}}
          volumes:
          - name: cfg
            configMap: {{name: cfg}}
        """)
    cluster.kubectl(
        "create",
        "configmap",
        "cfg",
        "-n",
        namespace,
        "--from-literal=greeting=hi",
        "--from-literal=IP=overridden-by-env",
    )
    cluster.kubectl("create", "secret", "generic", "sec", "-n", namespace, "--from-literal=token=s3cret")
    cluster.kubectl(
        "create",
        "rolebinding",
        "view",
        "-n",
        namespace,
        "--clusterrole=view",
        f"--serviceaccount={namespace}:default",
    )
    cluster.apply(manifest, namespace)
    cluster.wait_for(
        "pod envtest to finish", lambda: cluster.pod_phase("envtest", namespace) in ("Succeeded", "Failed")
    )
    out = cluster.kubectl("logs", "envtest", "-n", namespace).stdout
    assert cluster.pod_phase("envtest", namespace) == "Succeeded", out
    assert "pods ['envtest']" in out
    assert "greeting hi" in out
    assert "env hi s3cret True" in out
    assert "self True" in out


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
                image: capstan/workload:dev
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
                image: capstan/workload:dev
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


def test_restart_policy_on_failure_restarts_and_keeps_previous_logs(cluster, namespace):
    script = "import time; print('attempt', time.time()); raise SystemExit(3)"
    cluster.apply(pod_yaml("crash", script, restart="OnFailure"), namespace)

    def restarts():
        pod = cluster.get("pod", "crash", namespace)
        cs = (pod["status"].get("containerStatuses") or [{}])[0]
        return cs.get("restartCount", 0) >= 2 and cs

    cs = cluster.wait_for("restartCount to reach 2", restarts, timeout=60)
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cluster.pod_phase("crash", namespace) == "Running"
    prev = cluster.kubectl("logs", "crash", "-n", namespace, "--previous").stdout
    assert prev.startswith("attempt ")


def test_logs_follow_streams_until_exit(cluster, namespace):
    script = "import time\nfor i in range(3):\n    print('tick', i, flush=True); time.sleep(1)"
    cluster.apply(pod_yaml("ticker", script), namespace)
    cluster.wait_for(
        "ticker to run", lambda: cluster.pod_phase("ticker", namespace) in ("Running", "Succeeded")
    )
    out = cluster.kubectl("logs", "-f", "ticker", "-n", namespace, timeout=30).stdout
    assert out == "tick 0\ntick 1\ntick 2\n"


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill-after-grace"])
def test_delete_stops_process_within_grace(cluster, namespace, tmp_path, ignore_term):
    pidfile = tmp_path / "pid"
    script = (
        "import os, signal, time; "
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else "")
        + f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    )
    cluster.apply(pod_yaml("sleeper", script, grace=2), namespace)
    cluster.wait_for("the pod's process to write its pid", lambda: pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    os.kill(pid, 0)  # it is running
    start = time.monotonic()
    cluster.kubectl("delete", "pod", "sleeper", "-n", namespace, "--wait=false")

    def dead():
        try:
            os.kill(pid, 0)
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except ProcessLookupError:
            return True

    cluster.wait_for(f"process {pid} to stop", dead, timeout=15, interval=0.1)
    elapsed = time.monotonic() - start
    # With SIGTERM honoured it stops at once; ignoring it, SIGKILL comes after the 2 s grace.
    assert elapsed < 2 + 5, elapsed
    cluster.wait_for("the pod object to be removed", lambda: cluster.get("pod", "sleeper", namespace) is None)


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
    assert len(_marked_processes(state["id"])) >= 6  # etcd, 3 control-plane, agent, the pod
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


def test_init_containers_run_first_and_share_empty_dir(cluster, namespace):
    cluster.apply(
        textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: staged}
        spec:
          restartPolicy: Never
          initContainers:
          - name: fetch
            image: capstan/workload:dev
            command: [sh, -c, 'echo fetched > /scratch/data.txt']
            volumeMounts: [{name: work, mountPath: /scratch}]
          containers:
          - name: main
            image: capstan/workload:dev
            command: [cat, /scratch/data.txt]
            volumeMounts: [{name: work, mountPath: /scratch}]
          volumes:
          - {name: work, emptyDir: {}}
        """),
        namespace,
    )
    cluster.wait_for("pod staged to succeed", lambda: cluster.pod_phase("staged", namespace) == "Succeeded")
    assert cluster.kubectl("logs", "staged", "-n", namespace, "-c", "main").stdout == "fetched\n"
    init = cluster.get("pod", "staged", namespace)["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"


def test_failing_liveness_probe_restarts_the_container(cluster, namespace, tmp_path):
    flag = tmp_path / "alive"
    flag.write_text("")
    cluster.apply(
        textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: probed}}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: main
            image: capstan/workload:dev
            command: [sleep, "600"]
            livenessProbe:
              exec: {{command: [test, -e, {flag}]}}
              periodSeconds: 1
              failureThreshold: 2
        """),
        namespace,
    )
    cluster.wait_for("probed to run", lambda: cluster.pod_phase("probed", namespace) == "Running")
    flag.unlink()  # the probe starts failing

    def restarted():
        cs = cluster.get("pod", "probed", namespace)["status"]["containerStatuses"][0]
        return cs["restartCount"] >= 1 and cs

    cs = cluster.wait_for("a restart after the liveness probe fails", restarted, timeout=60)
    # sleep dies of the SIGTERM the agent sends: 128 + 15, as a shell would report it.
    assert cs["lastState"]["terminated"]["exitCode"] == 143


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
            "--image=capstan/workload:dev",
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
