"""The kubelet's log endpoint, which the API server calls for `kubectl logs`."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def _parse_time(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def serve_logs(agent, port: int, cert: str, key: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes: simple streaming

        def log_message(self, *args):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404, "only /containerLogs/<ns>/<pod>/<container> is served")
                return
            _, ns, pod, container = parts
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            worker = agent.worker_by_name(ns, pod)
            if worker is None:
                self.send_error(404, f"pod {ns}/{pod} is not on this node")
                return
            previous = q.get("previous") == "true"
            path = worker.log_file(container, previous)
            if path is None:
                self.send_error(
                    400,
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                    if previous
                    else f"container {container} has no logs yet",
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            since = None
            if "sinceSeconds" in q:
                since = time.time() - float(q["sinceSeconds"])
            elif "sinceTime" in q:
                since = _parse_time(q["sinceTime"])
            stamps = q.get("timestamps") == "true"
            limit = int(q["limitBytes"]) if "limitBytes" in q else None
            with open(path, "rb") as f:
                lines = f.readlines()
                if since is not None:
                    lines = [ln for ln in lines if _parse_time(ln.split(b" ", 1)[0].decode()) >= since]
                if "tailLines" in q:
                    n = int(q["tailLines"])
                    lines = lines[-n:] if n > 0 else []
                sent = 0
                for ln in lines:
                    sent += self._emit(ln, stamps, limit, sent)
                    if limit is not None and sent >= limit:
                        return
                if q.get("follow") != "true" or previous:
                    return
                while True:
                    ln = f.readline()
                    if ln:
                        sent += self._emit(ln, stamps, limit, sent)
                        if limit is not None and sent >= limit:
                            return
                        continue
                    if not worker.running(container) or worker.gone:
                        rest = f.read()
                        for extra in rest.splitlines(keepends=True):
                            self._emit(extra, stamps, None, 0)
                        return
                    time.sleep(0.1)

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

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True, name="logs").start()
    return server
