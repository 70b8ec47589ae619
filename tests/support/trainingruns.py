"""Tiny TrainingRuns for integration tests: the resource (the `test` preset, 32-token sequences,
CPU), a synthetic token dataset in S3, and what the trainer and the status say about a run."""

from __future__ import annotations

import json

import pytest
import yaml

from capstan_trainer import synthetic

TINY_DATASET = {"vocab_size": 256, "train_tokens": 40_000, "validation_tokens": 2_000, "shard_tokens": 16_384}
"""TINY_DATASET: the sizes synthetic.write_dataset gets for a tiny run's data."""


def run_yaml(
    name: str, ckpt: str, data: dict, nodes: int = 1, steps: int = 30, every: int = 5, **spec
) -> str:
    body = {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "datasets": [data],
            "model": {"preset": "test"},
            "optimizer": {
                "globalBatchTokens": 128 * nodes,
                "microBatch": 2,
                "seqLen": 32,
                "lr": 3e-3,
                "minLr": 3e-4,
                "warmupSteps": 2,
                "totalSteps": steps,
                "seed": 7,
            },
            "resources": {"minNodes": nodes, "maxNodes": nodes, "nprocPerNode": 1},
            "checkpoint": {"uri": ckpt, "intervalSteps": every, "keepLast": 2},
            "metrics": {"intervalSteps": 1},
            "failurePolicy": {"maxRestarts": 2},
            **spec,
        },
    }
    return yaml.safe_dump(body)


@pytest.fixture
def data(s3_bucket) -> str:
    """A synthetic token dataset (vocabulary 256, 40k training tokens) in the test's bucket."""
    uri = f"{s3_bucket}/data/tiny"
    synthetic.write_dataset(uri, **TINY_DATASET)
    return uri


def trainer_start_record(cluster, namespace: str, run: str) -> dict:
    """The trainer's `start` record (step, resumedFrom) from the log of the run's pod 0."""
    pods = cluster.list(
        "pods", namespace, f"capstan.dev/owner={run},batch.kubernetes.io/job-completion-index=0"
    )
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    log = cluster.kubectl("logs", pods[0]["metadata"]["name"], "-n", namespace, "-c", "trainer").stdout
    starts = [json.loads(line) for line in log.splitlines() if line.startswith('{"event": "start"')]
    assert len(starts) == 1, log[-2000:]
    return starts[0]


def status(driver, name: str) -> dict:
    """The run's status as `driver` (a Driver) reads it; empty when none."""
    return (driver.get("trainingruns", name) or {}).get("status") or {}
