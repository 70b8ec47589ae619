"""The S3 endpoint the tests, the benchmarks and the local cluster use (SeaweedFS, `weed mini`):
loopback only, and only the configured identity gets in."""

from __future__ import annotations

import os

import boto3
import botocore.exceptions
import pytest

LISTEN = "0A"  # TCP state in /proc/net/tcp


def listening_addresses(pid: int) -> set[str]:
    """host:port of every TCP socket `pid` listens on (from /proc: no tool needed)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/net/{table}") as f:
            for row in f.readlines()[1:]:
                cols = row.split()
                if cols[3] == LISTEN and cols[9] in inodes:
                    host, port = cols[1].split(":")
                    if width == 8:  # little-endian IPv4
                        host = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    found.add(f"{host}:{int(port, 16)}")
    return found


def test_every_port_is_on_loopback(s3_server):
    addresses = listening_addresses(s3_server.process.pid)
    assert s3_server.endpoint.removeprefix("http://") in addresses
    assert len(addresses) >= 8  # master, volume, filer, S3, admin: HTTP and gRPC each
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_only_the_configured_identity_gets_in(s3_server, s3_bucket):
    def client(secret: str):
        return boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint,
            region_name=s3_server.region,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=secret,
        )

    bucket = s3_bucket.removeprefix("s3://")
    client(s3_server.secret_key).put_object(Bucket=bucket, Key="k", Body=b"v")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client("not-the-secret").get_object(Bucket=bucket, Key="k")
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")


def test_a_session_can_write_to_more_buckets_than_one_per_free_gib(s3_server):
    """Every test makes a bucket and each bucket takes a volume: mini's own sizing (1 GiB volumes,
    free disk / 1 GiB of them) ran out after 24 on a CI machine with 28 GB free."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )
    free_gib = os.statvfs(s3_server.data_dir).f_bavail * os.statvfs(s3_server.data_dir).f_frsize >> 30
    for i in range(min(free_gib, 100) + 5):
        client.create_bucket(Bucket=f"many-{i:03d}")
        client.put_object(Bucket=f"many-{i:03d}", Key="k", Body=b"v" * 1000)
    assert client.get_object(Bucket="many-000", Key="k")["Body"].read() == b"v" * 1000
