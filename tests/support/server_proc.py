"""Start `python -m capstan_trainer.serve` as a subprocess on a free loopback port, and small
HTTP helpers for talking to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from hack.localcluster.ports import free_port

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log_path: str

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def launch(model_uri: str, log_path: str, *args: str, env: dict[str, str] | None = None) -> Server:
    """Start the server process without waiting for it (start several, then `wait_ready` each)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POD_IP": "127.0.0.1", **(env or {})}
    cmd = [sys.executable, "-m", "capstan_trainer.serve", "--model", model_uri, "--port", str(port), *args]
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    return Server(proc, f"http://127.0.0.1:{port}", log_path)


def wait_ready(server: Server, within_s: float = 90) -> Server:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode} before ready:\n{server.log()}")
        status, _ = get(server.url + "/readyz")
        if status == 200:
            return server
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"server not ready (GET /readyz != 200) within {within_s}s:\n{server.log()}")


def start(model_uri: str, log_path: str, *args: str, ready_within_s: float = 90) -> Server:
    return wait_ready(launch(model_uri, log_path, *args), ready_within_s)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def post(url: str, body: dict | bytes, timeout: float = 60, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={**JSON_HEADERS, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def stream(url: str, body: dict, timeout: float = 60, headers: dict | None = None) -> list[dict | str]:
    """POST with stream=true; the parsed `data:` payloads in order ("[DONE]" kept as a string)."""
    req = urllib.request.Request(
        url, data=json.dumps({**body, "stream": True}).encode(), headers={**JSON_HEADERS, **(headers or {})}
    )
    out: list[dict | str] = []
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def get_json(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
