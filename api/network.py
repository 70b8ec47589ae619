"""The address a server in a pod listens on, shared by the operator and the built-in server."""

from __future__ import annotations

import ipaddress

ALL = "0.0.0.0"
TRAIN_METRICS_PORT = 9400
"""TRAIN_METRICS_PORT: where each trainer pod's first process serves /metrics (rank 0's figures;
the operator annotates the pods with it for Prometheus)."""
TRAIN_METRICS_PORT_ENV = "CAPSTAN_TRAIN_METRICS_PORT"
"""TRAIN_METRICS_PORT_ENV carries that port into trainer pods; unset, the trainer opens no port."""


def listen_address(pod_ip: str | None) -> str:
    """0.0.0.0 in a pod of its own network namespace, so `kubectl port-forward` (which dials
    localhost inside the pod) reaches it as well as the pod IP does; the pod IP itself when that
    is a loopback address: the local cluster's pods share the host's network, each on its own
    127.x address, and two of them on 0.0.0.0 would claim the same port."""
    if pod_ip:
        try:
            if ipaddress.ip_address(pod_ip).is_loopback:
                return pod_ip
        except ValueError:
            pass  # not an address: listen everywhere
    return ALL
