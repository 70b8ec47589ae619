"""One container instance: a process in its own session and mount namespace, with its output
timestamped into a log file, plus its probes."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hack.localcluster.nodeagent import rootfs

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def rfc3339(t: float | None = None, nano: bool = False) -> str:
    d = dt.datetime.fromtimestamp(t if t is not None else time.time(), dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if nano else d.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class FromImage:
    """How a container runs from its image: the root filesystem and the user it runs as."""

    rootfs: rootfs.Rootfs
    uid: int
    gid: int
    groups: list[int]
    no_new_privs: bool
    error_file: Path
    """error_file receives why the command could not be executed (StartError)."""


def launch(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    mounts: list[Mount],
    log_path: Path,
    hosts_file: Path,
    hostname: str,
    image: FromImage | None = None,
) -> tuple[subprocess.Popen, threading.Thread]:
    """Start `argv` in private mount and UTS namespaces where /etc/hosts, the volumes and the
    hostname are the pod's own: inside the image's root filesystem when `image` is given, else
    on the node's own filesystem (the project's virtualenv; the fast test tiers)."""
    if image is not None:
        return _launch_from_image(argv, env, cwd, mounts, log_path, hosts_file, hostname, image)
    script = [f"hostname {shlex.quote(hostname)}", f"mount --bind {shlex.quote(str(hosts_file))} /etc/hosts"]
    for m in mounts:
        # Targets must exist to be mount points; creating an empty one outside is harmless.
        target = Path(m.target)
        if m.source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        opts = "-o bind,ro" if m.read_only else "--bind"
        script.append(f"mount {opts} {shlex.quote(str(m.source))} {shlex.quote(m.target)}")
    script.append(f"cd {shlex.quote(cwd)}")
    script.append('exec "$@"')
    return _spawn(script, argv, env, log_path)


def _launch_from_image(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    mounts: list[Mount],
    log_path: Path,
    hosts_file: Path,
    hostname: str,
    image: FromImage,
) -> tuple[subprocess.Popen, threading.Thread]:
    # The container's environment travels in a file only root can read (enter.py removes it):
    # the shell that builds the root filesystem runs with the node's PATH, not the image's.
    spec_path = image.rootfs.dir / "enter.json"
    image.rootfs.dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "root": str(image.rootfs.dir / "merged"),
        "cwd": cwd,
        "uid": image.uid,
        "gid": image.gid,
        "groups": image.groups,
        "no_new_privs": image.no_new_privs,
        "argv": argv,
        "env": env,
        "error_file": str(image.error_file),
    }
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    lines = [f"hostname {shlex.quote(hostname)}", *rootfs.script(image.rootfs, mounts, hosts_file)]
    lines.append(
        f"exec {shlex.quote(sys.executable)} -I {shlex.quote(str(rootfs.ENTER))} {shlex.quote(str(spec_path))}"
    )
    host_env = {"PATH": HOST_PATH, "LANG": "C.UTF-8"}
    if "CAPSTAN_LOCALCLUSTER" in env:  # lets `cluster down` find the process
        host_env["CAPSTAN_LOCALCLUSTER"] = env["CAPSTAN_LOCALCLUSTER"]
    return _spawn(lines, [], host_env, log_path)


def _spawn(
    script: list[str], argv: list[str], env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen, threading.Thread]:
    # Root gets real namespaces; anyone else maps themselves to root in a user namespace first.
    user_ns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    wrapped = [
        "unshare",
        *user_ns,
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        " && ".join(script),
        "container",
        *argv,
    ]
    proc = subprocess.Popen(
        wrapped,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pump = threading.Thread(target=_pump, args=(proc, log_path), daemon=True)
    pump.start()
    return proc, pump


def _pump(proc: subprocess.Popen, log_path: Path) -> None:
    # One line per write, each prefixed with its time, so `kubectl logs --timestamps/--since` work.
    with open(log_path, "ab", buffering=0) as out:
        for line in iter(proc.stdout.readline, b""):
            if not line.endswith(b"\n"):
                line += b"\n"
            out.write(rfc3339(nano=True).encode() + b" " + line)


def stop(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the container's process group, SIGKILL it after the grace period."""
    if proc.poll() is not None:
        return
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=max(grace_s, 0))
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@dataclass
class ProbeState:
    spec: dict
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0


@dataclass
class Instance:
    """A running (or finished) container instance and its probe bookkeeping."""

    name: str
    proc: subprocess.Popen
    pump: threading.Thread
    started_at: float
    restart_count: int
    log_path: Path
    probes: dict[str, ProbeState] = field(default_factory=dict)
    started: bool = False  # startup probe passed (or none)
    ready: bool = False
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""


def run_probe(probe: dict, pod_ip: str, ports: dict[str, int], pid: int, env: dict[str, str]) -> bool:
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            h = probe["httpGet"]
            port = ports.get(h["port"], h["port"]) if isinstance(h["port"], str) else h["port"]
            scheme = h.get("scheme", "HTTP").lower()
            url = f"{scheme}://{h.get('host') or pod_ip}:{port}{h.get('path', '/')}"
            req = urllib.request.Request(
                url, headers={x["name"]: x["value"] for x in h.get("httpHeaders") or []}
            )
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return 200 <= r.status < 400
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            port = ports.get(t["port"], t["port"]) if isinstance(t["port"], str) else t["port"]
            with socket.create_connection((t.get("host") or pod_ip, int(port)), timeout=timeout):
                return True
        if "exec" in probe:
            r = subprocess.run(
                # --root/--wd: inside the image's root filesystem when the container has one.
                [
                    "nsenter",
                    f"--mount=/proc/{pid}/ns/mnt",
                    f"--root=/proc/{pid}/root",
                    f"--wd=/proc/{pid}/cwd",
                    "--",
                    *probe["exec"]["command"],
                ],
                env=env,
                capture_output=True,
                timeout=timeout,
            )
            return r.returncode == 0
        if "grpc" in probe:
            return False
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return False
    return True
