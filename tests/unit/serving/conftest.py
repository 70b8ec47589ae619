from __future__ import annotations

import pytest

from tests.support import server_proc, tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tiny_model.TinyModel:
    return tiny_model.session_model(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    """The server on the HF export, batching up to 8 sequences, a queue of 64."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    s = server_proc.start(tiny.export_uri, str(log), "--max-batch-size", "8", "--served-model-name", "tiny")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def narrow_server(tiny, tmp_path_factory):
    """One request at a time and one waiting: for backpressure and shutdown tests."""
    log = tmp_path_factory.mktemp("narrow") / "server.log"
    s = server_proc.start(tiny.export_uri, str(log), "--max-batch-size", "1", "--max-queue", "1")
    yield s
    s.stop()
