"""Kubeconfig files with embedded client certificates."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def _b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "capstan", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}}
        ],
        "contexts": [
            {"name": "capstan", "context": {"cluster": "capstan", "user": user, "namespace": "default"}}
        ],
        "current-context": "capstan",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
