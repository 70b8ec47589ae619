"""Resource dicts as the API server returns them, for builder and reconciler tests."""

from __future__ import annotations

from typing import Any


def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "generation": 1,
        "resourceVersion": "7",
        "managedFields": [{"manager": "kubectl"}],
    }


def dataset(
    name: str,
    namespace: str = "team-a",
    licence: str = "CC0-1.0",
    allowed: list[str] | None = None,
    **spec_overrides,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "sources": [{"uri": "s3://bucket/raw/*.jsonl", "licence": licence}],
        "output": {"uri": "s3://bucket/out"},
    }
    if allowed is not None:
        spec["allowedLicences"] = allowed
    spec |= spec_overrides
    return {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": _meta(name, namespace),
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def trainingrun(name: str, namespace: str = "team-a", **spec_overrides) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "datasets": [{"uri": "s3://bucket/data"}],
        "model": {"preset": "test"},
        "optimizer": {
            "globalBatchTokens": 512,
            "microBatch": 2,
            "seqLen": 32,
            "warmupSteps": 2,
            "totalSteps": 20,
        },
        "resources": {"minNodes": 2, "maxNodes": 2, "nprocPerNode": 2},
        "checkpoint": {"uri": "s3://bucket/ckpt", "intervalSteps": 5},
    }
    # Dict overrides merge one level deep, so a test names only the fields it is about.
    spec |= {k: ({**spec.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in spec_overrides.items()}
    return {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }


def evaluation(name: str, namespace: str = "team-a", **spec_overrides) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"trainingRunRef": {"name": "tiny"}},
        "datasetRef": {"name": "stories"},
        "gates": [{"metric": "perplexity.token_perplexity", "max": 50}],
        "outputUri": "s3://bucket/eval",
    }
    spec |= spec_overrides
    return {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Evaluation",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }


def deployment(name: str, namespace: str = "team-a", **spec_overrides) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"uri": "s3://bucket/export"}, "replicas": 2}
    spec |= spec_overrides
    return {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace),
        "spec": spec,
    }
