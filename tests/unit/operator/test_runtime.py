"""The operator's settings, handlers' status content and metrics, without a cluster."""

from __future__ import annotations

import kopf
import pytest
from prometheus_client import generate_latest

from capstan_operator import handlers, metrics
from capstan_operator.api import KINDS
from capstan_operator.config import OperatorConfig
from capstan_operator.main import build_settings, peering_priority


def test_standalone_by_default_with_annotation_storage():
    s = build_settings(OperatorConfig(), "pod-a")
    assert s.peering.standalone and not s.peering.mandatory
    assert isinstance(s.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert s.posting.reporting_component == "capstan-operator"
    assert s.posting.reporting_instance == "pod-a"


def test_leader_election_peers_with_distinct_priorities():
    cfg = OperatorConfig(leader_election=True, namespaces=("a", "b"))
    s = build_settings(cfg, "pod-a")
    assert not s.peering.standalone and s.peering.mandatory
    assert s.peering.name == "capstan" and not s.peering.clusterwide
    assert s.peering.priority == peering_priority("pod-a") > 0
    assert peering_priority("pod-a") != peering_priority("pod-b")


@pytest.mark.parametrize("kind", KINDS)
def test_accepted_status_says_what_it_waits_for_and_is_written_once(kind: str):
    first = handlers.accepted_status(kind, {}, 4)
    assert first["phase"] == "Pending" and first["observedGeneration"] == 4
    cond = first["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Waiting", "True", "Accepted")
    assert f"the {kind} reconciler" in cond["message"]
    assert handlers.accepted_status(kind, first, 4) == {}


def test_invalid_status_fails_with_the_message():
    out = handlers.invalid_status({}, "spec.output: Field required", 1)
    assert out["phase"] == "Failed"
    assert out["conditions"][0]["reason"] == "InvalidSpec"
    assert "spec.output" in out["conditions"][0]["message"]


def test_registry_has_create_resume_update_for_every_kind():
    registry = kopf.OperatorRegistry()
    handlers.register(registry)
    seen = {(h.selector.any_name, h.reason, h.initial) for h in registry._changing.get_all_handlers()}
    for info in KINDS.values():
        assert (info.plural, kopf.Reason.CREATE, None) in seen
        assert (info.plural, kopf.Reason.UPDATE, None) in seen
        assert (info.plural, None, True) in seen  # resume


def test_metrics_count_outcomes_and_durations_per_kind():
    with metrics.observe("Unit"):
        pass
    with pytest.raises(kopf.TemporaryError), metrics.observe("Unit"):
        raise kopf.TemporaryError("later")
    with pytest.raises(ValueError), metrics.observe("Unit"):
        raise ValueError("boom")
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'capstan_reconciles_total{kind="Unit",outcome="ok"} 1.0' in text
    assert 'capstan_reconciles_total{kind="Unit",outcome="retry"} 1.0' in text
    assert 'capstan_reconciles_total{kind="Unit",outcome="error"} 1.0' in text
    assert 'capstan_reconcile_errors_total{kind="Unit"} 2.0' in text
    assert 'capstan_reconcile_duration_seconds_count{kind="Unit"} 3.0' in text
