"""Put the bundled demo corpus into object storage: `python -m hack.upload_corpus s3://BUCKET/PREFIX`
(`--source manifests/examples/chat` for the demo conversations).

Creates the bucket when it is missing and overwrites the files, so running it again is harmless.
The endpoint and credentials come from the AWS_* variables (`.capstan/s3.env` on the local
cluster), as for every other S3 client in the project.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlparse

import boto3

CORPUS = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "corpus"


def s3_client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )


def upload_corpus(target: str, corpus: Path = CORPUS) -> list[str]:
    """Upload every corpus/*.jsonl under `target` (s3://bucket/prefix); returns the URIs written."""
    url = urlparse(target)
    if url.scheme != "s3" or not url.netloc:
        raise ValueError(f"target: expected s3://bucket/prefix, got {target!r}")
    bucket, prefix = url.netloc, url.path.strip("/")
    files = sorted(corpus.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{corpus}: no *.jsonl files to upload")
    s3 = s3_client()
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    written = []
    for f in files:
        key = f"{prefix}/{f.name}" if prefix else f.name
        s3.upload_file(str(f), bucket, key)
        written.append(f"s3://{bucket}/{key}")
    return written


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hack.upload_corpus", description=__doc__.splitlines()[0])
    p.add_argument("target", help="s3://bucket/prefix the *.jsonl files go under")
    p.add_argument("--source", type=Path, default=CORPUS, help="folder of *.jsonl files (the corpus)")
    args = p.parse_args()
    for uri in upload_corpus(args.target, args.source):
        print(f"  uploaded {uri}")


if __name__ == "__main__":
    main()
