"""A free loopback port for a process the tests start (the S3 server, the inference server, the
operator's endpoints)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
