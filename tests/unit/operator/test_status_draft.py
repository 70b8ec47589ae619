"""StatusDraft: a reconcile's status patch holds only what changed, and phase changes are Events."""

from capstan_operator.status import StatusDraft


def body(status: dict | None = None, generation: int = 1, spec: dict | None = None) -> dict:
    return {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "r", "namespace": "ns", "generation": generation},
        "spec": spec or {},
        "status": status or {},
    }


def test_first_reconcile_writes_phase_condition_generation_and_one_event():
    draft = StatusDraft(body())
    draft.condition("Waiting", "True", "DependencyNotReady", "waiting for Dataset d")
    out = draft.phase("Waiting", "waiting for Dataset d", "Waiting").outcome(5.0)
    assert out.status["phase"] == "Waiting" and out.status["observedGeneration"] == 1
    assert out.status["message"] == "waiting for Dataset d"
    [cond] = out.status["conditions"]
    assert (cond["type"], cond["status"], cond["observedGeneration"]) == ("Waiting", "True", 1)
    assert out.events == [("Normal", "Waiting", "waiting for Dataset d")]
    assert out.requeue_after == 5.0


def test_same_state_again_writes_nothing_and_posts_no_event():
    first = StatusDraft(body())
    first.condition("Waiting", "True", "DependencyNotReady", "m")
    stored = first.phase("Waiting", "m").set(step=3).outcome().status
    again = StatusDraft(body(stored))
    again.condition("Waiting", "True", "DependencyNotReady", "m")
    out = again.phase("Waiting", "m").set(step=3).outcome()
    assert out.status == {} and out.events == []


def test_new_generation_is_observed_and_failed_is_a_warning():
    stored = StatusDraft(body()).phase("Running", "training").outcome().status
    draft = StatusDraft(body(stored, generation=2))
    draft.condition("Failed", "True", "InvalidSpec", "spec.x: bad")
    out = draft.phase("Failed", "spec.x: bad", "InvalidSpec").outcome()
    assert out.status["observedGeneration"] == 2
    assert out.events == [("Warning", "InvalidSpec", "spec.x: bad")]


def test_clear_removes_a_condition_only_when_present():
    draft = StatusDraft(body())
    draft.condition("LicenseNotAllowed", "True", "LicenseNotAllowed", "no")
    stored = draft.outcome().status
    cleared = StatusDraft(body(stored)).clear("LicenseNotAllowed").outcome()
    assert cleared.status == {"conditions": []}
    assert StatusDraft(body({"observedGeneration": 1})).clear("LicenseNotAllowed").outcome().status == {}
