"""`python -m hack.images`: build the base, the operator and the trainer images, push them to
the project's registry storage, and print each image's name, digest and size."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hack.images.base import ensure_base
from hack.images.build import NAMES, REPO, Built, build_image, content_key, image_ref
from hack.images.buildah import Buildah, BuildError
from hack.images.wheels import wheelhouse
from hack.localcluster import registry
from hack.localcluster.ports import free_port

STATE = REPO / ".capstan"
REGISTRY_STORAGE = STATE / "registry"
"""REGISTRY_STORAGE is the folder every local registry serves (make images, cluster-up, tests)."""
RECORD = STATE / "images" / "pushed.json"
"""RECORD: per image, the tag, digest, image ID, content key and size `make images` pushed."""
# Measured: building the trainer image peaks 13.1 GB above where it starts.
TRAINER_BUILD_GB = 14


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


def still_pushed(name: str, tag: str, last: dict) -> bool:
    """The registry still holds the digest `last` (this image's record) says was pushed."""
    return bool(last.get("digest")) and pushed_digest(name, tag) == last["digest"]


def in_registry(name: str, key: str, last: dict) -> bool:
    """The registry holds what these sources build: the last push was of this content key and
    is still there. Buildah's storage is not needed (--prune drops it)."""
    return last.get("key") == key and still_pushed(name, image_ref(name).rsplit(":", 1)[1], last)


def push(b: Buildah, built: Built, dest_registry: str, name: str, last: dict) -> str:
    """Push to <registry>/capstan/<name>:<tag>; returns the manifest digest the registry holds.
    Skipped when this image ID was pushed before and the registry still has that digest (a push
    re-reads every layer: a minute for the trainer image)."""
    tag = built.ref.rsplit(":", 1)[1]
    if last.get("image_id") == built.image_id and still_pushed(name, tag, last):
        return last["digest"]
    with tempfile.NamedTemporaryFile("r", suffix=".digest") as digest:
        # buildah gzips the layers (the trainer's 6.2 GB are 3.3 GB in the registry).
        b.run(
            "push",
            "--quiet",
            "--tls-verify=false",
            "--format",
            "oci",
            "--digestfile",
            digest.name,
            built.ref,
            f"docker://{dest_registry}/capstan/{name}:{tag}",
        )
        return Path(digest.name).read_text().strip()


def prune(b: Buildah, built: dict[str, Built]) -> None:
    """Drop the built images and their cached layers from buildah's storage, keeping the base,
    and the wheelhouse (3 GB): the registry has the images, and a warm run finds them there."""
    b.run("rm", "--all", quiet=True)
    for name in NAMES:
        if b.image_id(built[name].ref):
            b.run("rmi", "--force", built[name].ref, quiet=True)
    b.run("rmi", "--prune", quiet=True)
    shutil.rmtree(wheelhouse(), ignore_errors=True)


def report_disk(todo: list[str]) -> None:
    free = shutil.disk_usage(STATE).free / 1e9
    print(f"make images: {free:.1f} GB free under {STATE}")
    if "trainer" in todo and free < TRAINER_BUILD_GB:
        print(
            f"make images: warning: building the trainer image needs about {TRAINER_BUILD_GB} GB "
            f"free under {STATE}; the build may stop with 'no space left on device'"
        )


def build_and_push(b: Buildah, prune_after: bool) -> list[tuple[str, Built, str]]:
    base = ensure_base(b)
    last = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    keys = {name: content_key(name, base) for name in NAMES}
    fresh = {name: in_registry(name, keys[name], last.get(name, {})) for name in NAMES}
    report_disk([name for name in NAMES if not fresh[name]])
    built: dict[str, Built] = {"base": Built("base", base, b.image_id(base), 0, rebuilt=False)}
    for name in NAMES:
        if fresh[name]:
            item = last[name]
            built[name] = Built(name, image_ref(name), item["image_id"], item["size"], False, keys[name])
        else:
            built[name] = build_image(b, name, base, STATE / "images")
    rows = []
    port = free_port()
    log = STATE / "logs" / "images-registry.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = registry.start(str(STATE / "bin" / "registry"), REGISTRY_STORAGE, port, log)
    try:
        # The base (root user) is pushed too: tests show runAsNonRoot refusing a root image.
        for name, item in built.items():
            rows.append((name, item, push(b, item, f"127.0.0.1:{port}", name, last.get(name, {}))))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    RECORD.write_text(
        json.dumps(
            {
                name: {
                    "tag": item.ref.rsplit(":", 1)[1],
                    "digest": d,
                    "image_id": item.image_id,
                    "key": item.key,
                    "size": item.size,
                }
                for name, item, d in rows
            },
            indent=2,
        )
    )
    if prune_after:
        prune(b, built)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hack.images", description=__doc__)
    p.add_argument("--no-push", action="store_true", help="build only")
    p.add_argument(
        "--prune",
        action="store_true",
        help="after pushing, drop the images from buildah's storage and the wheelhouse (CI: 9 GB "
        "of disk; a later source change then downloads and rebuilds the trainer's dependencies)",
    )
    args = p.parse_args(argv)
    b = Buildah(STATE / "containers")
    start = time.monotonic()
    (STATE / "images").mkdir(parents=True, exist_ok=True)
    try:
        if args.no_push:
            base = ensure_base(b)
            rows = [(name, build_image(b, name, base, STATE / "images"), "") for name in NAMES]
        else:
            rows = build_and_push(b, args.prune)
    except BuildError as exc:
        sys.exit(f"make images: {exc}")
    for name, item, digest in rows:
        size = f"{item.size / 1e6:.0f} MB" if item.size else "-"
        state = "built" if item.rebuilt else "up to date"
        print(
            f"capstan/{name}:{item.ref.rsplit(':', 1)[1]}  {digest or item.image_id[:19]}  {size}  ({state})"
        )
    print(f"make images: {time.monotonic() - start:.0f} s")
