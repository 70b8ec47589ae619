"""Reverse lineage and DataRemoved, from a Ready Dataset's reconcile on an in-memory API with the
revisions' files on local disk: runs trained on a revision that held removed documents are
marked (with the revision and the count), and so are the Deployments serving them; runs on
the current revision are not."""

from __future__ import annotations

import json

import pytest

from capstan_operator import kube
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import lineage
from capstan_operator.dataset import reconcile as reconcile_dataset
from tests.unit.operator.fake_kube import fake_kube, write_status
from tests.unit.operator.resources import dataset

__all__ = ["fake_kube"]  # fixture
CFG = OperatorConfig(allowed_uri_schemes=("file",))


def _run(name: str, revision: int, root: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": "team-a", "generation": 1},
        "spec": {"datasets": [{"datasetRef": "web"}, {"uri": "s3://other/data"}]},
        "status": {
            "phase": "Succeeded",
            "trainedOn": [f"{root}/revisions/{revision}/manifest.json", "s3://other/data"],
        },
    }


def _obj(name: str, model: dict) -> dict:
    return {"metadata": {"name": name, "namespace": "team-a", "generation": 1}, "spec": {"model": model}}


@pytest.fixture
def world(fake_kube, tmp_path, monkeypatch):
    lineage._held.clear()
    root = f"file://{tmp_path}/out"
    for rev, ids in ((1, range(10)), (2, [i for i in range(10) if i not in (3, 7)])):
        folder = tmp_path / "out" / "revisions" / str(rev)
        folder.mkdir(parents=True)
        lines = [{"split": "train", "id": i, "tokens": 5, "url": f"https://x/{i}"} for i in ids]
        (folder / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    removed = [{"id": 3, "url": "https://x/3", "rule": "spec.exclusions.documentIds[0]"}, {"id": 7, "url": "https://x/7", "rule": "spec.exclusions.urls[0]"}, {"id": 99, "url": "", "rule": "spec.exclusions.urls[0]"}]  # fmt: skip
    (tmp_path / "out" / "revisions" / "2" / "excluded.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in removed)
    )
    for run in (_run("old", 1, root), _run("new", 2, root)):
        fake_kube.custom[("trainingruns", run["metadata"]["name"])] = run
    fake_kube.custom[("evaluations", "old-eval")] = _obj("old-eval", {"trainingRunRef": {"name": "old"}})
    deps = {
        "chat": _obj("chat", {"trainingRunRef": {"name": "old"}}),
        "gated": _obj("gated", {"evaluationRef": {"name": "old-eval"}}),
        "fresh": _obj("fresh", {"trainingRunRef": {"name": "new"}}),
    }
    for name, d in deps.items():
        fake_kube.custom[("deployments", name)] = d
    patches: list[tuple[str, str, dict]] = []
    monkeypatch.setattr(kube, "patch_custom_status", lambda p, ns, n, st: patches.append((p, n, st)) or {})
    body = dataset("web", output={"uri": root})
    body["metadata"]["generation"] = 1
    body["status"] = {
        "phase": "Ready",
        "observedGeneration": 1,
        "revision": 2,
        "manifestUri": f"{root}/revisions/2/manifest.json",
    }
    return body, patches, root


def test_runs_on_a_revision_that_held_removed_documents_are_marked_with_revision_and_count(world):
    body, patches, _ = world
    out = reconcile_dataset.reconcile(body, CFG)
    marked = {(p, n): st for p, n, st in patches}
    assert set(marked) == {("trainingruns", "old"), ("deployments", "chat"), ("deployments", "gated")}
    run = marked[("trainingruns", "old")]
    (cond,) = run["conditions"]
    assert cond["type"] == "DataRemoved" and cond["status"] == "True" and cond["reason"] == "DataRemoved"
    assert "revision 1 of Dataset web, which held 2 document(s) removed in revision 2" in cond["message"]
    assert "init.replayWithout: old" in cond["message"]
    assert run["dataRemoved"] == "web@1: 2" and marked[("deployments", "gated")]["dataRemoved"] == "web@1: 2"
    assert out.requeue_after == lineage.LINEAGE_POLL, "a Ready Dataset looks again for runs made later"


def test_status_lists_what_each_revision_was_used_by(world):
    body, _, root = world
    out = reconcile_dataset.reconcile(body, CFG)
    write_status(body, out.status)
    assert body["status"]["usedBy"] == [
        {"revision": 1, "manifestUri": f"{root}/revisions/1/manifest.json", "trainingRuns": ["old"],
         "evaluations": ["old-eval"], "deployments": ["chat", "gated"]},
        {"revision": 2, "manifestUri": f"{root}/revisions/2/manifest.json", "trainingRuns": ["new"],
         "evaluations": [], "deployments": ["fresh"]},
    ]  # fmt: skip


def test_marks_are_written_once(world, fake_kube):
    body, patches, _ = world
    reconcile_dataset.reconcile(body, CFG)
    for p, n, st in list(patches):  # what the API server would now hold
        fake_kube.custom[(p, n)].setdefault("status", {}).update(st)
    patches.clear()
    reconcile_dataset.reconcile(body, CFG)
    assert patches == []


def test_revision_of_only_reads_this_outputs_revisions():
    assert lineage.revision_of("s3://b/out/revisions/12/manifest.json", "s3://b/out") == 12
    assert lineage.revision_of("s3://b/outer/revisions/1/manifest.json", "s3://b/out") is None
    assert lineage.revision_of("s3://b/out/manifest.json", "s3://b/out") is None
