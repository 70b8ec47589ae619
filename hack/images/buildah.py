"""buildah with the project's own storage under .capstan/containers, so builds need no system
configuration and `make clean` removes every layer."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


class BuildError(Exception):
    """A buildah, mmdebstrap or registry step failed; the message names it."""


@dataclass(frozen=True)
class Buildah:
    root: Path
    """root holds buildah's storage (layers, images) and run state."""
    # overlay, not vfs: vfs copies the whole tree per layer (gigabytes with torch).
    driver: str = "overlay"

    def args(self) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            self.driver,
        ]

    def run(self, *args: str, quiet: bool = False, stream: bool = False) -> str:
        """buildah's stdout; with `stream` its output goes to the terminal (a build's steps)."""
        cmd = [*self.args(), *args]
        out = None if stream else subprocess.PIPE
        r = subprocess.run(cmd, text=True, stdout=out, stderr=subprocess.PIPE if quiet else None)
        if r.returncode != 0:
            raise BuildError(f"{' '.join(cmd[:8])} ... failed ({r.returncode}): {(r.stderr or '')[-2000:]}")
        return (r.stdout or "").strip()

    def inspect(self, image: str) -> dict | None:
        """The image's buildah inspect JSON, or None when storage has no such image."""
        r = subprocess.run(
            [*self.args(), "inspect", "--type", "image", image], capture_output=True, text=True
        )
        return json.loads(r.stdout) if r.returncode == 0 else None

    def image_id(self, image: str) -> str | None:
        info = self.inspect(image)
        return info["FromImageID"] if info else None
