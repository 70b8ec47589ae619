"""Shared set-up for the trainer benchmarks: a one-process gloo group and a bucket on SeaweedFS."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import boto3
import torch.distributed as dist

from tests.support.s3server import S3Server, start_s3


@contextlib.contextmanager
def one_process_group() -> Iterator[None]:
    """What `python -m capstan_trainer.train` sets up without torchrun: gloo on loopback, world 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def s3_server_and_bucket() -> Iterator[tuple[S3Server, str]]:
    """A fresh bucket on a SeaweedFS server on loopback, AWS_* pointing at it; yields the server
    and "s3://name"."""
    server = start_s3()
    try:
        os.environ.update(server.env)
        name = f"bench-{uuid.uuid4().hex[:8]}"
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        )
        s3.create_bucket(Bucket=name)
        yield server, f"s3://{name}"
    finally:
        server.stop()


@contextlib.contextmanager
def s3_bucket() -> Iterator[str]:
    """`s3_server_and_bucket`'s bucket alone."""
    with s3_server_and_bucket() as (_, uri):
        yield uri
