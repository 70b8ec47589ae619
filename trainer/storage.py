"""Object storage through fsspec: one place that knows how to reach S3.

The S3 endpoint and credentials come from the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), which the operator
sets from its configuration and the local cluster writes to `.capstan/s3.env`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec

from capstan_api.files import join  # noqa: F401  (storage.join: the one URI join, shared with the operator)


def storage_options(uri: str) -> dict[str, Any]:
    """fsspec keyword arguments for `uri` (endpoint and credentials for s3://)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    opts: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        opts["endpoint_url"] = endpoint
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        opts["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        opts["secret"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["client_kwargs"] = {"region_name": region}
    return opts


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `uri` and the path within it (no protocol)."""
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    return fs, path


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object; on S3 a PUT is atomic, locally write-then-rename."""
    fs, path = filesystem(uri)
    if _is_local(fs):
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


@contextmanager
def open_write(uri: str) -> Iterator[IO[bytes]]:
    """A binary file written as it goes that appears whole or not at all: locally written beside
    and renamed, on S3 a multipart upload that is completed only when the block exits cleanly."""
    fs, path = filesystem(uri)
    if _is_local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        f.discard()  # s3fs aborts the multipart upload: nothing appears
        f.closed = True  # so that garbage collection does not commit what was written
        raise
    f.close()


def read_range(uri: str, start: int, length: int) -> bytes:
    """`length` bytes from `start` (one ranged GET on S3)."""
    if length <= 0:
        return b""
    fs, path = filesystem(uri)
    return fs.cat_file(path, start=start, end=start + length)


def remove(uri: str) -> None:
    """Removes a file or a folder with everything under it; absent is fine."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in proto or "local" in proto
