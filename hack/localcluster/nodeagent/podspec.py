"""Turn a pod's spec into what a process needs: environment variables and volume folders."""

from __future__ import annotations

import base64
import math
import os
import re
import time
from pathlib import Path

from kubernetes.client.exceptions import ApiException

_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ConfigError(Exception):
    """The pod refers to something missing (CreateContainerConfigError in the kubelet)."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: unknown references stay as they are; `$$` escapes."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def field_ref(pod: dict, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    return {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }.get(path, "")


_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "m": 1e-3,
}


def quantity(q: str | int | float) -> float:
    q = str(q)
    for suf, mult in sorted(_SUFFIX.items(), key=lambda kv: -len(kv[0])):
        if q.endswith(suf):
            return float(q[: -len(suf)]) * mult
    return float(q)


def resource_ref(pod: dict, ref: dict, default_container: str, node_alloc: dict) -> str:
    cname = ref.get("containerName") or default_container
    c = next((c for c in pod["spec"]["containers"] if c["name"] == cname), {})
    kind, _, res = ref["resource"].partition(".")
    value = (c.get("resources", {}).get(kind) or {}).get(res)
    if value is None:  # like the kubelet: an unset limit reads as the node's allocatable
        value = node_alloc.get(res, "0")
    return str(math.ceil(quantity(value) / quantity(ref.get("divisor", "1"))))


class Resolver:
    """Reads ConfigMaps and Secrets for env and volumes, one API call per object per pod start."""

    def __init__(self, api, namespace: str):
        self.api, self.ns, self._cache = api, namespace, {}

    def _get(self, kind: str, name: str, optional: bool) -> dict | None:
        key = (kind, name)
        if key not in self._cache:
            try:
                fn = (
                    self.api.read_namespaced_config_map
                    if kind == "configmap"
                    else self.api.read_namespaced_secret
                )
                obj = self.api.api_client.sanitize_for_serialization(fn(name, self.ns))
                data = dict(obj.get("data") or {})
                if kind == "secret":
                    data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
                else:
                    data.update(
                        {
                            k: base64.b64decode(v).decode(errors="replace")
                            for k, v in (obj.get("binaryData") or {}).items()
                        }
                    )
                self._cache[key] = data
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._cache[key] = None
        data = self._cache[key]
        if data is None and not optional:
            raise ConfigError(f'{kind} "{name}" not found')
        return data

    def key(self, kind: str, ref: dict) -> str | None:
        data = self._get(kind, ref["name"], ref.get("optional", False))
        if data is None:
            return None
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}")
        return data[ref["key"]]

    def all(self, kind: str, name: str, optional: bool) -> dict[str, str]:
        return self._get(kind, name, optional) or {}


def container_env(
    pod: dict,
    container: dict,
    resolver: Resolver,
    pod_ip: str,
    host_ip: str,
    base: dict[str, str],
    node_alloc: dict,
) -> dict[str, str]:
    env = dict(base)
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            env.update(
                {
                    prefix + k: v
                    for k, v in resolver.all("configmap", ref["name"], ref.get("optional", False)).items()
                }
            )
        elif "secretRef" in src:
            ref = src["secretRef"]
            env.update(
                {
                    prefix + k: v
                    for k, v in resolver.all("secret", ref["name"], ref.get("optional", False)).items()
                }
            )
    for e in container.get("env") or []:
        if "value" in e or "valueFrom" not in e:
            env[e["name"]] = expand(e.get("value", ""), env)
            continue
        vf = e["valueFrom"]
        value = None
        if "fieldRef" in vf:
            value = field_ref(pod, vf["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in vf:
            value = resource_ref(pod, vf["resourceFieldRef"], container["name"], node_alloc)
        elif "configMapKeyRef" in vf:
            value = resolver.key("configmap", vf["configMapKeyRef"])
        elif "secretKeyRef" in vf:
            value = resolver.key("secret", vf["secretKeyRef"])
        if value is not None:
            env[e["name"]] = value
    return env


def _write_items(folder: Path, data: dict[str, str], items: list | None, mode: int | None) -> None:
    pairs = [(i["key"], i["path"], i.get("mode")) for i in items] if items else [(k, k, None) for k in data]
    for key, rel, item_mode in pairs:
        if key not in data:
            continue
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(data[key])
        os.chmod(tmp, item_mode or mode or 0o644)
        os.replace(tmp, path)


def write_volume(
    vol: dict, folder: Path, pod: dict, resolver: Resolver, pod_ip: str, host_ip: str, token_fn
) -> float | None:
    """Fill `folder` with the volume's content. Returns when its token must be refreshed (monotonic
    time), or None when it holds no token."""
    folder.mkdir(parents=True, exist_ok=True)
    refresh_at = None
    if "configMap" in vol:
        cm = vol["configMap"]
        _write_items(
            folder,
            resolver.all("configmap", cm["name"], cm.get("optional", False)),
            cm.get("items"),
            cm.get("defaultMode"),
        )
    elif "secret" in vol:
        s = vol["secret"]
        _write_items(
            folder,
            resolver.all("secret", s["secretName"], s.get("optional", False)),
            s.get("items"),
            s.get("defaultMode"),
        )
    elif "downwardAPI" in vol:
        _write_downward(folder, vol["downwardAPI"].get("items") or [], pod, pod_ip, host_ip)
    elif "projected" in vol:
        for src in vol["projected"].get("sources") or []:
            if "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                exp = int(sat.get("expirationSeconds", 3607))
                token = token_fn(sat.get("audience"), exp)
                # The ServiceAccount admission sets defaultMode 0644 on the volume it adds.
                mode = vol["projected"].get("defaultMode", 0o644)
                _write_items(folder, {"token": token}, [{"key": "token", "path": sat["path"]}], mode)
                refresh_at = time.monotonic() + 0.8 * exp
            elif "configMap" in src:
                cm = src["configMap"]
                _write_items(
                    folder,
                    resolver.all("configmap", cm["name"], cm.get("optional", False)),
                    cm.get("items"),
                    None,
                )
            elif "secret" in src:
                s = src["secret"]
                _write_items(
                    folder, resolver.all("secret", s["name"], s.get("optional", False)), s.get("items"), None
                )
            elif "downwardAPI" in src:
                _write_downward(folder, src["downwardAPI"].get("items") or [], pod, pod_ip, host_ip)
    # emptyDir (any medium) is just the folder; hostPath is bound directly by the caller.
    return refresh_at


def _write_downward(folder: Path, items: list, pod: dict, pod_ip: str, host_ip: str) -> None:
    data = {}
    for it in items:
        if "fieldRef" in it:
            path = it["fieldRef"]["fieldPath"]
            if path in ("metadata.labels", "metadata.annotations"):
                kv = pod["metadata"].get(path.split(".")[1]) or {}
                data[it["path"]] = "\n".join(f'{k}="{v}"' for k, v in sorted(kv.items()))
            else:
                data[it["path"]] = field_ref(pod, path, pod_ip, host_ip)
    _write_items(folder, data, [{"key": k, "path": k} for k in data], None)


def share_volume(vol: dict, folder: Path, pod_security: dict) -> None:
    """Make a volume usable by a container that does not run as root, as the kubelet does: an
    emptyDir is world-writable; files of Secrets, ConfigMaps and projected tokens belong to the
    pod's runAsUser (when set) and its fsGroup, group-readable."""
    if "hostPath" in vol:
        return
    if "emptyDir" in vol:
        os.chmod(folder, 0o777)
        return
    uid, gid = pod_security.get("runAsUser"), pod_security.get("fsGroup")
    if uid is None and gid is None:
        return
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid, follow_symlinks=False)
        if path.is_file():
            os.chmod(path, path.stat().st_mode | 0o040)
