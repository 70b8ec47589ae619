"""Pods run from their images on the local node: pulled from the registry `make images` pushed
to, run inside the image's root filesystem with the kubelet's rules for command, environment,
user and read-only root, and pull or start failures reported as the kubelet reports them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

TRAINER = "capstan/trainer:0.1.0"
OPERATOR = "capstan/operator:0.1.0"
PUSHED = Path(__file__).resolve().parents[2] / ".capstan" / "images" / "pushed.json"
"""PUSHED: what `make images` pushed (the base image's tag among them)."""


def pod(name: str, image: str, container: str = "", pod_extra: str = "", restart: str = "Never") -> str:
    """A one-container pod; `container` and `pod_extra` are YAML lines at those levels."""
    c = textwrap.indent(textwrap.dedent(container), "    ")
    p = textwrap.indent(textwrap.dedent(pod_extra), "  ")
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
{c}{p}"""


def finished(cluster, name: str, namespace: str, timeout: float = 90) -> dict:
    return cluster.wait_for(
        f"pod {name} to finish",
        lambda: (
            cluster.pod_phase(name, namespace) in ("Succeeded", "Failed")
            and cluster.get("pod", name, namespace)
        ),
        timeout=timeout,
    )


def waiting(cluster, name: str, namespace: str, reasons: set[str], timeout: float = 60) -> dict:
    def check():
        p = cluster.get("pod", name, namespace) or {}
        for cs in (p.get("status") or {}).get("containerStatuses") or []:
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in reasons:
                return w
        return None

    return cluster.wait_for(f"pod {name} to wait with one of {sorted(reasons)}", check, timeout=timeout)


def logs(cluster, name: str, namespace: str) -> str:
    return cluster.kubectl("logs", name, "-n", namespace).stdout


def test_image_cmd_env_user_and_workdir_apply_when_the_pod_sets_none(cluster, namespace):
    # No command, no args: the image's Cmd (the trainer's --help) runs as the image's user.
    cluster.apply(pod("cmd", TRAINER), namespace)
    assert finished(cluster, "cmd", namespace)["status"]["phase"] == "Succeeded"
    assert "usage:" in logs(cluster, "cmd", namespace)
    script = "import json, os; print(json.dumps([os.getuid(), os.getgid(), os.getcwd(), os.environ['PYTHONPATH'], os.environ['HOME']]))"
    cluster.apply(pod("env", TRAINER, f"args: [python, -c, {script!r}]\n"), namespace)
    p = finished(cluster, "env", namespace)
    assert p["status"]["phase"] == "Succeeded", logs(cluster, "env", namespace)
    assert json.loads(logs(cluster, "env", namespace)) == [65532, 65532, "/tmp", "/opt/capstan-app", "/tmp"]
    cs = p["status"]["containerStatuses"][0]
    assert cs["imageID"].startswith("capstan/trainer:0.1.0@sha256:")


def test_command_replaces_the_entrypoint_and_security_context_sets_the_user(cluster, namespace):
    # The operator image's Entrypoint is `python -m capstan_operator`; command replaces it.
    container = """\
    command: [python, -c, "import os, capstan_operator; print(os.getuid(), os.getgid(), sorted(os.getgroups()))"]
    securityContext: {runAsUser: 1234, runAsGroup: 2345}
    """
    cluster.apply(
        pod("who", OPERATOR, container, "securityContext: {fsGroup: 3456, supplementalGroups: [4567]}\n"),
        namespace,
    )
    assert finished(cluster, "who", namespace)["status"]["phase"] == "Succeeded", logs(
        cluster, "who", namespace
    )
    assert logs(cluster, "who", namespace).strip() == "1234 2345 [3456, 4567]"


def test_read_only_root_filesystem_leaves_only_volumes_writable(cluster, namespace):
    script = (
        "import pathlib\n"
        "pathlib.Path('/scratch/ok').write_text('x')\n"
        "try:\n"
        "    pathlib.Path('/opt/capstan/nope').write_text('x')\n"
        "except OSError as e:\n"
        "    print('root:', e.strerror)\n"
    )
    container = f"""\
    command: [python, -c, {json.dumps(script)}]
    securityContext: {{readOnlyRootFilesystem: true}}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
    """
    cluster.apply(pod("ro", TRAINER, container, "volumes: [{name: scratch, emptyDir: {}}]\n"), namespace)
    assert finished(cluster, "ro", namespace)["status"]["phase"] == "Succeeded", logs(
        cluster, "ro", namespace
    )
    assert logs(cluster, "ro", namespace).strip() == "root: Read-only file system"
    # Without it the container writes its own layer: the image on the node is not touched.
    cluster.apply(
        pod("rw", TRAINER, "command: [sh, -c, 'echo x > /tmp/mine && cat /tmp/mine']\n"),
        namespace,
    )
    assert finished(cluster, "rw", namespace)["status"]["phase"] == "Succeeded", logs(
        cluster, "rw", namespace
    )
    cluster.apply(pod("clean", TRAINER, "command: [sh, -c, 'test ! -e /tmp/mine']\n"), namespace)
    assert finished(cluster, "clean", namespace)["status"]["phase"] == "Succeeded"


def test_run_as_non_root_refuses_an_image_that_runs_as_root(cluster, namespace):
    base = json.loads(PUSHED.read_text())["base"]["tag"]
    container = "command: [id]\nsecurityContext: {runAsNonRoot: true}\n"
    cluster.apply(pod("rooted", f"capstan/base:{base}", container), namespace)
    w = waiting(cluster, "rooted", namespace, {"CreateContainerConfigError"})
    assert "container has runAsNonRoot and image will run as root" in w["message"]
    assert cluster.pod_phase("rooted", namespace) == "Pending"


@pytest.mark.parametrize(
    "image", ["capstan/no-such-image:1", "capstan/trainer:no-such-tag"], ids=["missing-image", "missing-tag"]
)
def test_an_image_that_cannot_be_pulled_backs_off_as_the_kubelet_does(cluster, namespace, image):
    cluster.apply(pod("nopull", image, 'command: ["true"]\n'), namespace)
    first = waiting(cluster, "nopull", namespace, {"ErrImagePull", "ImagePullBackOff"})
    assert image in first["message"]
    backoff = waiting(cluster, "nopull", namespace, {"ImagePullBackOff"})
    assert backoff["message"] == f'Back-off pulling image "{image}"'
    assert cluster.pod_phase("nopull", namespace) == "Pending"


def test_a_command_the_image_does_not_have_is_a_start_error(cluster, namespace):
    cluster.apply(pod("noexec", TRAINER, "command: [no-such-binary, --flag]\n"), namespace)
    p = finished(cluster, "noexec", namespace)
    term = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (p["status"]["phase"], term["reason"], term["exitCode"]) == ("Failed", "StartError", 128)
    assert 'exec: "no-such-binary": executable file not found in $PATH' in term["message"]
    assert TRAINER in term["message"]


def test_pull_policy_never_uses_only_what_the_node_has(cluster, namespace):
    cluster.apply(
        pod("never", "capstan/not-on-the-node:1", 'command: ["true"]\nimagePullPolicy: Never\n'), namespace
    )
    w = waiting(cluster, "never", namespace, {"ErrImageNeverPull"})
    assert "is not present with pull policy of Never" in w["message"]
    cluster.apply(pod("present", TRAINER, 'command: ["true"]\nimagePullPolicy: Never\n'), namespace)
    assert finished(cluster, "present", namespace)["status"]["phase"] == "Succeeded"
