"""The set-up the operator benchmarks share: a local control plane (root outside /tmp: a pod's /tmp
is an emptyDir that would hide the volumes the node agent keeps there), a bucket with the tiny
synthetic dataset, the CRDs, a namespace with the S3 Secret, and the real operator process."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from capstan_trainer import synthetic
from hack.localcluster.cluster import Cluster, ClusterOptions
from tests.support.cluster import ClusterHandle
from tests.support.operator_proc import OperatorProcess
from tests.support.trainingruns import TINY_DATASET

REPO = Path(__file__).resolve().parents[1]
NS = "bench"
SECRET = "capstan-s3"


def wait(what: str, check, timeout: float, interval: float = 0.2):
    """check()'s first truthy value; raises naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if last := check():
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def operator_on_cluster(prefix: str, nodes: int, bucket: str) -> Iterator[tuple[ClusterHandle, Path]]:
    """(the cluster, its root folder) with the operator running; `bucket` holds data/tiny."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    c = Cluster(ClusterOptions(root=root, bin_dir=REPO / ".capstan" / "bin", nodes=nodes))
    c.up()
    h = ClusterHandle(c)
    s3 = {k: v for k, v in h.env.items() if k.startswith("AWS_")}
    os.environ.update(s3)  # the data upload and the benchmarks' own reads use the cluster's S3
    op = None
    try:
        boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name=s3["AWS_REGION"]).create_bucket(
            Bucket=bucket
        )
        synthetic.write_dataset(f"s3://{bucket}/data/tiny", **TINY_DATASET)
        h.kubectl("apply", "-f", str(REPO / "manifests" / "crds"))
        h.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/trainingruns.capstan.dev")
        h.namespace(NS)
        h.create_s3_secret(SECRET, NS, s3)
        op_env = {
            "CAPSTAN_S3_ENDPOINT": s3["AWS_ENDPOINT_URL"],
            "CAPSTAN_S3_SECRET": SECRET,
            "CAPSTAN_LOG_LEVEL": "WARNING",
        }
        op = OperatorProcess(h, NS, root / "operator.log", env=op_env)
        op.start()
        wait("the operator's liveness endpoint", op.live, 60)
        yield h, root
    finally:
        if op is not None:
            op.kill()
        c.down(quiet=True)
