"""Kubernetes access for the reconcilers, and the only module that talks to the API server:
server-side apply of the child kinds, reads that return plain dicts, status writes, Events, pod
logs. Idempotent by construction: deterministic names, and an apply makes the live object match
the desired one whether or not it existed."""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from capstan_api.common import GROUP, VERSION

# (apiVersion, kind) -> (API class, method suffix)
_APIS: dict[tuple[str, str], tuple[type, str]] = {
    ("v1", "ConfigMap"): (client.CoreV1Api, "namespaced_config_map"),
    ("v1", "Service"): (client.CoreV1Api, "namespaced_service"),
    ("v1", "Secret"): (client.CoreV1Api, "namespaced_secret"),
    ("v1", "ServiceAccount"): (client.CoreV1Api, "namespaced_service_account"),
    ("v1", "Pod"): (client.CoreV1Api, "namespaced_pod"),
    ("v1", "Event"): (client.CoreV1Api, "namespaced_event"),
    ("batch/v1", "Job"): (client.BatchV1Api, "namespaced_job"),
    ("apps/v1", "Deployment"): (client.AppsV1Api, "namespaced_deployment"),
    ("coordination.k8s.io/v1", "Lease"): (client.CoordinationV1Api, "namespaced_lease"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (
        client.AutoscalingV2Api,
        "namespaced_horizontal_pod_autoscaler",
    ),
}
_client_lock = threading.Lock()
_api_client: client.ApiClient | None = None
REQUEST_TIMEOUT = (5.0, 30.0)
"""REQUEST_TIMEOUT: (connect, read) seconds of every call, so a hung API server or a dropped
connection costs a worker one failed reconcile (retried with back-off), never the thread."""


class TimedApiClient(client.ApiClient):
    """An ApiClient whose calls all get REQUEST_TIMEOUT unless the caller passes its own
    `_request_timeout`: every call site is covered, including ones added later."""

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        return super().call_api(
            method,
            url,
            header_params,
            body,
            post_params,
            _request_timeout=_request_timeout or REQUEST_TIMEOUT,
        )


def api_client() -> client.ApiClient:
    """One shared client: in-cluster when running in a pod, else the kubeconfig."""
    global _api_client
    with _client_lock:
        if _api_client is None:
            cfg = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
            cfg.connection_pool_maxsize = 64
            _api_client = TimedApiClient(cfg)
        return _api_client


def _api(api_version: str, kind: str):
    cls, suffix = _APIS[(api_version, kind)]
    return cls(api_client()), suffix


def _raw(resp) -> dict:
    return json.loads(resp.data)


def _drain(resp) -> None:
    # Reading the body is what hands the connection back to urllib3's pool; a response left
    # unread closes it, and the next request pays a new TLS handshake (both sides' CPU).
    resp.data  # noqa: B018


def get(api_version: str, kind: str, namespace: str, name: str) -> dict | None:
    api, suffix = _api(api_version, kind)
    try:
        return _raw(getattr(api, f"read_{suffix}")(name, namespace, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_(
    api_version: str, kind: str, namespace: str, selector: str = "", field_selector: str = ""
) -> list[dict]:
    api, suffix = _api(api_version, kind)
    return _raw(
        getattr(api, f"list_{suffix}")(
            namespace, label_selector=selector, field_selector=field_selector, _preload_content=False
        )
    )["items"]


def list_nodes(selector: str = "") -> list[dict]:
    """Nodes matching a label selector (cluster-scoped: a ClusterRole grants it)."""
    return _raw(client.CoreV1Api(api_client()).list_node(label_selector=selector, _preload_content=False))[
        "items"
    ]


FIELD_MANAGER = "capstan-operator"
"""FIELD_MANAGER owns every field of the children the operator applies (server-side apply)."""
APPLY = "application/apply-patch+yaml"  # JSON is YAML: the client sends the dict as JSON


def apply(obj: dict[str, Any]) -> dict:
    """Server-side apply of `obj` as FIELD_MANAGER: created when missing, else made to match, and
    a field this manager set before and `obj` no longer has is removed from the live object.
    `force` takes over fields another manager set (e.g. `kubectl edit`): the operator's desired
    state wins, as with a controller. A Job's pod template is immutable: reconcilers apply a Job
    only when there is none (or the same one again, after a lost status write)."""
    api, suffix = _api(obj["apiVersion"], obj["kind"])
    meta = obj["metadata"]
    return _raw(
        getattr(api, f"patch_{suffix}")(
            meta["name"],
            meta["namespace"],
            obj,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _preload_content=False,
        )
    )


def create(obj: dict[str, Any]) -> dict:
    """Create `obj`; a 409 (already there) is the caller's to handle (the leader election's race)."""
    api, suffix = _api(obj["apiVersion"], obj["kind"])
    return _raw(getattr(api, f"create_{suffix}")(obj["metadata"]["namespace"], obj, _preload_content=False))


def replace(obj: dict[str, Any]) -> dict:
    """Replace `obj` at its metadata.resourceVersion: a 409 when someone wrote it meanwhile."""
    api, suffix = _api(obj["apiVersion"], obj["kind"])
    meta = obj["metadata"]
    return _raw(
        getattr(api, f"replace_{suffix}")(meta["name"], meta["namespace"], obj, _preload_content=False)
    )


def patch(api_version: str, kind: str, namespace: str, name: str, body: dict) -> dict:
    api, suffix = _api(api_version, kind)
    return _raw(getattr(api, f"patch_{suffix}")(name, namespace, body, _preload_content=False))


def delete(api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
    """Delete if present; True when something was deleted."""
    api, suffix = _api(api_version, kind)
    try:
        _drain(
            getattr(api, f"delete_{suffix}")(
                name, namespace, propagation_policy=propagation, _preload_content=False
            )
        )
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def get_custom(plural: str, namespace: str, name: str) -> dict | None:
    api = client.CustomObjectsApi(api_client())
    try:
        return _raw(
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, _preload_content=False)
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_custom(
    plural: str, namespace: str, selector: str = "", group: str = GROUP, version: str = VERSION
) -> list[dict]:
    """Custom objects of `plural` (capstan.dev's unless `group`/`version` say another's)."""
    api = client.CustomObjectsApi(api_client())
    return _raw(
        api.list_namespaced_custom_object(
            group, version, namespace, plural, label_selector=selector, _preload_content=False
        )
    )["items"]


def pod_log(namespace: str, name: str, container: str, tail_lines: int) -> str:
    """The last lines of a container's log; empty when the log cannot be read."""
    api = client.CoreV1Api(api_client())
    try:
        resp = api.read_namespaced_pod_log(
            name, namespace, container=container, tail_lines=tail_lines, _preload_content=False
        )
        return resp.data.decode("utf-8", errors="replace")
    except ApiException:
        return ""


def apply_custom(obj: dict[str, Any]) -> dict:
    """Server-side apply of a custom object of any group (e.g. a Volcano PodGroup), as `apply`."""
    api = client.CustomObjectsApi(api_client())
    group, version = obj["apiVersion"].split("/")
    plural = obj["kind"].lower() + "s"
    meta = obj["metadata"]
    return _raw(
        api.patch_namespaced_custom_object(
            group,
            version,
            meta["namespace"],
            plural,
            meta["name"],
            obj,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _preload_content=False,
        )
    )


def patch_custom_status(plural: str, namespace: str, name: str, status: dict) -> dict | None:
    """Merge-patch the status subresource; None when the object is gone."""
    api = client.CustomObjectsApi(api_client())
    try:
        return _raw(
            api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}, _preload_content=False
            )
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def post_event(body: dict, type_: str, reason: str, message: str, component: str) -> None:
    """Record a core/v1 Event on `body` (what `kubectl describe` shows); best effort."""
    meta = body["metadata"]
    now = datetime.now(UTC)
    event = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],  # the API caps messages; the full text is in status
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
    with contextlib.suppress(ApiException):  # an Event is a courtesy; status carries the same facts
        _drain(
            client.CoreV1Api(api_client()).create_namespaced_event(
                meta["namespace"], event, _preload_content=False
            )
        )
