"""kube.py's client: every call carries a timeout, so a hung API server cannot hold a worker."""

from __future__ import annotations

import socket
import threading

import pytest
import urllib3
from kubernetes import client

from capstan_operator import kube


@pytest.fixture
def hung_server():
    """A TCP server on loopback that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    srv.close()


def timed_client(host: str) -> kube.TimedApiClient:
    cfg = client.Configuration()
    cfg.host = host
    cfg.retries = False  # urllib3 would otherwise retry the read and hide what one call does
    return kube.TimedApiClient(cfg)


def test_a_call_to_a_server_that_never_answers_times_out(hung_server, monkeypatch):
    monkeypatch.setattr(kube, "REQUEST_TIMEOUT", (1.0, 0.5))
    monkeypatch.setattr(kube, "_api_client", timed_client(hung_server))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        kube.get("v1", "ConfigMap", "ns", "x")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        kube.get_custom("trainingruns", "ns", "x")


def test_a_callers_own_timeout_wins(monkeypatch):
    seen = []
    api = timed_client("http://127.0.0.1:1")

    def request(method, url, headers=None, body=None, post_params=None, _request_timeout=None):
        seen.append(_request_timeout)
        raise RuntimeError("recorded")

    monkeypatch.setattr(api.rest_client, "request", request)
    core = client.CoreV1Api(api)
    for timeout in (None, 3):
        with pytest.raises(RuntimeError, match="recorded"):
            core.read_namespaced_pod_log("p", "ns", _request_timeout=timeout, _preload_content=False)
    assert seen == [kube.REQUEST_TIMEOUT, 3]
