"""The node's unpacker applies layers in order with OCI whiteouts, and deletes each blob."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from hack.localcluster.nodeagent import unpack

GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def entry(tar: tarfile.TarFile, name: str, data: bytes | None = None, link: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
    elif data is None:
        info.type, info.mode = tarfile.DIRTYPE, mode
    else:
        info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def put(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def layer(*entries: tuple) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for e in entries:
            entry(tar, *e)
    return buf.getvalue()


def image(layout: Path, *layers: bytes) -> list[Path]:
    config = put(layout, json.dumps({"config": {"Cmd": ["sh"]}}).encode())
    digests = [put(layout, data) for data in layers]
    m = {"config": {"digest": config}, "layers": [{"mediaType": GZ, "digest": d} for d in digests]}
    (layout / "index.json").write_text(
        json.dumps({"manifests": [{"digest": put(layout, json.dumps(m).encode())}]})
    )
    return [unpack.blob(layout, d) for d in digests]


def test_layers_apply_in_order_with_whiteouts_and_each_blob_is_deleted(tmp_path):
    layout, root = tmp_path / "layout", tmp_path / "root"
    blobs = image(
        layout,
        layer(
            ("etc",),
            ("etc/keep", b"1"),
            ("etc/gone", b"2"),
            ("cache",),
            ("cache/old", b"3"),
            ("tmp", None, "", 0o1777),
        ),
        layer(("etc/.wh.gone", b""), ("cache/new", b"4"), ("cache/.wh..wh..opq", b""), ("etc/keep", b"5")),
    )
    config = unpack.unpack(layout, root)
    assert config == {"Cmd": ["sh"]}
    assert (root / "etc/keep").read_bytes() == b"5"
    assert not (root / "etc/gone").exists()
    # Opaque: the lower layer's cache/old is gone, this layer's cache/new (written before the
    # marker) stays.
    assert sorted(p.name for p in (root / "cache").iterdir()) == ["new"]
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777  # the sticky bit is kept
    assert not any(b.exists() for b in blobs)


def test_a_link_from_a_lower_layer_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"host file")
    layout, root = tmp_path / "layout", tmp_path / "root"
    image(layout, layer(("etc",), ("etc/passwd", None, str(outside))), layer(("etc/passwd", b"image\n")))
    unpack.unpack(layout, root)
    assert outside.read_bytes() == b"host file"
    assert (root / "etc/passwd").read_bytes() == b"image\n" and not (root / "etc/passwd").is_symlink()


def test_a_path_that_leads_outside_is_refused_naming_the_layer(tmp_path):
    layout, root = tmp_path / "layout", tmp_path / "root"
    (digest,) = image(layout, layer(("../escape", b"x")))
    with pytest.raises(unpack.UnpackError, match=digest.name):
        unpack.unpack(layout, root)
    assert not (tmp_path / "escape").exists()
