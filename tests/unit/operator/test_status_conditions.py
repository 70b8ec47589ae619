"""Conditions change only when their content does; transition time only when status flips."""

from capstan_operator.status import find, is_true, remove_condition, set_condition

T0, T1 = "2026-11-29T00:00:00Z", "2026-11-29T00:05:00Z"


def test_new_condition_is_appended_with_generation_and_time():
    conds, changed = set_condition([], "Waiting", "True", "Accepted", "waiting", 3, now=T0)
    assert changed
    assert conds == [
        {
            "type": "Waiting",
            "status": "True",
            "reason": "Accepted",
            "message": "waiting",
            "observedGeneration": 3,
            "lastTransitionTime": T0,
        }
    ]


def test_same_condition_again_is_not_a_change():
    conds, _ = set_condition([], "Ready", "False", "Waiting", "m", 1, now=T0)
    again, changed = set_condition(conds, "Ready", "False", "Waiting", "m", 1, now=T1)
    assert not changed
    assert again == conds


def test_message_change_keeps_transition_time_and_status_flip_moves_it():
    conds, _ = set_condition([], "Ready", "False", "Waiting", "m", 1, now=T0)
    conds, changed = set_condition(conds, "Ready", "False", "Waiting", "other", 2, now=T1)
    assert changed
    assert find(conds, "Ready")["lastTransitionTime"] == T0
    assert find(conds, "Ready")["observedGeneration"] == 2
    conds, changed = set_condition(conds, "Ready", "True", "Done", "ok", 2, now=T1)
    assert changed and is_true(conds, "Ready")
    assert find(conds, "Ready")["lastTransitionTime"] == T1


def test_other_conditions_keep_their_place_and_input_is_not_mutated():
    a, _ = set_condition([], "A", "True", "R", "", 1, now=T0)
    ab, _ = set_condition(a, "B", "True", "R", "", 1, now=T0)
    before = [dict(c) for c in ab]
    out, _ = set_condition(ab, "A", "False", "R", "", 1, now=T1)
    assert [c["type"] for c in out] == ["A", "B"]
    assert ab == before
    out, changed = remove_condition(out, "A")
    assert changed and [c["type"] for c in out] == ["B"]
    assert remove_condition(out, "A") == (out, False)


def test_bad_status_is_refused():
    import pytest

    with pytest.raises(ValueError, match="True, False or Unknown"):
        set_condition([], "A", "yes", "R", "", 1)
