"""/etc/hosts for a pod: its own names, other pods by hostname.subdomain, Services by name.

Service names resolve to a ready pod's loopback IP (never to the ClusterIP, which must not be
contacted from these machines); pods behind a headless Service resolve whether ready or not,
as with publishNotReadyAddresses, so rendezvous can start before readiness."""

from __future__ import annotations

DOMAIN = "cluster.local"


def _ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return c["status"] == "True"
    return False


def _names(ns: str, own_ns: str, *parts: str) -> list[str]:
    base = ".".join(parts)
    names = [f"{base}.{ns}.svc.{DOMAIN}", f"{base}.{ns}.svc", f"{base}.{ns}"]
    if ns == own_ns:
        names.append(base)
    return names


def render(pod: dict, pod_ip: str, pods: list[dict], services: list[dict]) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    ns = meta["namespace"]
    hostname = spec.get("hostname") or meta["name"]
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    own = [hostname]
    if spec.get("subdomain"):
        own = _names(ns, ns, hostname, spec["subdomain"])[:2] + [hostname]
    lines.append(f"{pod_ip}\t{' '.join(own)}")
    seen = set(own)
    for other in pods:
        ip = (other.get("status") or {}).get("podIP")
        osp = other["spec"]
        if (
            not ip
            or other["metadata"]["uid"] == meta["uid"]
            or not osp.get("subdomain")
            or not osp.get("hostname")
        ):
            continue
        if (other.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        names = [
            n
            for n in _names(other["metadata"]["namespace"], ns, osp["hostname"], osp["subdomain"])
            if n not in seen
        ]
        if names:
            seen.update(names)
            lines.append(f"{ip}\t{' '.join(names)}")
    for svc in services:
        sel = svc["spec"].get("selector")
        if not sel:
            continue
        sns = svc["metadata"]["namespace"]
        headless = svc["spec"].get("clusterIP") == "None"
        publish_all = headless or svc["spec"].get("publishNotReadyAddresses")
        candidates = sorted(
            (
                p
                for p in pods
                if p["metadata"]["namespace"] == sns
                and (p.get("status") or {}).get("podIP")
                and (p.get("status") or {}).get("phase") == "Running"
                and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
                and (publish_all or _ready(p))
            ),
            key=lambda p: p["metadata"]["name"],
        )
        if not candidates:
            continue
        names = [n for n in _names(sns, ns, svc["metadata"]["name"]) if n not in seen]
        if names:
            seen.update(names)
            lines.append(f"{candidates[0]['status']['podIP']}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"
