"""The kubelet's /portForward endpoint, for `kubectl port-forward`. The API server speaks SPDY/3.1
(or SPDY tunnelled in a WebSocket) to the kubelet; rather than a second implementation of those
protocols, `capstan-portforward` (hack/localcluster/portforward, built from the kubelet's own
k8s.io/cri-streaming) serves them on a Unix socket. This side finds the pod, passes the request on
with the pod's address, and relays the upgraded connection's bytes both ways."""

from __future__ import annotations

import logging
import select
import socket
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("nodeagent")
POD_IP_HEADER = "X-Capstan-Pod-IP"
START_DEADLINE_S = 10


class PortForwarder:
    """Starts `capstan-portforward` on first use and relays requests to it."""

    def __init__(self, binary: str, socket_path: Path):
        self.binary = binary
        self.socket_path = socket_path
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _ensure_started(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self.socket_path.unlink(missing_ok=True)
            self._proc = subprocess.Popen([self.binary, f"--socket={self.socket_path}"])
            deadline = time.monotonic() + START_DEADLINE_S
            while not self.socket_path.exists():
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.binary} did not open {self.socket_path} in {START_DEADLINE_S} s"
                    )
                time.sleep(0.05)

    def relay(self, handler, pod_ip: str) -> None:
        """Hand `handler`'s request (already parsed by http.server) to capstan-portforward and
        splice the two connections until either side closes."""
        self._ensure_started()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(str(self.socket_path))
        head = [f"{handler.command} {handler.path} HTTP/1.1"]
        head += [f"{k}: {v}" for k, v in handler.headers.items() if k.lower() != POD_IP_HEADER.lower()]
        head.append(f"{POD_IP_HEADER}: {pod_ip}")
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        # The API server waits for the 101 before it sends frames, so nothing is left in
        # handler.rfile's buffer: the raw (TLS) connection carries the rest.
        splice(handler.connection, upstream)
        handler.close_connection = True

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()


def splice(client, upstream: socket.socket) -> None:
    """Copy bytes both ways until one side closes. One thread: an ssl socket must not be read
    and written from two threads at once."""
    try:
        while True:
            # Bytes OpenSSL has already decrypted do not make the socket readable.
            ready = [client] if getattr(client, "pending", lambda: 0)() else []
            if not ready:
                ready, _, _ = select.select([client, upstream], [], [])
            for src, dst in ((client, upstream), (upstream, client)):
                if src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    dst.sendall(data)
    except (OSError, ValueError) as exc:  # a reset or closed connection ends the session
        log.debug("port-forward relay ended: %s", exc)
    finally:
        upstream.close()
