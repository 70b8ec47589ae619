"""A real Prometheus on loopback (`make install` builds it) scraping a tiny in-test HTTP target whose
counters grow at fixed rates: canary analysis and dashboard queries tested against PromQL as
Prometheus runs it, without a cluster or images."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from capstan_operator import prometheus as client
from hack.localcluster import prometheus

REPO = Path(__file__).resolve().parents[2]


def binary() -> Path:
    path = REPO / ".capstan" / "bin" / "prometheus"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make install` (hack/build-prometheus.sh)")
    return path


@dataclass
class Revision:
    """One serving revision's traffic: requests per second, the share that fail with a 5xx, and
    the latency every request takes (seconds)."""

    labels: dict[str, str]
    rps: float = 10.0
    error_share: float = 0.0
    latency_s: float = 0.1


def revision(namespace: str, name: str, n: int, **traffic) -> Revision:
    """Revision `n` of Deployment `name`, labelled as the cluster's pod job labels serving pods."""
    labels = {"namespace": namespace, "capstan_owner": name, "revision": str(n), "model_name": name}
    return Revision(labels, **traffic)


E2E = "vllm:e2e_request_latency_seconds"
BOUNDS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0)


@dataclass
class Target:
    """Serves /metrics as the serving pods of each revision would after `elapsed` seconds of
    their traffic (counters grow linearly, so increase() and rate() see steady traffic)."""

    revisions: list[Revision]
    extra: str = ""
    """extra: exposition lines served as they are (fixed series for dashboard panels)."""
    started: float = field(default_factory=time.monotonic)

    def text(self) -> str:
        t = time.monotonic() - self.started
        lines = ["# TYPE http_requests_total counter", f"# TYPE {E2E} histogram"]
        for r in self.revisions:
            n = int(r.rps * t)
            bad = int(n * r.error_share)
            sel = ",".join(f'{k}="{v}"' for k, v in r.labels.items())
            route = f'handler="/v1/chat/completions",method="POST",{sel}'
            lines.append(f'http_requests_total{{{route},status="2xx"}} {n - bad}')
            lines.append(f'http_requests_total{{{route},status="5xx"}} {bad}')
            for le in BOUNDS:
                lines.append(f'{E2E}_bucket{{{sel},le="{le}"}} {n if r.latency_s <= le else 0}')
            lines.append(f'{E2E}_bucket{{{sel},le="+Inf"}} {n}')
            lines.append(f"{E2E}_count{{{sel}}} {n}")
            lines.append(f"{E2E}_sum{{{sel}}} {n * r.latency_s}")
        return "\n".join(lines) + "\n" + self.extra


class _Handler(BaseHTTPRequestHandler):
    target: Target

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.server.target.text().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet: Prometheus scrapes every 2 s
        pass


@dataclass
class Running:
    url: str
    target: Target
    process: object
    server: ThreadingHTTPServer

    def wait_for(self, what: str, promql: str, at_least: float, deadline_s: float = 60.0) -> float:
        """Waits until `promql` yields a number >= at_least; raises naming `what` at the deadline."""
        end, last = time.monotonic() + deadline_s, None
        while time.monotonic() < end:
            last = client.number(self.url, promql)
            if last is not None and last >= at_least:
                return last
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what} ({promql} = {last})")

    def stop(self) -> None:
        prometheus.stop(self.process)
        self.server.shutdown()
        self.server.server_close()


def start(
    folder: Path,
    target: Target,
    kubeconfig: Path | None = None,
    others: dict[str, dict[str, str]] | None = None,
) -> Running:
    """Prometheus scraping `target` (served on a free loopback port), the `others` (host:port ->
    labels added to their series) and, given a kubeconfig, the annotated pods of that cluster."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.target = target
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    targets = {f"{host}:{port}": {}, **(others or {})}
    proc, prom_port = prometheus.start(
        str(binary()), folder, folder / "prometheus.log", kubeconfig, static_targets=targets
    )
    return Running(prometheus.url(prom_port), target, proc, server)
