from __future__ import annotations

import pytest

from tests.support import server_proc, tiny_model

LOCKED_KEY = "s3cret-key"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tiny_model.TinyModel:
    return tiny_model.session_model(tmp_path_factory)


@pytest.fixture(scope="module")
def servers(tiny, tmp_path_factory):
    """The servers, started together (start-up is mostly imports, one core each):
    "main" batches up to 8 sequences with a queue of 64; "narrow" serves one request at a time with
    one waiting, for the backpressure and shutdown tests; "locked" needs an API key and gives a
    request 10 ms (a 120-token generation takes longer), for the auth and deadline tests."""
    log = tmp_path_factory.mktemp("servers")
    launched = {
        "main": server_proc.launch(
            tiny.export_uri, str(log / "main.log"), "--max-batch-size", "8", "--served-model-name", "tiny"
        ),
        "narrow": server_proc.launch(
            tiny.export_uri, str(log / "narrow.log"), "--max-batch-size", "1", "--max-queue", "1"
        ),
        "locked": server_proc.launch(
            tiny.export_uri,
            str(log / "locked.log"),
            "--api-key",
            LOCKED_KEY,
            "--request-timeout-seconds",
            "0.01",
        ),
    }
    try:
        yield {name: server_proc.wait_ready(s) for name, s in launched.items()}
    finally:
        for s in launched.values():  # SIGTERM both first: they drain in parallel
            if s.proc.poll() is None:
                s.proc.terminate()
        for s in launched.values():
            s.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers["main"]


@pytest.fixture(scope="module")
def narrow_server(servers):
    return servers["narrow"]


@pytest.fixture(scope="module")
def locked_server(servers):
    return servers["locked"]
