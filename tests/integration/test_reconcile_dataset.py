"""Dataset reconciled on the real API server, its stages run as Indexed Jobs whose pods the node
agent runs from the trainer image."""

from __future__ import annotations

import pytest

from capstan_api.dataset import DatasetSpec
from capstan_api.preparation import STAGES, WORK_DIR, plan
from capstan_operator.dataset import reconcile
from capstan_trainer import shards, storage
from tests.support.operator_env import (
    CORPUS,
    chat_dataset_yaml,
    dataset_yaml,
    driver,
    op_cfg,
    operator_cluster,
    upload_conversations,
    upload_corpus,
)

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


@pytest.mark.timeout(900)
def test_dataset_prepares_the_bundled_corpus_and_goes_ready_then_an_edit_is_a_new_revision(
    operator_cluster, namespace, driver, s3_bucket
):
    source, out = upload_corpus(s3_bucket), f"{s3_bucket}/out/stories"
    operator_cluster.apply(dataset_yaml("stories", source, out), namespace)
    driver.add("datasets", "stories", reconcile.reconcile)
    driver.run_until(
        "Dataset stories to be Ready",
        lambda: driver.phase("datasets", "stories") in ("Ready", "Failed"),
        timeout=360,
    )
    status = driver.get("datasets", "stories")["status"]
    assert status["phase"] == "Ready", status
    assert status["revision"] == 1
    assert status["manifestUri"] == f"{out}/revisions/1/manifest.json"
    assert [(s["name"], s["workers"], s["workersDone"], s["phase"]) for s in status["stages"]] == [
        (name, 1, 1, "Complete") for name in STAGES
    ]
    records = sum(len(f.read_text().splitlines()) for f in CORPUS.glob("*.jsonl"))
    assert status["stages"][0]["documentsIn"] == records == 640, "map reads every record"
    steps = {s["name"]: s for s in status["steps"]}
    assert steps["read"]["documentsIn"] == records
    assert steps["licence"]["documentsOut"] < steps["licence"]["documentsIn"]  # CC-BY-NC documents
    assert status["documents"] > 200 and status["tokens"] > 10_000 and status["shards"] >= 2
    assert len(status["fingerprint"]) == 64
    ready = driver.condition("datasets", "stories", "Ready")
    assert (ready["status"], ready["observedGeneration"]) == ("True", 1)
    reasons = [e[2] for e in driver.events]
    assert reasons[:2] == ["RevisionStarted", "Created"] and reasons.count("Created") == len(STAGES)
    assert "Prepared" in reasons
    # The children carry owner references to the Dataset (deleting it deletes them).
    for name in ("stories-prepare-map", "stories-prepare-finish"):
        job = operator_cluster.get("job", name, namespace)
        assert job["metadata"]["ownerReferences"][0]["name"] == "stories", name
    # Level-based: another pass changes nothing and creates nothing.
    assert reconcile.reconcile(driver.get("datasets", "stories"), driver.cfg).status == {}

    # ---- an edit of a filter: prepared again, as revision 2; revision 1 stays as it was
    first = status
    first_manifest = storage.read_bytes(f"{out}/revisions/1/manifest.json")
    first_map = operator_cluster.get("job", "stories-prepare-map", namespace)["metadata"]["uid"]
    patch = '{"spec": {"filters": {"gopherQuality": {"minWords": 150}}}}'
    operator_cluster.kubectl("patch", "dataset", "stories", "-n", namespace, "--type=merge", "-p", patch)

    def second_done():
        s = driver.get("datasets", "stories")["status"]
        return s.get("observedGeneration") == 2 and s.get("phase") in ("Ready", "Failed") and s

    status = driver.run_until("Dataset stories to finish revision 2", second_done, timeout=420)
    assert (status["phase"], status["revision"]) == ("Ready", 2), status
    assert status["manifestUri"] == f"{out}/revisions/2/manifest.json"
    # The work was redone: new stage Jobs ran, and the stricter filter kept fewer documents.
    assert operator_cluster.get("job", "stories-prepare-map", namespace)["metadata"]["uid"] != first_map
    quality = {s["name"]: s for s in status["steps"]}["filters"]
    assert quality["documentsOut"] < {s["name"]: s for s in first["steps"]}["filters"]["documentsOut"]
    assert 0 < status["documents"] < first["documents"] and status["fingerprint"] != first["fingerprint"]
    assert storage.read_bytes(f"{out}/revisions/1/manifest.json") == first_manifest
    assert "SpecChanged" in [e[2] for e in driver.events]


@pytest.mark.timeout(900)
def test_three_workers_run_staged_indexed_jobs_and_match_one_worker(
    operator_cluster, namespace, driver, s3_bucket
):
    source = upload_corpus(s3_bucket)
    outputs = {"three": f"{s3_bucket}/out/three", "one": f"{s3_bucket}/out/one"}
    for name, workers in (("three", 3), ("one", 1)):
        operator_cluster.apply(dataset_yaml(name, source, outputs[name], workers=workers), namespace)
        driver.add("datasets", name, reconcile.reconcile)
    driver.run_until(
        "Datasets three and one to finish",
        lambda: all(driver.phase("datasets", n) in ("Ready", "Failed") for n in outputs),
        timeout=720,
    )
    for name in outputs:
        body = driver.get("datasets", name)
        status = body["status"]
        assert status["phase"] == "Ready", (name, status)
        expected = plan(DatasetSpec.model_validate(body["spec"]))
        assert [(s["name"], s["workers"], s["workersDone"], s["phase"]) for s in status["stages"]] == [
            (s.name, s.workers, s.workers, "Complete") for s in expected
        ], name
        for stage in expected:
            job = operator_cluster.get("job", f"{name}-prepare-{stage.name}", namespace)
            assert job is not None, f"Job {name}-prepare-{stage.name}"
            spec = job["spec"]
            assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == (
                "Indexed",
                stage.workers,
                stage.workers,
            ), job["metadata"]["name"]
            assert spec["backoffLimitPerIndex"] == 2 and spec["maxFailedIndexes"] == 0
            assert job["status"]["succeeded"] == stage.workers
    three = {
        s.name: s.workers for s in plan(DatasetSpec.model_validate(driver.get("datasets", "three")["spec"]))
    }
    assert three["map"] == 3 and three["tokenize"] == 3 and three["shard"] == 3
    pods = operator_cluster.list("pods", namespace, "job-name=three-prepare-map")
    indexes = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods}
    assert indexes == {"0", "1", "2"}
    # The output does not depend on the worker count: shards and manifest byte for byte.
    a, b = (_output_files(f"{uri}/revisions/1") for uri in outputs.values())
    shards = sorted(p for p in a if p.endswith(".bin"))
    assert shards and shards == sorted(p for p in b if p.endswith(".bin"))
    for rel in [*shards, "manifest.json"]:
        assert a[rel] == b[rel], f"{rel} differs between 3 workers and 1"
    fingerprints = {driver.get("datasets", n)["status"]["fingerprint"] for n in outputs}
    assert len(fingerprints) == 1


def test_a_map_worker_deleted_mid_stage_is_retried_to_the_same_output(
    operator_cluster, namespace, driver, s3_bucket, tmp_path
):
    import contextlib
    import io

    from bench.prepare_common import write_corpus
    from capstan_api.preparation import marker_uri, progress_uri
    from capstan_trainer.prepare.prepare import main

    write_corpus(tmp_path / "big", megabytes=8)
    for f in sorted((tmp_path / "big").iterdir()):
        storage.write_bytes(f"{s3_bucket}/big/{f.name}", f.read_bytes())
    source, root, ref = f"{s3_bucket}/big/*.jsonl", f"{s3_bucket}/out/killed", f"{s3_bucket}/out/killed-ref"
    body = dataset_yaml("killed", source, root, licence="CC-BY-4.0", workers=2)
    out = f"{root}/revisions/1"  # where the operator's first preparation writes
    (tmp_path / "ref.yaml").write_text(dataset_yaml("killed", source, ref, licence="CC-BY-4.0"))
    with contextlib.redirect_stdout(io.StringIO()):  # the reference: one worker, in this process
        assert main(["-f", str(tmp_path / "ref.yaml")]) == 0
    operator_cluster.apply(body, namespace)
    driver.add("datasets", "killed", reconcile.reconcile)
    driver.run_until(
        "map worker 0 of Dataset killed to report progress",
        lambda: storage.exists(progress_uri(out, "map", 0)),
        timeout=240,
    )
    assert not storage.exists(marker_uri(out, "map", 0)), "worker 0 committed before it could be deleted"
    [pod] = operator_cluster.list(
        "pods", namespace, "job-name=killed-prepare-map,batch.kubernetes.io/job-completion-index=0"
    )
    operator_cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false")
    driver.run_until(
        "Dataset killed to finish",
        lambda: driver.phase("datasets", "killed") in ("Ready", "Failed"),
        timeout=600,
    )
    status = driver.get("datasets", "killed")["status"]
    assert status["phase"] == "Ready", status
    job = operator_cluster.get("job", "killed-prepare-map", namespace)
    assert job["status"].get("failed", 0) >= 1 and job["status"]["succeeded"] == 2, job["status"]
    a, b = _output_files(ref), _output_files(out)
    assert sorted(a) == sorted(b)
    for rel in a:
        assert a[rel] == b[rel], f"{rel} differs from the uninterrupted one-worker output"


def _output_files(uri: str) -> dict[str, bytes]:
    """Files under `uri` by relative path, without the workers' _work/ folder."""
    fs, root = storage.filesystem(uri)
    out = {}
    for path in fs.find(root):
        rel = path[len(root) :].lstrip("/")
        if not rel.startswith(f"{WORK_DIR}/"):
            out[rel] = fs.cat_file(path)
    return out


def test_licence_outside_the_policy_fails_without_a_pod(operator_cluster, namespace, driver, s3_bucket):
    operator_cluster.apply(
        dataset_yaml("nc", f"{s3_bucket}/corpus/*.jsonl", f"{s3_bucket}/out/nc", licence="CC-BY-NC-4.0"),
        namespace,
    )
    driver.add("datasets", "nc", reconcile.reconcile)
    driver.run_until("Dataset nc to fail", lambda: driver.phase("datasets", "nc") == "Failed", timeout=30)
    cond = driver.condition("datasets", "nc", "LicenseNotAllowed")
    assert cond["status"] == "True"
    assert "spec.sources[0].licence: CC-BY-NC-4.0 is not allowed" in cond["message"]
    assert operator_cluster.list("pods", namespace) == []
    assert operator_cluster.list("jobs", namespace) == []


@pytest.mark.timeout(900)
def test_a_chat_dataset_applied_with_its_base_waits_for_it_and_shares_its_tokenizer(
    operator_cluster, namespace, driver, s3_bucket
):
    """The demo's order-free `kubectl apply`: `chat` names `base` in tokenizer.datasetRef, both
    applied at once; `chat` waits until `base` is Ready, then tokenizes with base's tokenizer.json."""
    chat_source = upload_conversations(s3_bucket)
    base = dataset_yaml("base", upload_corpus(s3_bucket), f"{s3_bucket}/out/base")
    chat = chat_dataset_yaml("chat", chat_source, f"{s3_bucket}/out/chat", "{datasetRef: {name: base}}")
    operator_cluster.apply(f"{chat}---\n{base}", namespace)
    driver.add("datasets", "chat", reconcile.reconcile).add("datasets", "base", reconcile.reconcile)
    chat_phases = []

    def both_done() -> bool:
        chat_phases.append(driver.phase("datasets", "chat"))
        return all(driver.phase("datasets", n) in ("Ready", "Failed") for n in ("base", "chat"))

    driver.run_until("Datasets base and chat to finish", both_done, timeout=720)
    base_status, chat_status = (driver.get("datasets", n)["status"] for n in ("base", "chat"))
    assert base_status["phase"] == "Ready", base_status
    assert chat_status["phase"] == "Ready", chat_status
    assert "Waiting" in chat_phases, chat_phases
    waits = [e[3] for e in driver.events if e[0] == "chat" and e[2] == "Waiting"]
    assert waits and waits[0].startswith("waiting for Dataset base to be Ready (now "), waits
    assert driver.condition("datasets", "chat", "Waiting") is None, "Waiting is cleared once it runs"
    base_tok = shards.read_manifest(base_status["manifestUri"]).tokenizer
    chat_tok = shards.read_manifest(chat_status["manifestUri"]).tokenizer
    assert chat_tok["sha256"] == base_tok["sha256"]
    assert chat_status["tokens"] > 0
