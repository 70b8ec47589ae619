from __future__ import annotations

import pytest

from capstan_trainer import synthetic


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> str:
    """A small synthetic dataset (256-token vocabulary) on local files, read-only to the tests."""
    uri = f"file://{tmp_path_factory.mktemp('data')}"
    synthetic.write_dataset(uri, vocab_size=256, train_tokens=20_000, validation_tokens=2_000)
    return uri
