"""A handle on a running local control plane for tests: kubectl, apply, and waits with deadlines."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hack.localcluster.cluster import Cluster

S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
"""S3_SECRET_KEYS: what a Secret named by the operator's s3Secret holds."""


@dataclass
class ClusterHandle:
    cluster: Cluster

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses that talk to this cluster (kubectl, helm, the operator)."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if self.cluster.s3_env_file.exists():
            for line in self.cluster.s3_env_file.read_text().splitlines():
                k, _, v = line.partition("=")
                env[k] = v
        return env

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["kubectl", *args], env=self.env, capture_output=True, text=True, input=input, timeout=timeout
        )
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}{r.stdout}")
        return r

    def apply(self, manifest: str, namespace: str = "default") -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def create_s3_secret(self, name: str, namespace: str, env: dict[str, str]) -> None:
        """A generic Secret holding the S3_SECRET_KEYS of `env`, for the operator's workloads."""
        literals = [f"--from-literal={k}={env[k]}" for k in S3_SECRET_KEYS]
        self.kubectl("create", "secret", "generic", name, "-n", namespace, *literals)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict | None:
        r = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def list(self, kind: str, namespace: str = "default", selector: str = "") -> list[dict]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.kubectl(*args).stdout)["items"]

    def wait_for(self, what: str, check, timeout: float = 60, interval: float = 0.5):
        """Poll `check()` until it returns something truthy; fail naming `what` and the last value."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")

    def pod_phase(self, name: str, namespace: str = "default") -> str | None:
        pod = self.get("pod", name, namespace)
        return pod["status"].get("phase") if pod else None

    def namespace(self, name: str) -> str:
        """Create a namespace and wait until its default ServiceAccount exists (pods need it)."""
        self.kubectl("create", "namespace", name)
        self.wait_for(
            f"the default ServiceAccount in {name}",
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        )
        return name
