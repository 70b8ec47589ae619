"""The node's images: pulled by reference from a registry with skopeo, unpacked once per manifest
digest (unpack.py), and described by their OCI config (Entrypoint, Cmd, Env, WorkingDir, User)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from hack.localcluster.nodeagent import unpack

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


class ImageStore:
    """`mirror` (host:port) serves Docker Hub references, as a containerd registry mirror
    for docker.io does: pods name `capstan/trainer:0.1.0` and the node pulls it from there.

    A pull resolves the reference to its manifest digest first (a small request), and copies
    the image only when no image of that digest is unpacked: the blobs go to a layout of their
    own and are deleted as their layers are applied (the unpacked tree is all a container needs;
    keeping the blobs too would hold the trainer image twice on the node's disk). Pulls run one
    at a time, as the kubelet's serializeImagePulls does by default."""

    def __init__(self, root: Path, mirror: str = ""):
        self.root = root
        self.mirror = mirror
        self.unpacked = root / "rootfs"
        self.unpacked.mkdir(parents=True, exist_ok=True)
        self.staging = root / "staging"
        # The shared layout an earlier version kept beside the unpacked trees (gigabytes).
        shutil.rmtree(root / "oci", ignore_errors=True)
        self.refs_file = root / "refs.json"
        self.refs: dict[str, str] = json.loads(self.refs_file.read_text()) if self.refs_file.exists() else {}
        self.lock = threading.Lock()
        self.pull_lock = threading.Lock()

    def get(self, ref: str, policy: str) -> Image:
        """The image for `ref`, pulled first as `policy` (Always, IfNotPresent, Never) says."""
        with self.lock:
            known = self.refs.get(ref)
        if known and self._present(known) and policy in ("Never", "IfNotPresent"):
            return self._image(ref, known)
        if policy == "Never":
            raise NeverPullError(f'Container image "{ref}" is not present with pull policy of Never')
        # The file lock: node agents of other clusters on this machine may share `root` (one
        # .capstan for several worktrees); two pulls of one digest would share staging paths.
        with self.pull_lock, _file_lock(self.root / "pull.lock"):
            digest = self._resolve(ref)
            if not self._present(digest):
                self._pull(ref, digest)
        with self.lock:
            self.refs[ref] = digest
            tmp = self.refs_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.refs, indent=1))
            os.replace(tmp, self.refs_file)
        return self._image(ref, digest)

    def source(self, ref: str) -> str:
        hub = docker_hub_path(ref)
        return f"{self.mirror}/{hub}" if self.mirror and hub else ref

    def _resolve(self, ref: str) -> str:
        """The manifest digest the registry holds for `ref` (skopeo inspect: no layer is fetched).
        A digest in `ref` is that digest, its tag ignored, as containerd does: the chart pins
        images as `repo:tag@sha256:...`, a form skopeo refuses to parse."""
        pinned = ref.partition("@")[2]
        if pinned.startswith("sha256:"):
            return pinned
        source = self.source(ref)
        r = _run(["skopeo", "inspect", *_tls(source), "--format", "{{.Digest}}", f"docker://{source}"])
        if r.returncode != 0 or not r.stdout.strip().startswith("sha256:"):
            raise PullError(f'failed to pull image "{ref}"{_via(ref, source)}: {_last_line(r.stderr)}')
        return r.stdout.strip()

    def _pull(self, ref: str, digest: str) -> None:
        """Copy `digest` into a staging layout and apply its layers (each blob deleted once applied)."""
        source = self.source(ref)
        layout = self.staging / _hex(digest)
        shutil.rmtree(layout, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        target = self.unpacked / _hex(digest)
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            # By digest: what is unpacked is what _resolve named, even if the tag moves meanwhile.
            pinned = f"docker://{_repository(source)}@{digest}"
            r = _run(["skopeo", "copy", "--quiet", *_tls(source), pinned, f"oci:{layout}:image"])
            if r.returncode != 0:
                raise PullError(f'failed to pull image "{ref}"{_via(ref, source)}: {_last_line(r.stderr)}')
            try:
                config = unpack.unpack(layout, tmp)
            except unpack.UnpackError as exc:
                raise PullError(f'failed to unpack image "{ref}": {exc}') from exc
            shutil.rmtree(target, ignore_errors=True)  # unpacked by an earlier version, no config
            _config_path(target).write_text(json.dumps(config))
            os.replace(tmp, target)
        finally:
            shutil.rmtree(layout, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)

    def collect(self) -> list[str]:
        """Remove unpacked images no reference points at any more (run before any pod starts)."""
        with self.lock:
            keep = {_hex(d) for d in self.refs.values()}
        gone = [p for p in self.unpacked.iterdir() if p.is_dir() and p.name not in keep]
        for p in gone:
            shutil.rmtree(p, ignore_errors=True)
            _config_path(p).unlink(missing_ok=True)
        return [p.name for p in gone]

    def _present(self, digest: str) -> bool:
        target = self.unpacked / _hex(digest)
        return target.is_dir() and _config_path(target).exists()

    def _image(self, ref: str, digest: str) -> Image:
        target = self.unpacked / _hex(digest)
        return Image(ref, digest, target, json.loads(_config_path(target).read_text()))


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock between processes, released when the block ends (or the process dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _config_path(target: Path) -> Path:
    return target.with_name(target.name + ".config.json")


def _repository(ref: str) -> str:
    """`ref` without its tag or digest (`host:5000/a/b:1` -> `host:5000/a/b`)."""
    name = ref.split("@")[0]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def _tls(source: str) -> list[str]:
    """A loopback registry speaks plain HTTP, as Docker and containerd allow by default."""
    host = source.split("/", 1)[0]
    return ["--tls-verify=false"] if host.split(":")[0] in ("127.0.0.1", "localhost") else []


def _via(ref: str, source: str) -> str:
    return f" (from {source})" if source != ref else ""


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
