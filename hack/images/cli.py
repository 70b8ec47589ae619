"""`python -m hack.images`: build the base, the operator and the trainer images, push them to
the project's registry storage, and print each image's name, digest and size."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from hack.images.base import ensure_base
from hack.images.build import NAMES, REPO, Built, build_image
from hack.images.buildah import Buildah, BuildError
from hack.localcluster import registry
from hack.localcluster.cluster import free_port

STATE = REPO / ".capstan"
REGISTRY_STORAGE = STATE / "registry"
"""REGISTRY_STORAGE is the folder every local registry serves (make images, cluster-up, tests)."""


def pushed_digest(name: str, tag: str) -> str:
    """The digest the registry storage holds for capstan/<name>:<tag> ('' when none): the
    distribution filesystem layout's tag link."""
    link = (
        REGISTRY_STORAGE
        / "docker/registry/v2/repositories/capstan"
        / name
        / "_manifests/tags"
        / tag
        / "current/link"
    )
    return link.read_text().strip() if link.exists() else ""


def push(b: Buildah, built: Built, dest_registry: str, name: str, last: dict) -> str:
    """Push to <registry>/capstan/<name>:<tag>; returns the manifest digest the registry holds.
    Skipped when this image ID was pushed before and the registry still has that digest (a push
    re-reads every layer: a minute for the trainer image)."""
    tag = built.ref.rsplit(":", 1)[1]
    if (
        last.get("image_id") == built.image_id
        and last.get("digest")
        and pushed_digest(name, tag) == last["digest"]
    ):
        return last["digest"]
    with tempfile.NamedTemporaryFile("r", suffix=".digest") as digest:
        # Layers go uncompressed: the registry is on loopback, and gzip of torch costs minutes.
        b.run(
            "push",
            "--quiet",
            "--tls-verify=false",
            "--disable-compression",
            "--format",
            "oci",
            "--digestfile",
            digest.name,
            built.ref,
            f"docker://{dest_registry}/capstan/{name}:{tag}",
        )
        return Path(digest.name).read_text().strip()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hack.images", description=__doc__)
    p.add_argument("--no-push", action="store_true", help="build only")
    args = p.parse_args(argv)
    b = Buildah(STATE / "containers")
    start = time.monotonic()
    try:
        base = ensure_base(b)
        built = {name: build_image(b, name, base, STATE / "images") for name in NAMES}
        # The base (root user) is pushed too: tests show runAsNonRoot refusing a root image.
        built["base"] = Built("base", base, b.image_id(base), 0, rebuilt=False)
        rows = []
        record = STATE / "images" / "pushed.json"
        last = json.loads(record.read_text()) if record.exists() else {}
        if not args.no_push:
            port = free_port()
            log = STATE / "logs" / "images-registry.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            proc = registry.start(str(STATE / "bin" / "registry"), REGISTRY_STORAGE, port, log)
            try:
                for name, item in built.items():
                    rows.append((name, item, push(b, item, f"127.0.0.1:{port}", name, last.get(name, {}))))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        else:
            rows = [(name, item, "") for name, item in built.items()]
    except BuildError as exc:
        sys.exit(f"make images: {exc}")
    for name, item, digest in rows:
        size = f"{item.size / 1e6:.0f} MB" if item.size else "-"
        state = "built" if item.rebuilt else "up to date"
        print(
            f"capstan/{name}:{item.ref.rsplit(':', 1)[1]}  {digest or item.image_id[:19]}  {size}  ({state})"
        )
    (STATE / "images").mkdir(parents=True, exist_ok=True)
    (STATE / "images" / "pushed.json").write_text(
        json.dumps(
            {
                name: {"tag": item.ref.rsplit(":", 1)[1], "digest": d, "image_id": item.image_id}
                for name, item, d in rows
            },
            indent=2,
        )
    )
    print(f"make images: {time.monotonic() - start:.0f} s")
