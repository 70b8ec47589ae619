from __future__ import annotations

import pytest

from tests.support import tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tiny_model.TinyModel:
    return tiny_model.session_model(tmp_path_factory)
