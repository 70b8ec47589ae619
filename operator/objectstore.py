"""Small reads from object storage for status (manifest statistics, the trainer's progress file),
through fsspec with the operator's S3 endpoint. Credentials come from the operator's own
environment (the standard AWS variables, set by the chart from the same Secret the workloads use).
The operator never writes or deletes data."""

from __future__ import annotations

import json
from typing import Any

import fsspec

from capstan_operator.config import OperatorConfig


def read_json(uri: str, cfg: OperatorConfig) -> dict[str, Any] | None:
    """The JSON object at `uri`, or None when it does not exist (yet)."""
    opts: dict[str, Any] = {}
    if uri.startswith(("s3://", "s3a://")):
        # cat_file always GETs; no listing cache so a new file is seen at once.
        opts = {"use_listings_cache": False}
        if cfg.s3_endpoint:
            opts["endpoint_url"] = cfg.s3_endpoint
    fs, path = fsspec.core.url_to_fs(uri, **opts)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
