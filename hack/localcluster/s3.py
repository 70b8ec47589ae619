"""SeaweedFS as the S3 endpoint on loopback: `weed server` with its master, volume server, filer
and S3 gateway in one process, every port bound to 127.0.0.1, one identity (access key and
secret) allowed everything. The local cluster spawns it with its marker; the tests and the
benchmarks start their own with `start`. Standard library only, like the rest of the harness."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from hack.localcluster import procs
from hack.localcluster.ports import free_port

ACCESS_KEY = "capstan"
SECRET_KEY = "capstan-secret"
REGION = "us-east-1"  # SeaweedFS accepts any region; clients sign with this one

PORTS = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "admin",
    "admin_grpc",
)
"""PORTS: each server's HTTP and gRPC port, all given explicitly (weed's default gRPC port is the
HTTP port + 10000, past 65535 for a high free port)."""

WEED_ENV = {
    # One volume per bucket instead of 7: every test makes a bucket, volumes are files.
    "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
}
"""WEED_ENV: configuration that weed reads from the environment (master.toml keys)."""


def ports() -> dict[str, int]:
    return {name: free_port() for name in PORTS}


def env(port: int) -> dict[str, str]:
    """What a client needs to reach the S3 endpoint (the local cluster writes it to s3.env)."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
    }


def identities(access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> str:
    """The S3 gateway's -s3.config: the one identity, allowed every action on every bucket."""
    credentials = [{"accessKey": access_key, "secretKey": secret_key}]
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    return json.dumps({"identities": [{"name": access_key, "credentials": credentials, "actions": actions}]})


def command(binary: str, data_dir: Path, ports: dict[str, int], config: Path) -> list[str]:
    """`weed mini`: SeaweedFS's single-node mode (master, volume server, filer, S3 gateway, and an
    admin server with one maintenance worker). Unlike `weed server` it lifts the fresh cluster's
    holds on its first heartbeat, so writes work ~1 s after the S3 port answers, not ~9 s."""
    p = ports
    return [
        binary,
        "-logtostderr",  # into the caller's log file, not weed.* files in /tmp
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master_grpc']}",
        "-master.telemetry=false",
        f"-volume.port={p['volume']}",
        # Every bucket gets a volume of its own. Left to itself mini sizes volumes at 1 GiB and
        # allows free disk / 1 GiB of them (24 on a CI machine): a test session that makes more
        # buckets than that gets "No writable volumes and no free volumes left" (InternalError).
        # Volume files are sparse: small ones, and many, cost nothing until written.
        "-master.volumeSizeLimitMB=256",
        "-volume.max=2000",
        f"-volume.port.grpc={p['volume_grpc']}",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer_grpc']}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3_grpc']}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-s3.config={config}",
        f"-admin.port={p['admin']}",
        f"-admin.port.grpc={p['admin_grpc']}",
        # Fixed ports by default (23646, 8181, 9101): off, so that several servers can run.
        "-admin.port.legacy=0",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-admin.ui=false",
        "-webdav=false",
    ]


def ready(port: int) -> bool:
    """The S3 gateway answers: an anonymous GET / is refused with an S3 error from SeaweedFS."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            server = r.headers.get("Server", "")
    except urllib.error.HTTPError as e:
        server = e.headers.get("Server", "")
    except OSError:
        return False
    return server.startswith("SeaweedFS")


def prepare(data_dir: Path) -> Path:
    """Creates the data folder and the identity file in it; returns the file's path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "identities.json"
    config.write_text(identities())
    return config


def start(binary: str, data_dir: Path, log: Path, deadline_s: float = 60.0) -> tuple[subprocess.Popen, int]:
    """A weed server of its own (tests, benchmarks); returns the process and its S3 port once the
    gateway answers. The local cluster spawns `command` itself, carrying its marker."""
    p = ports()
    argv = command(binary, data_dir, p, prepare(data_dir))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **WEED_ENV}, start_new_session=True
        )
    what = f"SeaweedFS's S3 gateway to answer GET / on 127.0.0.1:{p['s3']}"
    end = time.monotonic() + deadline_s
    while not ready(p["s3"]):
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed exited with {proc.returncode} while waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > end:
            stop(proc, grace_s=0)
            raise TimeoutError(
                f"timed out after {deadline_s:.0f} s waiting for {what}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.2)
    return proc, p["s3"]


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM (weed mini stops in ~1.5 s), then SIGKILL after `grace_s`."""
    procs.stop(proc, grace_s)
