"""Build the operator and trainer images from images/*/Containerfile, cached by content: the key
is a hash of the Containerfile, every file the build context sends and the base image's recipe,
so a warm `make images` with nothing changed builds nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from hack.images.buildah import Buildah
from hack.images.wheels import ensure_wheels

REPO = Path(__file__).resolve().parents[2]
NAMES = ("operator", "trainer")
# What the Containerfiles COPY; .containerignore keeps everything else out of the context.
CONTEXT = ("pyproject.toml", "images/requirements.py", "api", "operator", "trainer")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def version() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def revision() -> str:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def context_files() -> list[Path]:
    """Tracked and untracked (not ignored) files under CONTEXT, sorted: what the build sees."""
    r = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard", "--", *CONTEXT],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted({REPO / p for p in r.stdout.split() if (REPO / p).is_file()})


def content_key(name: str, base: str) -> str:
    """`base` is the base image's reference, which names its recipe (hack/images/base.py)."""
    h = hashlib.sha256()
    h.update(f"{name}\n{base}\n{version()}\n".encode())
    for path in [REPO / "images" / name / "Containerfile", *context_files()]:
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Built:
    name: str
    ref: str
    image_id: str
    size: int
    rebuilt: bool
    key: str = ""


def image_ref(name: str) -> str:
    return f"localhost/capstan/{name}:{version()}"


def build_image(b: Buildah, name: str, base: str, cache: Path) -> Built:
    """Build (or find up to date in buildah's storage) localhost/capstan/<name>:<version>."""
    ref = image_ref(name)
    key = content_key(name, base)
    stamp = cache / f"{name}.json"
    have = json.loads(stamp.read_text()) if stamp.exists() else {}
    current = b.image_id(ref)
    if have.get("key") == key and current and current == have.get("image_id"):
        return Built(name, ref, current, _size(b, ref), rebuilt=False, key=key)
    start = time.monotonic()
    wheels = ensure_wheels(name)
    args = [
        "bud",
        "--layers",  # keeps the dependency layer when only sources change
        "--isolation",
        "chroot",
        "-f",
        str(REPO / "images" / name / "Containerfile"),
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        f"VERSION={version()}",
        "--build-arg",
        f"REVISION={revision()}",
        "-t",
        ref,
        # pip reads PIP_* from the environment, and a build's ARGs are its RUN steps' environment.
        "-v",
        f"{wheels}:/run/capstan-wheels:ro",
        "--build-arg",
        "PIP_FIND_LINKS=/run/capstan-wheels",
        "--build-arg",
        "PIP_NO_INDEX=1",
    ]
    if HOST_CA.exists():
        # This machine reaches PyPI through a proxy with its own CA; the image never keeps it.
        args += [
            "-v",
            f"{HOST_CA}:/run/capstan-host-ca.crt:ro",
            "--build-arg",
            "PIP_CERT=/run/capstan-host-ca.crt",
        ]
    b.run(*args, str(REPO), stream=True)
    image_id = b.image_id(ref)
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "image_id": image_id}))
    print(f"built {ref} in {time.monotonic() - start:.0f} s")
    return Built(name, ref, image_id, _size(b, ref), rebuilt=True, key=key)


def _size(b: Buildah, ref: str) -> int:
    """Uncompressed size in bytes, as buildah reports it ("385 MB")."""
    out = b.run("images", "--format", "{{.Size}}", ref, quiet=True)
    number, unit = out.split()
    return int(float(number) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit])
