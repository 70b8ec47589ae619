"""A Dataset with counterfactual augmentation and the toxicity filter on the real API server: its
stage pods (from the trainer image) add swapped copies and drop toxic documents, and status and the
datasheet say how many. Needs images built with this code (trainer/prepare/counterfactual.py,
toxicity.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from capstan_api.dataset import DatasetSpec
from capstan_operator.dataset import reconcile
from capstan_trainer import storage
from capstan_trainer.prepare.filters import apply_filters
from capstan_trainer.prepare.normalize import normalize
from tests.support.operator_env import (
    CORPUS,
    dataset_yaml,
    driver,
    op_cfg,
    operator_cluster,
    upload_corpus,
)

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures
THREAT = "\nI know where you live."


@pytest.mark.timeout(900)
def test_augmented_dataset_counts_copies_and_toxic_documents_in_status(
    operator_cluster, namespace, driver, s3_bucket
):
    source = upload_corpus(s3_bucket)
    out = f"{s3_bucket}/out/cda"
    res = yaml.safe_load(dataset_yaml("cda", source, out))
    res["spec"]["augmentation"] = {"counterfactual": {"fraction": 0.5}}
    # three allowed stories that pass every quality filter with a threat appended: dropped as threat
    spec = DatasetSpec.model_validate(res["spec"])
    stories = [json.loads(x) for f in sorted(CORPUS.glob("*.jsonl")) for x in f.read_text().splitlines()]
    toxic = [
        {**s, "text": s["text"] + THREAT}
        for s in stories
        if "licence" not in s
        and apply_filters(normalize(s["text"] + THREAT, spec.cleaning), spec.filters)[1] is None
    ][:3]
    storage.write_bytes(
        f"{s3_bucket}/corpus/zz-toxic.jsonl", "".join(json.dumps(t) + "\n" for t in toxic).encode()
    )
    operator_cluster.apply(yaml.safe_dump(res), namespace)
    driver.add("datasets", "cda", reconcile.reconcile)
    driver.run_until(
        "Dataset cda to be Ready or Failed",
        lambda: driver.phase("datasets", "cda") in ("Ready", "Failed"),
        timeout=420,
    )
    status = driver.get("datasets", "cda")["status"]
    assert status["phase"] == "Ready", status
    steps = {s["name"]: (s["documentsIn"], s["documentsOut"]) for s in status["steps"]}
    aug = status["augmentation"]
    assert 0 < aug["copies"] <= aug["drawn"] and aug["swaps"] >= aug["copies"]
    kept = steps["nearDedup"][1]
    assert steps["augment"] == (kept, kept + aug["copies"])
    assert status["documents"] == kept + aug["copies"]
    assert status["toxicity"] == {"removed": 3, "byCategory": {"threat": 3}}
    assert steps["toxicity"][0] - steps["toxicity"][1] == 3
    manifest = f"{out}/revisions/1"
    sheet = storage.read_bytes(f"{manifest}/datasheet.md").decode()
    assert "## Toxicity and bias mitigation" in sheet and "| threat | 0 | 3 |" in sheet
    rows = [json.loads(x) for x in storage.read_bytes(f"{manifest}/documents.jsonl").decode().splitlines()]
    assert sum(1 for r in rows if r.get("counterfactual")) == aug["copies"]
