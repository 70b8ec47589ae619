"""spec.tokenizer.datasetRef on an in-memory API: a Dataset using another's tokenizer waits for it
to be Ready (no ConfigMap, no Job), fails naming the field when it failed or when it names itself,
and once it is Ready prepares with a plain tokenizer.uri beside its manifest, a spec the workers of
older images read (no datasetRef key)."""

from __future__ import annotations

import yaml

from capstan_api.dataset import DatasetSpec
from capstan_operator import children
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build as build_dataset
from capstan_operator.dataset import reconcile as reconcile_dataset
from capstan_operator.dataset import resolve
from tests.unit.operator.fake_kube import FakeKube, fake_kube, write_status
from tests.unit.operator.resources import dataset

__all__ = ["fake_kube"]  # fixture
CFG = OperatorConfig()
BASE_READY = {"status": {"phase": "Ready", "manifestUri": "s3://bucket/base/revisions/2/manifest.json"}}


def chat(**tokenizer) -> dict:
    return dataset("chat", tokenizer={"datasetRef": {"name": "base"}, **tokenizer})


def reconcile(body: dict):
    out = reconcile_dataset.reconcile(body, CFG)
    write_status(body, out.status)
    return out


def conditions(body: dict) -> dict[str, dict]:
    return {c["type"]: c for c in body["status"].get("conditions") or []}


def workers_spec(fake: FakeKube) -> dict:
    """The spec in the revision's ConfigMap, as the workers read it with -f."""
    cm = fake.objects[("ConfigMap", build_dataset.config_map_name("chat"))]
    return yaml.safe_load(cm["data"][children.CONFIG_KEY])["spec"]


def test_waits_for_the_named_dataset_then_prepares_with_its_tokenizer(fake_kube: FakeKube):
    body = chat()
    fake_kube.custom[("datasets", "base")] = {"status": {"phase": "Running"}}
    out = reconcile(body)
    assert fake_kube.calls == [], "nothing is created while the tokenizer's Dataset is not Ready"
    assert body["status"]["phase"] == "Waiting"
    assert body["status"]["message"] == "waiting for Dataset base to be Ready (now Running)"
    waiting = conditions(body)["Waiting"]
    assert (waiting["status"], waiting["reason"]) == ("True", "DependencyNotReady")
    assert out.requeue_after == reconcile_dataset.WAIT_SECONDS

    fake_kube.custom[("datasets", "base")] = BASE_READY
    reconcile(body)
    assert fake_kube.calls == [("apply", "ConfigMap", "chat-prepare"), ("apply", "Job", "chat-prepare-map")]
    assert body["status"]["phase"] == "Running" and "Waiting" not in conditions(body)
    tok = workers_spec(fake_kube)["tokenizer"]
    assert tok["uri"] == "s3://bucket/base/revisions/2/tokenizer.json"
    assert "datasetRef" not in tok, "the workers' spec must not name a field older images reject"
    DatasetSpec.model_validate(workers_spec(fake_kube))
    # Stamped with the user's spec: the next pass sees no change and starts nothing again.
    cm = fake_kube.objects[("ConfigMap", "chat-prepare")]
    assert children.built_from(cm) == build_dataset.spec_hash(body)
    reconcile(body)
    assert len(fake_kube.calls) == 2


def test_a_missing_dataset_is_waited_for(fake_kube: FakeKube):
    body = chat()
    reconcile(body)
    assert body["status"]["phase"] == "Waiting"
    assert body["status"]["message"] == "waiting for Dataset base (not found)"


def test_a_failed_dataset_fails_this_one_naming_the_field(fake_kube: FakeKube):
    body = chat()
    fake_kube.custom[("datasets", "base")] = {"status": {"phase": "Failed", "message": "stage map: exit 1"}}
    reconcile(body)
    assert fake_kube.calls == []
    assert body["status"]["phase"] == "Failed"
    failed = conditions(body)["Failed"]
    assert failed["reason"] == "DependencyFailed"
    assert failed["message"] == "spec.tokenizer.datasetRef: Dataset base failed: stage map: exit 1"
    assert conditions(body)["Ready"]["status"] == "False"


def test_a_dataset_naming_itself_is_refused_without_a_job(fake_kube: FakeKube):
    body = dataset("base", tokenizer={"datasetRef": {"name": "base"}})
    reconcile(body)
    assert fake_kube.calls == []
    assert body["status"]["phase"] == "Failed"
    assert conditions(body)["Failed"]["reason"] == "InvalidSpec"
    assert "spec.tokenizer.datasetRef: a Dataset cannot use its own tokenizer" in body["status"]["message"]


def test_resolution_keeps_every_other_tokenizer_setting():
    spec = DatasetSpec.model_validate(chat(chatTemplate="{{ messages }}")["spec"])
    res = resolve.tokenizer("chat", spec, BASE_READY)
    assert res.spec.tokenizer.chat_template == "{{ messages }}"
    assert res.spec.tokenizer.dataset_ref is None and spec.tokenizer.dataset_ref is not None
    plain = DatasetSpec.model_validate(dataset("web")["spec"])
    assert resolve.tokenizer("web", plain, None).spec is plain
