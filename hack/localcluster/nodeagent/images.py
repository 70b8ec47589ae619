"""The node's images: pulled by reference from a registry with skopeo into one shared OCI layout
(blobs are shared between images and kept across runs), unpacked once per manifest digest with
umoci, and described by their OCI config (Entrypoint, Cmd, Env, WorkingDir, User)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

PULL_TIMEOUT_S = 900  # torch with CUDA is gigabytes; a pull that takes longer has failed


class PullError(Exception):
    """The image could not be pulled (ErrImagePull in the kubelet)."""


class NeverPullError(Exception):
    """imagePullPolicy Never and the image is not on the node (ErrImageNeverPull)."""


@dataclass(frozen=True)
class Image:
    ref: str
    digest: str
    rootfs: Path
    config: dict
    """config is the OCI image config's `config` object (Entrypoint, Cmd, Env, WorkingDir, User)."""


def pull_policy(container: dict) -> str:
    """The API server defaults it; the kubelet's rule is repeated for pods written without one."""
    policy = container.get("imagePullPolicy")
    if policy:
        return policy
    ref = container["image"]
    tagged = ":" in ref.rsplit("/", 1)[-1]
    return "Always" if "@" not in ref and (not tagged or ref.endswith(":latest")) else "IfNotPresent"


def docker_hub_path(ref: str) -> str | None:
    """The repository path of a Docker Hub reference (`capstan/trainer:1`, `docker.io/x/y:1`,
    `python:3.11`), None for a reference that names another registry."""
    first, _, rest = ref.partition("/")
    if not rest:
        return f"library/{ref}"
    if first in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return rest if "/" in rest else f"library/{rest}"
    if "." in first or ":" in first or first == "localhost":
        return None
    return ref


def _insecure(ref: str) -> bool:
    """A loopback registry speaks plain HTTP, as Docker and containerd allow by default."""
    host = ref.split("/", 1)[0]
    return host.split(":")[0] in ("127.0.0.1", "localhost")


class ImageStore:
    """`mirror` (host:port) serves Docker Hub references, as a containerd registry mirror
    for docker.io does: pods name `capstan/trainer:0.1.0` and the node pulls it from there."""

    def __init__(self, root: Path, mirror: str = ""):
        self.root = root
        self.mirror = mirror
        self.layout = root / "oci"
        self.unpacked = root / "rootfs"
        self.unpacked.mkdir(parents=True, exist_ok=True)
        self.refs_file = root / "refs.json"
        self.refs: dict[str, str] = json.loads(self.refs_file.read_text()) if self.refs_file.exists() else {}
        self.lock = threading.Lock()
        self.digest_locks: dict[str, threading.Lock] = {}
        # One skopeo at a time: copies into one layout rewrite its index.json.
        self.pull_lock = threading.Lock()

    def get(self, ref: str, policy: str) -> Image:
        """The image for `ref`, pulled first as `policy` (Always, IfNotPresent, Never) says."""
        with self.lock:
            known = self.refs.get(ref)
        present = bool(known) and (self.unpacked / _hex(known)).exists()
        if present and policy in ("Never", "IfNotPresent"):
            return self._image(ref, known)
        if policy == "Never":
            raise NeverPullError(f'Container image "{ref}" is not present with pull policy of Never')
        digest = self._pull(ref)
        lock = self._digest_lock(digest)
        with lock:
            target = self.unpacked / _hex(digest)
            if not target.exists():
                self._unpack(ref, target)
        with self.lock:
            self.refs[ref] = digest
            tmp = self.refs_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.refs, indent=1))
            os.replace(tmp, self.refs_file)
        return self._image(ref, digest)

    def _digest_lock(self, digest: str) -> threading.Lock:
        with self.lock:
            return self.digest_locks.setdefault(digest, threading.Lock())

    def _pull(self, ref: str) -> str:
        """skopeo copy into the shared layout (blobs it already has are not fetched again)."""
        source = self.source(ref)
        tls = ["--src-tls-verify=false"] if _insecure(source) else []
        with self.pull_lock:
            r = _run(
                ["skopeo", "copy", "--quiet", *tls, f"docker://{source}", f"oci:{self.layout}:{_tag(ref)}"]
            )
            if r.returncode != 0:
                via = f" (from {source})" if source != ref else ""
                raise PullError(f'failed to pull image "{ref}"{via}: {_last_line(r.stderr)}')
            return self._manifest_digest(ref)

    def source(self, ref: str) -> str:
        hub = docker_hub_path(ref)
        return f"{self.mirror}/{hub}" if self.mirror and hub else ref

    def collect(self) -> list[str]:
        """Remove unpacked images no reference points at any more (run before any pod starts)."""
        with self.lock:
            keep = {_hex(d) for d in self.refs.values()}
        gone = [p for p in self.unpacked.iterdir() if p.name not in keep]
        for p in gone:
            shutil.rmtree(p, ignore_errors=True)
        return [p.name for p in gone]

    def _unpack(self, ref: str, target: Path) -> None:
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        r = _run(["umoci", "raw", "unpack", "--image", f"{self.layout}:{_tag(ref)}", str(tmp)])
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PullError(f'failed to unpack image "{ref}": {_last_line(r.stderr)}')
        os.replace(tmp, target)

    def _manifest_digest(self, ref: str) -> str:
        index = json.loads((self.layout / "index.json").read_text())
        for m in index.get("manifests", []):
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == _tag(ref):
                return m["digest"]
        raise PullError(f'image "{ref}" was copied but its manifest is not in {self.layout}/index.json')

    def _image(self, ref: str, digest: str) -> Image:
        manifest = json.loads(self._blob(digest))
        config = json.loads(self._blob(manifest["config"]["digest"]))
        return Image(ref, digest, self.unpacked / _hex(digest), config.get("config") or {})

    def _blob(self, digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        return (self.layout / "blobs" / algo / hexd).read_bytes()


def _tag(ref: str) -> str:
    """One tag in the shared layout per reference (OCI tags cannot hold '/' or ':')."""
    return "r-" + hashlib.sha256(ref.encode()).hexdigest()[:24]


def _hex(digest: str) -> str:
    return digest.partition(":")[2]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=PULL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {PULL_TIMEOUT_S} s")
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]} is not installed (make install)")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-500:] if lines else "no output"
