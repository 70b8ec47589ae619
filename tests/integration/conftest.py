"""Fixtures for tests against the local API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from capstan_api import KINDS
from capstan_api.common import GROUP
from tests.support import tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def capstan_crds(cluster):
    """The generated CRDs installed and established. Applied again for every test that asks:
    another test in the session (a Helm install or uninstall) may have changed them."""
    cluster.kubectl("apply", "-f", str(REPO / "manifests" / "crds"))
    names = [f"crd/{k.plural}.{GROUP}" for k in KINDS.values()]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names, timeout=90)
    return names


@pytest.fixture(scope="module")
def tiny(s3_session_bucket) -> tiny_model.TinyModel:
    """The tiny model in S3: workload pods run from their images and see none of the node's
    folders, so a file:// model would not be there for them."""
    return tiny_model.session_model_s3(s3_session_bucket)
