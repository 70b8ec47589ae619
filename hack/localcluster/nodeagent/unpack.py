"""An image's layers applied in order onto one root filesystem, each blob deleted once applied,
as containerd's unpacker applies them: the disk holds the unpacked tree and the blobs not yet
applied, never the whole image twice (umoci's `raw unpack` needs every blob until the end: 3 GB
more for the trainer image). OCI whiteouts: `.wh.<name>` deletes <name> from the layers below,
`.wh..wh..opq` empties its folder of what the layers below put there."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")


class UnpackError(Exception):
    """A layer could not be applied; the message names it."""


def blob(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return layout / "blobs" / algo / hexd


def manifest(layout: Path) -> dict:
    """The manifest of the one image in the OCI layout `layout`."""
    index = json.loads((layout / "index.json").read_text())
    return json.loads(blob(layout, index["manifests"][0]["digest"]).read_bytes())


def unpack(layout: Path, rootfs: Path) -> dict:
    """Apply every layer of the image in `layout` onto `rootfs`, deleting each blob once it is
    applied; returns the image config's `config` object (Entrypoint, Cmd, Env, ...)."""
    m = manifest(layout)
    config = json.loads(blob(layout, m["config"]["digest"]).read_bytes()).get("config") or {}
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer in m["layers"]:
        if not layer["mediaType"].startswith(LAYER_TYPES):
            raise UnpackError(f"layer {layer['digest']} has media type {layer['mediaType']}, not a tar")
        path = blob(layout, layer["digest"])
        try:
            apply_layer(path, rootfs)
        except (OSError, tarfile.TarError) as exc:
            raise UnpackError(f"layer {layer['digest']}: {exc}") from exc
        path.unlink()
    return config


def apply_layer(path: Path, rootfs: Path) -> None:
    """One layer (tar, gzip or zstd is detected by tarfile; OCI images here are gzip)."""
    ours: set[str] = set()  # what this layer wrote: an opaque folder keeps it
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            name = os.path.normpath(member.name.lstrip("/"))
            folder, base = os.path.split(name)
            if base == OPAQUE:
                _empty(rootfs, folder, keep=ours)
                continue
            if base.startswith(WHITEOUT):
                _remove(rootfs / folder / base[len(WHITEOUT) :])
                continue
            target = rootfs / name
            if target.is_symlink() or (target.exists() and not (target.is_dir() and member.isdir())):
                _remove(target)  # replaced, never written through (a link must not lead out)
            tar.extract(member, rootfs, numeric_owner=True, filter=_checked)
            ours.add(name)


def _checked(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's "tar" filter refuses paths and links that lead outside `dest`; its mode changes
    (no setuid, no group/other write: /tmp would lose its sticky bit) are undone."""
    safe = tarfile.tar_filter(member, dest)
    return safe.replace(mode=member.mode, deep=False)


def _empty(rootfs: Path, folder: str, keep: set[str]) -> None:
    """Remove what `rootfs`/`folder` holds, but for the paths in `keep` (this layer's own)."""
    path = rootfs / folder
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        if os.path.join(folder, child.name) not in keep:
            _remove(child)


def _remove(path: Path) -> None:
    """A file, link or folder tree; nothing when there is none (a whiteout of a missing name)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
