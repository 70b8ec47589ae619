"""Pod IPs on loopback that no other local cluster on this machine is using.

Several clusters run at once on a shared machine (test sessions, `make demo`). When every node
agent handed out 127.1.0.1, 127.1.0.2, ... two clusters' pods got the same address and the second
operator or server failed with "Address already in use" on its fixed port. So each agent starts
in a random 127.X.0.0/16 block that nothing listens in, and skips any address something already
listens on.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from pathlib import Path

LISTEN = "0A"  # TCP state in /proc/net/tcp
FIRST, LAST = int(ipaddress.ip_address("127.1.0.1")), int(ipaddress.ip_address("127.254.255.254"))


def listening_ips(table: str | None = None) -> set[str]:
    """IPv4 addresses with a listening TCP socket, from /proc/net/tcp (or the given text)."""
    if table is None:
        path = Path("/proc/net/tcp")
        table = path.read_text() if path.exists() else ""
    out = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == LISTEN:
            addr = fields[1].split(":")[0]
            out.add(socket.inet_ntoa(struct.pack("<I", int(addr, 16))))
    return out


def first_ip(busy: set[str], rng: random.Random | None = None) -> int:
    """The first address of a random 127.X.0.0/16 block (X in 1..254) with no listener in it."""
    taken = {int(ip.split(".")[1]) for ip in busy if ip.startswith("127.")}
    free = [x for x in range(1, 255) if x not in taken] or list(range(1, 255))
    block = (rng or random.Random()).choice(free)
    return int(ipaddress.ip_address(f"127.{block}.0.1"))


def usable(ip: str, used: set[str], busy: set[str]) -> bool:
    return ip not in used and ip not in busy and not ip.endswith((".0", ".255"))


def next_after(n: int) -> int:
    return FIRST if n + 1 > LAST else n + 1
