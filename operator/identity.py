"""The ServiceAccount workload pods run as, made by the operator where the chart asks it to
(workload.serviceAccount.create): one per namespace, shared by every Capstan workload there, so it
has no owner and outlives the resources (as the namespace's `default` does)."""

from __future__ import annotations

import threading
import time
from typing import Any

from capstan_operator import kube
from capstan_operator.config import OperatorConfig

RECHECK_S = 300  # how long a namespace's ServiceAccount counts as made without looking again
_made: dict[tuple[str, str], float] = {}
_lock = threading.Lock()


def service_account(namespace: str, cfg: OperatorConfig) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": cfg.workload_service_account,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/managed-by": "capstan"},
    }
    if cfg.workload_service_account_annotations:
        meta["annotations"] = dict(cfg.workload_service_account_annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def needs_service_account(body: dict, cfg: OperatorConfig) -> bool:
    """The resource's pods run as the operator's default workload ServiceAccount, which the
    operator is to make; a resource that names its own (spec.serviceAccountName) brings it."""
    named = (body.get("spec") or {}).get("serviceAccountName")
    return bool(cfg.workload_service_account_create and cfg.workload_service_account and not named)


def ensure_service_account(body: dict, cfg: OperatorConfig) -> None:
    """Apply the namespace's workload ServiceAccount before creating pods that run as it."""
    if not needs_service_account(body, cfg):
        return
    key = (body["metadata"]["namespace"], cfg.workload_service_account)
    with _lock:
        if time.monotonic() - _made.get(key, -RECHECK_S) < RECHECK_S:
            return
    kube.apply(service_account(key[0], cfg))
    with _lock:
        _made[key] = time.monotonic()
