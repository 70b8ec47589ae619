"""Data-subject removal on the real API server (needs images built with this change: the prepare
and train workloads read spec.exclusions and init.replayFrom). A Dataset's exclusions edit
prepares a new revision without the documents, counted per rule; the TrainingRun trained on the
old revision gets DataRemoved (shown by `kubectl get trainingruns`), so does a Deployment serving
it, the Dataset lists what each revision was used by, and a replay run reports the steps saved."""

from __future__ import annotations

import fnmatch
import json

import pytest

from capstan_operator.dataset import reconcile as reconcile_dataset
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from tests.support.operator_env import CORPUS, dataset_yaml, driver, op_cfg, operator_cluster, upload_corpus
from tests.support.trainingruns import run_yaml, status

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures
GLOB = "https://stories.example/1?"
DEPLOYMENT = """\
apiVersion: capstan.dev/v1alpha1
kind: Deployment
metadata: {name: chat}
spec:
  model: {trainingRunRef: {name: before}}
"""


def _matching_records() -> int:
    n = 0
    for f in sorted(CORPUS.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            n += isinstance(doc, dict) and fnmatch.fnmatchcase(str(doc.get("url") or ""), GLOB)
    return n


@pytest.mark.timeout(1500)
def test_exclusions_make_a_revision_and_mark_what_trained_on_the_old_one(
    operator_cluster, namespace, driver, s3_bucket
):
    source, out = upload_corpus(s3_bucket), f"{s3_bucket}/out/stories"
    operator_cluster.apply(dataset_yaml("stories", source, out), namespace)
    ckpt = {"uri": f"{s3_bucket}/ckpt/before", "intervalSteps": 1, "keepLast": 100}
    operator_cluster.apply(
        run_yaml("before", "", {"datasetRef": "stories"}, steps=12, checkpoint=ckpt), namespace
    )
    operator_cluster.apply(DEPLOYMENT, namespace)
    driver.add("datasets", "stories", reconcile_dataset.reconcile)
    driver.add("trainingruns", "before", reconcile_trainingrun.reconcile)
    driver.run_to_end("trainingruns", "before", timeout=480)
    assert status(driver, "before")["phase"] == "Succeeded", status(driver, "before")
    assert status(driver, "before")["trainedOn"] == [f"{out}/revisions/1/manifest.json"]

    # ---- the removal request: a new revision without the documents, counted per rule
    # The old revision's tokenizer, so a replay's tokens mean what its checkpoint learnt.
    tokenizer = {"uri": f"{out}/revisions/1/tokenizer.json"}
    patch = json.dumps({"spec": {"exclusions": {"urls": [GLOB]}, "tokenizer": tokenizer}})
    operator_cluster.kubectl("patch", "dataset", "stories", "-n", namespace, "--type=merge", "-p", patch)

    def revision_2():
        s = driver.get("datasets", "stories")["status"]
        return s.get("observedGeneration") == 2 and s.get("phase") in ("Ready", "Failed") and s

    ds = driver.run_until("Dataset stories to finish revision 2", revision_2, timeout=420)
    assert (ds["phase"], ds["revision"]) == ("Ready", 2), ds
    expected = _matching_records()
    assert expected > 0
    assert ds["removed"] == expected
    assert ds["removedByRule"] == [{"rule": "spec.exclusions.urls[0]", "documents": expected}]
    steps = {s["name"]: s for s in ds["steps"]}
    assert steps["exclusions"]["documentsIn"] - steps["exclusions"]["documentsOut"] == expected

    # ---- lineage: the run on revision 1 and the Deployment serving it are marked
    def marked():
        return driver.condition("trainingruns", "before", "DataRemoved")

    cond = driver.run_until("TrainingRun before to get DataRemoved", marked, timeout=120)
    assert cond["status"] == "True" and "revision 1 of Dataset stories" in cond["message"]
    held = int(status(driver, "before")["dataRemoved"].split(": ")[1])
    assert 0 < held <= expected and f"held {held} document(s) removed in revision 2" in cond["message"]
    table = operator_cluster.kubectl("get", "trainingruns", "-n", namespace).stdout
    assert "DATA REMOVED" in table and f"stories@1: {held}" in table, table
    assert driver.condition("deployments", "chat", "DataRemoved")["status"] == "True"
    used = driver.get("datasets", "stories")["status"]["usedBy"]
    assert used == [
        {"revision": 1, "manifestUri": f"{out}/revisions/1/manifest.json", "trainingRuns": ["before"],
         "evaluations": [], "deployments": ["chat"]},
    ]  # fmt: skip

    # ---- the replay: from the newest checkpoint before the first exposure, on revision 2
    replay_ckpt = {"uri": f"{s3_bucket}/ckpt/after", "intervalSteps": 1, "keepLast": 100}
    body = run_yaml(
        "after",
        "",
        {"datasetRef": "stories"},
        steps=12,
        checkpoint=replay_ckpt,
        init={"replayWithout": "before"},
    )
    operator_cluster.apply(body, namespace)
    driver.add("trainingruns", "after", reconcile_trainingrun.reconcile)
    driver.run_to_end("trainingruns", "after", timeout=480)
    after = status(driver, "after")
    assert after["phase"] == "Succeeded", after
    replay = after["replay"]
    # The replay counts those of the training split (held counts the validation split's too).
    assert replay["removedDocuments"] <= held and replay["stepsSaved"] == replay["step"]
    if replay["firstExposure"] is not None:
        assert replay["step"] <= replay["firstExposure"]
    assert after["trainedOn"] == [f"{out}/revisions/2/manifest.json"]
