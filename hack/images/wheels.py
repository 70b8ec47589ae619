"""A wheelhouse the image builds install from. pip's HTTP cache stays empty on these machines
(the index's answers are not cacheable), so a cache mount alone re-downloads torch on every
cold build; wheels downloaded once by the node's pip, kept outside the checkout like Go's module
cache, make a fresh clone's image build download nothing it already has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hack.images.buildah import BuildError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "images"))
from requirements import requirements  # noqa: E402  (images/requirements.py, also used in the build)

# What `pip install --no-deps /src` needs to build the project's own wheel.
BUILD_REQUIREMENTS = ["setuptools>=75", "wheel"]


def wheelhouse() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "capstan" / f"wheels-py{sys.version_info.major}{sys.version_info.minor}"


def ensure_wheels(extra: str) -> Path:
    """Every wheel the image with `extra` installs, in the wheelhouse (present ones are kept)."""
    folder = wheelhouse()
    folder.mkdir(parents=True, exist_ok=True)
    reqs = requirements(str(REPO / "pyproject.toml"), [extra]) + BUILD_REQUIREMENTS
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
            str(folder),
            *reqs,
        ],
        text=True,
        capture_output=True,
    )
    if r.returncode != 0:
        raise BuildError(f"pip download for the {extra} image failed: {r.stderr[-2000:]}")
    return folder
