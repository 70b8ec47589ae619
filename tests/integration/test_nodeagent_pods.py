"""One pod's life on the node agent as kubectl shows it: logs, env and volumes, restarts, probes,
init containers, and deletion within the grace period."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.pods import SHARED, pod_yaml

pytestmark = pytest.mark.cluster


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
            image: capstan/operator:0.1.0  # the in-cluster client: kubernetes is in this image
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
        + f"open('{SHARED}/pid', 'w').write(str(os.getpid())); time.sleep(600)"
    )
    cluster.apply(pod_yaml("sleeper", script, grace=2, host_dir=tmp_path), namespace)
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
            image: capstan/trainer:0.1.0
            command: [sh, -c, 'echo fetched > /scratch/data.txt']
            volumeMounts: [{name: work, mountPath: /scratch}]
          containers:
          - name: main
            image: capstan/trainer:0.1.0
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
    tmp_path.chmod(0o755)
    cluster.apply(
        textwrap.dedent(f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: probed}}
        spec:
          terminationGracePeriodSeconds: 1
          containers:
          - name: main
            image: capstan/trainer:0.1.0
            command: [sleep, "600"]
            volumeMounts: [{{name: probe, mountPath: /probe}}]
            livenessProbe:
              exec: {{command: [test, -e, /probe/alive]}}
              periodSeconds: 1
              failureThreshold: 2
          volumes: [{{name: probe, hostPath: {{path: {str(tmp_path)!r}}}}}]
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
