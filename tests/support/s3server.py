"""A real S3 endpoint on loopback: moto's server in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from hack.localcluster.ports import free_port


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    access_key: str = "capstan"
    secret_key: str = "capstan-secret"
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_s3(port: int | None = None, log=None, deadline_s: float = 60.0) -> S3Server:
    port = port or free_port()
    # The module form works in thin venvs too (a worktree venv sees moto through a .pth file
    # but has no moto_server script of its own).
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    end = time.monotonic() + deadline_s
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).read()
            return S3Server(endpoint=endpoint, process=proc)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"moto_server exited with {proc.returncode} before serving {endpoint}"
                ) from None
            if time.monotonic() > end:
                proc.kill()
                raise TimeoutError(
                    f"moto_server did not answer on {endpoint} within {deadline_s:.0f} s"
                ) from None
            time.sleep(0.2)
