"""The base image, built offline from Debian packages with mmdebstrap (no registry base can be
pulled here): a minimal bookworm with python3 and its venv module, the same shape as the
python:3.11-slim-bookworm the Containerfiles name by default."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hack.images.buildah import Buildah, BuildError

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation, manuals and translations are not needed at run time (about 40 MB).
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
NAME = "localhost/capstan/base"


def recipe_key() -> str:
    text = "\n".join([SUITE, *PACKAGES, *EXCLUDES, "minbase"])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_base(b: Buildah) -> str:
    """The base image reference, built when storage does not have this recipe's yet."""
    ref = f"{NAME}:{SUITE}-{recipe_key()}"
    if b.image_id(ref):
        print(f"base {ref} is up to date")
        return ref
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is not installed (apt-get install mmdebstrap buildah skopeo)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="capstan-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        cmd = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            *[f"--dpkgopt=path-exclude={p}" for p in EXCLUDES],
            "--aptopt=APT::Install-Recommends false",
            SUITE,
            str(tar),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"mmdebstrap failed ({r.returncode}): {r.stderr[-2000:]}")
        # buildah 1.28 has no `import`: a scratch container, the root filesystem untarred into it.
        c = b.run("from", "scratch")
        try:
            mnt = b.run("mount", c)
            subprocess.run(["tar", "-C", mnt, "-xf", str(tar)], check=True)
            b.run("umount", c)
            b.run("config", "--env", "LANG=C.UTF-8", "--cmd", "/bin/sh", c)
            b.run("commit", "--quiet", c, ref)
        finally:
            subprocess.run([*b.args(), "rm", c], capture_output=True)
    print(f"base {ref} built in {time.monotonic() - start:.0f} s")
    return ref
