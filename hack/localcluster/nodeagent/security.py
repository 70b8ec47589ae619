"""What a container runs as when it runs from an image, by the kubelet's rules: the command
from the pod over the image's Entrypoint/Cmd, the environment over the image's Env, the user
from securityContext over the image's User, and runAsNonRoot checked against the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hack.localcluster.nodeagent.podspec import ConfigError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CreateError(Exception):
    """The container cannot be created from what the pod and image say (CreateContainerError)."""


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    groups: list[int]
    read_only_root: bool
    no_new_privs: bool


def argv(container: dict, config: dict) -> list[str]:
    """command replaces Entrypoint (and drops Cmd); args replace Cmd."""
    if container.get("command"):
        return list(container["command"]) + list(container.get("args") or [])
    entry = list(config.get("Entrypoint") or [])
    rest = container.get("args")
    out = entry + (list(rest) if rest is not None else list(config.get("Cmd") or []))
    if not out:
        raise CreateError("no command specified: the pod sets none and the image has no Entrypoint or Cmd")
    return out


def image_env(config: dict) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def workdir(container: dict, config: dict) -> str:
    return container.get("workingDir") or config.get("WorkingDir") or "/"


def run_as(pod: dict, container: dict, config: dict, root: Path) -> RunAs:
    psc = pod["spec"].get("securityContext") or {}
    csc = container.get("securityContext") or {}
    uid, gid = _pick("runAsUser", csc, psc), _pick("runAsGroup", csc, psc)
    non_root = _pick("runAsNonRoot", csc, psc)
    user, _, group = (config.get("User") or "").partition(":")
    where = (
        f'(pod: "{pod["metadata"]["namespace"]}/{pod["metadata"]["name"]}", container: {container["name"]})'
    )
    if uid is None:
        if user and not user.isdigit():
            if non_root:
                raise ConfigError(
                    f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify "
                    f"user is non-root {where}"
                )
            uid, primary = _lookup_user(root, user)
        else:
            uid, primary = int(user or 0), None
        if gid is None and group:
            gid = int(group) if group.isdigit() else _lookup_group(root, group)
        gid = gid if gid is not None else primary
    if non_root and uid == 0:
        raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")
    if gid is None:
        gid = _primary_gid(root, uid)
    groups = [int(g) for g in psc.get("supplementalGroups") or []]
    if psc.get("fsGroup") is not None:
        groups.append(int(psc["fsGroup"]))
    return RunAs(
        uid=uid,
        gid=gid,
        groups=sorted(set(groups)),
        read_only_root=bool(csc.get("readOnlyRootFilesystem")),
        no_new_privs=csc.get("allowPrivilegeEscalation") is False,
    )


def _pick(key: str, container_sc: dict, pod_sc: dict):
    return container_sc[key] if container_sc.get(key) is not None else pod_sc.get(key)


def _entries(path: Path) -> list[list[str]]:
    try:
        return [
            line.split(":") for line in path.read_text().splitlines() if line and not line.startswith("#")
        ]
    except OSError:
        return []


def _lookup_user(root: Path, name: str) -> tuple[int, int]:
    for e in _entries(root / "etc" / "passwd"):
        if len(e) > 3 and e[0] == name:
            return int(e[2]), int(e[3])
    raise ConfigError(f"unable to find user {name}: no matching entries in passwd file")


def _lookup_group(root: Path, name: str) -> int:
    for e in _entries(root / "etc" / "group"):
        if len(e) > 2 and e[0] == name:
            return int(e[2])
    raise ConfigError(f"unable to find group {name}: no matching entries in group file")


def _primary_gid(root: Path, uid: int) -> int:
    for e in _entries(root / "etc" / "passwd"):
        if len(e) > 3 and e[2] == str(uid):
            return int(e[3])
    return 0
