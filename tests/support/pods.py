"""Pod manifests for tests of the local node agent."""

from __future__ import annotations

import textwrap


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
