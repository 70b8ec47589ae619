"""Fixtures for reconciler integration tests: the generated CRDs applied, kube.py pointed at the
local cluster, a namespace with the S3 credentials Secret, and the operator configuration the
workloads get."""

from __future__ import annotations

from pathlib import Path

import pytest

from capstan_operator.config import OperatorConfig
from capstan_trainer import storage
from tests.support.driver import Driver, use_kubeconfig

S3_SECRET = "capstan-s3"
CORPUS = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "corpus"


@pytest.fixture
def operator_cluster(cluster, capstan_crds):
    """The local cluster with the generated CRDs established, and kube.py pointed at it."""
    use_kubeconfig(cluster.kubeconfig)
    return cluster


@pytest.fixture
def op_cfg(operator_cluster, namespace, s3_server) -> OperatorConfig:
    operator_cluster.create_s3_secret(S3_SECRET, namespace, s3_server.env)
    return OperatorConfig(s3_endpoint=s3_server.endpoint, s3_secret=S3_SECRET, gang_backoff_seconds=2)


@pytest.fixture
def driver(op_cfg, namespace) -> Driver:
    return Driver(namespace, op_cfg)


def upload_corpus(bucket: str) -> str:
    """The bundled demo corpus under `<bucket>/corpus/`; returns the glob the Dataset reads."""
    for f in sorted(CORPUS.glob("*.jsonl")):
        storage.write_bytes(f"{bucket}/corpus/{f.name}", f.read_bytes())
    return f"{bucket}/corpus/*.jsonl"


def upload_conversations(bucket: str) -> str:
    """The bundled demo conversations (manifests/examples/chat/train.jsonl) under `<bucket>/chat/`;
    returns their URI, for a chat Dataset."""
    uri = f"{bucket}/chat/train.jsonl"
    storage.write_bytes(uri, (CORPUS.parent / "chat" / "train.jsonl").read_bytes())
    return uri


def dataset_yaml(
    name: str,
    source: str,
    output: str,
    licence: str = "CC0-1.0",
    workers: int = 1,
    *,
    source_format: str = "jsonl",
    filters: str = "{gopherQuality: {minWords: 50}}",
    tokenizer: str = "{vocabSize: 512}",
) -> str:
    return f"""\
apiVersion: capstan.dev/v1alpha1
kind: Dataset
metadata: {{name: {name}}}
spec:
  sources:
  - {{uri: "{source}", licence: {licence}, format: {source_format}}}
  allowedLicences: [CC0-1.0, CC-BY-4.0, MIT]
  filters: {filters}
  tokenizer: {tokenizer}
  output: {{uri: "{output}", shardTokens: 1000000, validationFraction: 0.05}}
  workers: {workers}
"""


# The web-text filters, meant for documents, would drop short conversations.
NO_TEXT_FILTERS = (
    "{length: {enabled: false}, language: {enabled: false}, gopherRepetition: {enabled: false}, "
    "gopherQuality: {enabled: false}, c4: {enabled: false}, fineweb: {enabled: false}}"
)


def chat_dataset_yaml(name: str, source: str, output: str, tokenizer: str = "{vocabSize: 512}") -> str:
    """A chat Dataset of short conversations (format chat, the web-text filters off)."""
    return dataset_yaml(
        name, source, output, source_format="chat", filters=NO_TEXT_FILTERS, tokenizer=tokenizer
    )
