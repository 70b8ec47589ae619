"""Thin helpers over the kubernetes client that work on plain dicts (fast, no model classes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("nodeagent")
SMP = "application/strategic-merge-patch+json"


def connect(kubeconfig: str, pool: int = 64) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return client.CoreV1Api(client.ApiClient(cfg))


def force_delete_pod(api: client.CoreV1Api, namespace: str, name: str, uid: str) -> None:
    """Remove a pod object at once (what the kubelet does once its containers are gone). The
    grace period must be in the body: with a DeleteOptions body the API server ignores the
    query parameter, and a pod already marked for deletion then stays until its grace ends
    (2,000 simulated pods once sat in Terminating for good). A pod already gone is fine."""
    try:
        api.delete_namespaced_pod(
            name,
            namespace,
            body={"preconditions": {"uid": uid}, "gracePeriodSeconds": 0},
            _preload_content=False,
        )
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise


def raw(response) -> dict:
    return json.loads(response.data)


def list_and_watch(
    list_fn: Callable, on_event: Callable[[str, dict], None], stop, **kwargs
) -> Iterator[None]:
    """List, report every item as ADDED, then watch from the list's resourceVersion; relist on 410.
    Runs until `stop` is set."""
    while not stop.is_set():
        listing = raw(list_fn(_preload_content=False, **kwargs))
        for item in listing["items"]:
            on_event("ADDED", item)
        rv = listing["metadata"]["resourceVersion"]
        yield  # tell the caller the initial list is in
        w = watch.Watch()
        try:
            for ev in w.stream(
                list_fn,
                resource_version=rv,
                timeout_seconds=300,
                deserialize=False,
                allow_watch_bookmarks=True,
                **kwargs,
            ):
                if stop.is_set():
                    w.stop()
                    return
                obj = ev.get("raw_object") or ev.get("object")
                if ev["type"] == "ERROR":
                    break  # expired: relist
                if ev["type"] == "BOOKMARK":
                    continue
                on_event(ev["type"], obj)
        except ApiException as exc:
            if exc.status != 410:
                log.warning("watch failed: %s", exc)
        except Exception as exc:  # connection resets: relist rather than die
            log.warning("watch interrupted: %s", exc)
            stop.wait(1)
