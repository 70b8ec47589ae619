"""Object storage through fsspec: one place that knows how to reach S3.

The S3 endpoint and credentials come from the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), which the operator
sets from its configuration and the local cluster writes to `.capstan/s3.env`.
"""

from __future__ import annotations

import os
from typing import Any

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
    if fs.protocol in ("file", "local") or "file" in fs.protocol:
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
