"""The operator reads user-written URIs with its own credentials: only allowed schemes and
prefixes are read, a missing file is None, and a file it cannot read or parse is a condition on
the resource (not a retry loop); a refused URI fails the resource naming the field."""

from __future__ import annotations

import pytest

from capstan_operator import kube, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.controller import STORAGE_READABLE, Controller
from capstan_operator.status import Outcome

FILES = OperatorConfig(allowed_uri_schemes=("file",))


def test_only_allowed_schemes_and_prefixes_are_read():
    cfg = OperatorConfig(allowed_uri_prefixes=("s3://team/runs",))
    assert objectstore.check_uri("s3://team/runs/a/progress.json", cfg, "spec.checkpoint.uri") == ""
    assert "outside the allowed prefixes (s3://team/runs)" in objectstore.check_uri(
        "s3://team/runsx/progress.json", cfg, "spec.checkpoint.uri"
    )
    why = objectstore.check_uri("http://169.254.169.254/latest/x.json", OperatorConfig(), "spec.outputUri")
    assert why.startswith("spec.outputUri http://169.254.169.254/latest/x.json: scheme http is not allowed")
    assert "scheme file is not allowed" in objectstore.check_uri("file:///etc/x", OperatorConfig(), "f")
    with pytest.raises(objectstore.Refused, match="spec.outputUri .*scheme http"):
        objectstore.read_json("http://127.0.0.1:1/status.json", OperatorConfig(), "spec.outputUri")


def test_missing_is_none_and_bad_json_is_unreadable(tmp_path):
    assert objectstore.read_json(f"file://{tmp_path}/none.json", FILES) is None
    (tmp_path / "bad.json").write_text("{half")
    with pytest.raises(objectstore.Unreadable, match="spec.output.uri file://.*bad.json: JSONDecodeError"):
        objectstore.read_json(f"file://{tmp_path}/bad.json", FILES, "spec.output.uri")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(objectstore.Unreadable, match="not a JSON object"):
        objectstore.read_json(f"file://{tmp_path}/list.json", FILES)


def test_the_controller_turns_storage_problems_into_status(monkeypatch):
    answers = iter(
        [objectstore.Unreadable("spec.outputUri s3://b/status.json: PermissionError: 403"), Outcome()]
    )
    writes: list[dict] = []
    body = {"kind": "Evaluation", "metadata": {"name": "e", "namespace": "ns", "generation": 1}, "status": {}}

    def reconcile(b, cfg):
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    def patch_status(plural, ns, name, status):
        writes.append(status)
        body["status"] = {**body["status"], **status}
        return dict(body, metadata={**body["metadata"], "resourceVersion": str(len(writes))})

    monkeypatch.setattr(kube, "patch_custom_status", patch_status)
    monkeypatch.setattr(kube, "post_event", lambda *a, **k: None)
    c = Controller({"Evaluation": reconcile}, OperatorConfig())
    key = ("Evaluation", "ns", "e")
    c.observe(key, body)
    c.process(key)
    [cond] = [x for x in writes[-1]["conditions"] if x["type"] == STORAGE_READABLE]
    assert (cond["status"], cond["reason"]) == ("False", "Unreadable") and "403" in cond["message"]
    assert len(c.queue) == 1 and not c._failures, "looked at again slowly, not in a back-off loop"
    c.process(key)  # readable again: the condition goes
    assert not [x for x in writes[-1]["conditions"] if x["type"] == STORAGE_READABLE]

    refused = objectstore.Refused("spec.outputUri http://x/status.json: scheme http is not allowed")
    c._storage_problem(key, body, refused)
    assert writes[-1]["phase"] == "Failed"
    [failed] = [x for x in writes[-1]["conditions"] if x["type"] == "Failed"]
    assert failed["reason"] == "URINotAllowed" and failed["message"].startswith("spec.outputUri http://x")


def test_a_commit_marker_is_there_or_not_and_refused_outside_the_allowed_schemes(tmp_path):
    (tmp_path / "COMMITTED").write_text("4\n")
    assert objectstore.marker_exists(f"file://{tmp_path}/COMMITTED", FILES) is True
    assert objectstore.marker_exists(f"file://{tmp_path}/step-00000004/COMMITTED", FILES) is False
    with pytest.raises(objectstore.Refused, match="spec.model.step file://.*scheme file is not allowed"):
        objectstore.marker_exists(f"file://{tmp_path}/COMMITTED", OperatorConfig(), "spec.model.step")
