"""The kubelet's endpoints the API server calls: /containerLogs for `kubectl logs`, and
/portForward for `kubectl port-forward` (relayed: nodeagent/portforward.py)."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def _parse_time(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _since(q: dict[str, str]) -> float | None:
    """The earliest line time asked for (epoch seconds), or None for all."""
    if "sinceSeconds" in q:
        return time.time() - float(q["sinceSeconds"])
    if "sinceTime" in q:
        return _parse_time(q["sinceTime"])
    return None


def _select(lines: list[bytes], since: float | None, tail: str | None) -> list[bytes]:
    """The lines written at or after `since`, then the last `tail` of them."""
    if since is not None:
        lines = [ln for ln in lines if _parse_time(ln.split(b" ", 1)[0].decode()) >= since]
    if tail is not None:
        n = int(tail)
        lines = lines[-n:] if n > 0 else []
    return lines


class LogHandler(BaseHTTPRequestHandler):
    """GET /containerLogs/<ns>/<pod>/<container> with the kubelet's query parameters."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: simple streaming
    agent = None  # the node agent whose pods are served; set by serve_logs

    def log_message(self, *args):
        pass

    def do_POST(self):
        if not self._port_forward():
            self.send_error(405, "only /portForward takes POST")

    def do_GET(self):
        if self._port_forward():
            return
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        previous = q.get("previous") == "true"
        found = self._find_log(url.path, previous)
        if found is None:
            return
        worker, container, path = found
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        since = _since(q)
        stamps = q.get("timestamps") == "true"
        limit = int(q["limitBytes"]) if "limitBytes" in q else None
        with open(path, "rb") as f:
            lines = _select(f.readlines(), since, q.get("tailLines"))
            sent, full = self._send(lines, stamps, limit, 0)
            if full or q.get("follow") != "true" or previous:
                return
            self._follow(f, worker, container, stamps, limit, sent)

    def _port_forward(self) -> bool:
        """Serve /portForward/<ns>/<pod>[/<uid>] (SPDY, or WebSocket: a GET); False for any other
        path."""
        parts = urlparse(self.path).path.strip("/").split("/")
        if parts[0] != "portForward":
            return False
        worker = self.agent.worker_by_name(parts[1], parts[2]) if len(parts) >= 3 else None
        if worker is None or not worker.pod_ip:
            self.send_error(404, "pod does not exist")
        elif self.agent.port_forwarder is None:
            self.send_error(501, "this node agent was started without --portforward-bin")
        else:
            self.agent.port_forwarder.relay(self, worker.pod_ip)
        return True

    def _find_log(self, url_path: str, previous: bool):
        """(worker, container, log path), or None after sending the error."""
        parts = url_path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "only /containerLogs/<ns>/<pod>/<container> is served")
            return None
        _, ns, pod, container = parts
        worker = self.agent.worker_by_name(ns, pod)
        if worker is None:
            self.send_error(404, f"pod {ns}/{pod} is not on this node")
            return None
        path = worker.log_file(container, previous)
        if path is None:
            self.send_error(
                400,
                f'previous terminated container "{container}" in pod "{pod}" not found'
                if previous
                else f"container {container} has no logs yet",
            )
            return None
        return worker, container, path

    def _follow(self, f, worker, container: str, stamps: bool, limit: int | None, sent: int) -> None:
        """Send lines as the container writes them; once it has stopped, the rest regardless of
        `limit`."""
        while True:
            ln = f.readline()
            if ln:
                sent, full = self._send([ln], stamps, limit, sent)
                if full:
                    return
                continue
            if not worker.running(container) or worker.gone:
                rest = f.read()
                for extra in rest.splitlines(keepends=True):
                    self._emit(extra, stamps, None, 0)
                return
            time.sleep(0.1)

    def _send(self, lines: list[bytes], stamps: bool, limit: int | None, sent: int) -> tuple[int, bool]:
        """Write `lines` until `limit` bytes have gone in all; return the bytes sent so far and
        whether the limit was reached."""
        for ln in lines:
            sent += self._emit(ln, stamps, limit, sent)
            if limit is not None and sent >= limit:
                return sent, True
        return sent, False

    def _emit(self, line: bytes, stamps: bool, limit: int | None, sent: int) -> int:
        out = line if stamps else line.split(b" ", 1)[1] if b" " in line else line
        if limit is not None:
            out = out[: max(limit - sent, 0)]
        try:
            self.wfile.write(out)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            raise SystemExit from None  # the client went away; end this request's thread
        return len(out)


def serve_logs(agent, port: int, cert: str, key: str) -> ThreadingHTTPServer:
    handler = type("Handler", (LogHandler,), {"agent": agent})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True, name="logs").start()
    return server
