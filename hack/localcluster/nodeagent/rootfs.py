"""A container's root filesystem from its image: an overlay over the unpacked image (the image
is shared, each container writes its own upper layer), /proc, /dev and /sys, the pod's
/etc/hosts and the volumes bound inside it, then remounted read-only when the container asks.
`script` returns the shell lines that build it, run as root in the container's mount namespace."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

ENTER = Path(__file__).with_name("enter.py")


@dataclass(frozen=True)
class Rootfs:
    image: Path
    """image is the unpacked image (the overlay's lower layer; never written)."""
    dir: Path
    """dir holds this container instance's upper, work and merged folders."""
    read_only: bool
    workdir: str


def in_root(image: Path, target: str) -> str:
    """`target` as a path relative to the root filesystem, symbolic links resolved inside it
    (as runc's securejoin does): Debian's /var/run -> /run must not lead to the node's /run."""
    parts, out, hops = [p for p in target.split("/") if p not in ("", ".")], [], 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if out:
                out.pop()
            continue
        link = image.joinpath(*out, part)
        if link.is_symlink() and hops < 40:
            hops += 1
            dest = str(link.readlink())
            if dest.startswith("/"):
                out = []
            parts = [p for p in dest.split("/") if p not in ("", ".")] + parts
            continue
        out.append(part)
    return "./" + "/".join(out)


def script(fs: Rootfs, mounts: list, hosts_file: Path) -> list[str]:
    q = shlex.quote
    up, work, merged = fs.dir / "upper", fs.dir / "work", fs.dir / "merged"
    lines = [
        f"mkdir -p {q(str(up))} {q(str(work))} {q(str(merged))}",
        f"mount -t overlay overlay -o lowerdir={q(str(fs.image))},upperdir={q(str(up))},workdir={q(str(work))} "
        f"{q(str(merged))}",
        f"cd {q(str(merged))}",
        "mkdir -p proc dev sys etc tmp",
        "mount -t proc proc proc",
        "mount --rbind /dev dev",
        "mount --rbind /sys sys",
    ]
    for name, source in (("hosts", hosts_file), ("resolv.conf", Path("/etc/resolv.conf"))):
        # An image's /etc/resolv.conf may be a dangling link; the bind needs a plain file.
        lines.append(f"rm -f etc/{name} && touch etc/{name} && mount --bind {q(str(source))} etc/{name}")
    for m in mounts:
        target = q(in_root(fs.image, m.target))
        make = (
            f"mkdir -p {target}" if m.source.is_dir() else f"mkdir -p $(dirname {target}) && touch {target}"
        )
        lines.append(f"{make} && mount --bind {q(str(m.source))} {target}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    lines.append(f"mkdir -p {q(in_root(fs.image, fs.workdir))}")
    if fs.read_only:
        lines.append(f"mount -o remount,ro {q(str(merged))}")
    return lines
