"""Pod manifests for tests of the local node agent."""

from __future__ import annotations

import textwrap
from pathlib import Path

SHARED = "/shared"
"""SHARED is where `pod_yaml(host_dir=...)` mounts a folder of the test's inside the pod."""


def pod_yaml(
    name: str,
    script: str,
    restart: str = "Never",
    grace: int = 30,
    extra: str = "",
    host_dir: Path | None = None,
) -> str:
    """A pod running `script` with the trainer image's Python; `host_dir` (made writable for the
    image's non-root user) is mounted at SHARED, so the test and the pod can see one file."""
    mount = ""
    if host_dir is not None:
        host_dir.chmod(0o777)
        mount = (
            f"    volumeMounts: [{{name: shared, mountPath: {SHARED}}}]\n"
            f"  volumes: [{{name: shared, hostPath: {{path: {str(host_dir)!r}}}}}]\n"
        )
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
            image: capstan/trainer:0.1.0
            command: [python, -u, -c, {script!r}]
        """)
        + mount
        + extra
    )
