"""Fixtures shared by every tier."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.support.s3server import start_s3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """SeaweedFS's S3 gateway on loopback for the whole session (data and weed.log in the
    session's tmp folder); AWS_* variables point at it."""
    server = start_s3(tmp_path_factory.mktemp("s3"))
    old = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket; returns its `s3://name` URI."""
    return _new_bucket(s3_server)


@pytest.fixture(scope="session")
def s3_session_bucket(s3_server) -> str:
    """One bucket for the session, for what many tests read and none writes (the tiny model)."""
    return _new_bucket(s3_server)


def _new_bucket(s3_server) -> str:
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    ).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The real local control plane (etcd, kube-apiserver, controller-manager, scheduler, node
    agent) with its own S3 server (SeaweedFS) and the OCI registry `make images` pushed to, started once per
    test session and stopped at its end. Pods run from their images."""
    from pathlib import Path

    from hack.localcluster.cli import IMAGES
    from hack.localcluster.cluster import Cluster, ClusterOptions
    from tests.support.cluster import ClusterHandle

    repo = Path(__file__).resolve().parents[1]
    state = repo / ".capstan"
    root = tmp_path_factory.mktemp("cluster")
    c = Cluster(
        ClusterOptions(
            root=root,
            bin_dir=state / "bin",
            nodes=2,
            gpus_per_node=4,
            registry_storage=state / "registry",
            image_store=state / "nodeimages",
            prepull=IMAGES,
        )
    )
    try:
        c.up()
    except Exception:
        c.down(quiet=True)
        raise
    yield ClusterHandle(c)
    c.down()


@pytest.fixture(scope="session")
def prometheus_url(cluster) -> str:
    """The test cluster's Prometheus (started with it, hack/localcluster/prometheus.py): it
    discovers the annotated pods through the cluster's API server."""
    return cluster.cluster.prometheus_file.read_text().strip()


@pytest.fixture
def namespace(cluster, request):
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = "t-" + uuid.uuid4().hex[:8]
    cluster.namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
