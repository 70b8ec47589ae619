"""The real operator process (`python -m capstan_operator`) for integration tests: started
against the local cluster, watching one namespace, with liveness and metrics on free loopback
ports and its JSON log in a file; killed at the end if still running."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hack.localcluster.ports import free_port


def http_get(url: str) -> tuple[int, str]:
    """(status, body); status 0 with the error text when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except OSError as exc:
        return 0, str(exc)


@dataclass
class OperatorProcess:
    cluster: object
    """cluster is the tests' ClusterHandle (its env carries the kubeconfig)."""
    namespace: str
    log: Path
    """log is the file both stdout and stderr go to; a restart appends to it."""
    env: dict[str, str] = field(default_factory=dict)
    """env holds extra CAPSTAN_* settings."""
    ports: dict[str, int] = field(default_factory=lambda: {"liveness": free_port(), "metrics": free_port()})
    proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        env = {
            **self.cluster.env,
            "CAPSTAN_NAMESPACES": self.namespace,
            "CAPSTAN_BIND_ADDRESS": "127.0.0.1",
            "CAPSTAN_LIVENESS_PORT": str(self.ports["liveness"]),
            "CAPSTAN_METRICS_PORT": str(self.ports["metrics"]),
            **self.env,
        }
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "capstan_operator"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return self.proc

    def url(self, endpoint: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[endpoint]}{path}"

    def live(self) -> bool:
        return http_get(self.url("liveness", "/healthz"))[0] == 200

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, as when a node or the pod dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""
