"""Small reads from object storage for status (manifest statistics, the trainer's progress file,
an evaluation's status.json, a checkpoint's commit marker), through fsspec with the operator's S3
endpoint. Credentials come from the operator's own environment (the standard AWS variables, set by
the chart from the same Secret the workloads use). The operator never writes or deletes data.

The URIs are written by users, and the operator reads them with its own credentials: only the
configured schemes (`OperatorConfig.allowed_uri_schemes`; no http, no file by default) and, when
set, bucket/prefixes (`allowed_uri_prefixes`) are read. Anything else raises `Refused` naming the
field; a file that exists but cannot be read or parsed (403, bad JSON) raises `Unreadable`. The
controller turns both into conditions instead of retrying them for ever."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fsspec

from capstan_operator.config import OperatorConfig


class Refused(Exception):
    """The URI is outside what the operator may read (scheme or prefix); permanent."""


class Unreadable(Exception):
    """The file is there (or may be) but cannot be read or is not a JSON object."""


def check_uri(uri: str, cfg: OperatorConfig, field: str) -> str:
    """Why the operator may not read `uri` (naming `field`), or "" when it may. Pure."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme not in cfg.allowed_uri_schemes:
        allowed = ", ".join(cfg.allowed_uri_schemes) or "none"
        return f"{field} {uri}: scheme {scheme or '(none)'} is not allowed (allowed: {allowed})"
    prefixes = cfg.allowed_uri_prefixes
    if prefixes and not any(uri == p.rstrip("/") or uri.startswith(p.rstrip("/") + "/") for p in prefixes):
        return f"{field} {uri}: outside the allowed prefixes ({', '.join(prefixes)})"
    return ""


def _filesystem(uri: str, cfg: OperatorConfig, field: str) -> tuple[fsspec.AbstractFileSystem, str]:
    refused = check_uri(uri, cfg, field)
    if refused:
        raise Refused(refused)
    opts: dict[str, Any] = {}
    if uri.startswith(("s3://", "s3a://")):
        # cat_file always GETs; no listing cache so a new file is seen at once. Bounded calls,
        # so a stalled store cannot hold a worker (see controller.STALL_S).
        opts = {"use_listings_cache": False, "config_kwargs": {"connect_timeout": 5, "read_timeout": 30}}
        if cfg.s3_endpoint:
            opts["endpoint_url"] = cfg.s3_endpoint
    return fsspec.core.url_to_fs(uri, **opts)


def marker_exists(uri: str, cfg: OperatorConfig, field: str = "uri") -> bool:
    """Whether the marker file at `uri` (a few bytes, such as a checkpoint's COMMITTED) exists:
    one GET, never a listing (s3fs's exists and info list the prefix when the key is missing)."""
    try:
        fs, path = _filesystem(uri, cfg, field)
        fs.cat_file(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:  # PermissionError (403), a broken store
        raise Unreadable(f"{field} {uri}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return True


def read_json(uri: str, cfg: OperatorConfig, field: str = "uri") -> dict[str, Any] | None:
    """The JSON object at `uri`, or None when it does not exist (yet)."""
    try:
        fs, path = _filesystem(uri, cfg, field)
        doc = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # PermissionError (403), bad JSON, a broken store
        raise Unreadable(f"{field} {uri}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not isinstance(doc, dict):
        raise Unreadable(f"{field} {uri}: not a JSON object")
    return doc


def json_lines(uri: str, cfg: OperatorConfig, field: str = "uri") -> Iterator[dict[str, Any]] | None:
    """The objects of a JSON-lines file, streamed (documents.jsonl may be large); None when it
    does not exist."""
    try:
        fs, path = _filesystem(uri, cfg, field)
        f = fs.open(path, "rb")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise Unreadable(f"{field} {uri}: {type(exc).__name__}: {str(exc)[:300]}") from exc

    def lines() -> Iterator[dict[str, Any]]:
        with f:
            try:
                for line in f:
                    if line.strip():
                        yield json.loads(line)
            except (OSError, ValueError) as exc:
                raise Unreadable(f"{field} {uri}: {type(exc).__name__}: {str(exc)[:300]}") from exc

    return lines()
