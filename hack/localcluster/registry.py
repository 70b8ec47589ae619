"""The OCI registry (CNCF distribution) on loopback, over a storage folder that outlives it:
`make images` pushes into that folder, every cluster that starts serves it, so a warm start
pushes and pulls nothing."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path


def config(storage: Path, port: int) -> str:
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def command(binary: str, config_path: Path) -> list[str]:
    return [binary, "serve", str(config_path)]


def ready(port: int) -> bool:
    """GET /v2/ answers 200 on an open registry (the Distribution API's version check)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start(binary: str, storage: Path, port: int, log: Path, deadline_s: float = 30) -> subprocess.Popen:
    """A registry process of its own (for `make images`); the cluster spawns it with its marker."""
    storage.mkdir(parents=True, exist_ok=True)
    cfg = log.with_suffix(".yml")
    cfg.write_text(config(storage, port))
    proc = subprocess.Popen(command(binary, cfg), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    end = time.monotonic() + deadline_s
    while not ready(port):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise RuntimeError(
                f"registry on 127.0.0.1:{port} did not answer /v2/ within {deadline_s:.0f} s: "
                f"{log.read_text()[-2000:]}"
            )
        time.sleep(0.2)
    return proc
