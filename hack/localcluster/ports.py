"""A free loopback port for a process the harness or the tests start (standard library only:
`make images` runs before the virtualenv exists)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
