"""Early stopping with patience and the overfitting signal, as pure bookkeeping."""

from __future__ import annotations

from capstan_trainer.train.stopping import ValidationWatch


def feed(watch: ValidationWatch, evals, trains=None):
    """One evaluation per entry of `evals`, after recording the matching list of training losses."""
    out = []
    for i, e in enumerate(evals):
        for t in (trains or {}).get(i, []):
            watch.record_train(t)
        out.append(watch.observe(e))
    return out


def test_stops_after_patience_evaluations_without_improvement():
    v = feed(ValidationWatch(patience=2, min_delta=0.0), [3.0, 2.5, 2.6, 2.55])
    assert [x.evals_without_improvement for x in v] == [0, 0, 1, 2]
    assert [x.stop for x in v] == [False, False, False, True]


def test_improvement_smaller_than_min_delta_does_not_count():
    v = feed(ValidationWatch(patience=1, min_delta=0.05), [3.0, 2.99])
    assert v[-1].stop and v[-1].evals_without_improvement == 1


def test_an_improvement_resets_the_count():
    v = feed(ValidationWatch(patience=2, min_delta=0.0), [3.0, 3.1, 2.0, 2.1])
    assert [x.evals_without_improvement for x in v] == [0, 1, 0, 1] and not any(x.stop for x in v)


def test_patience_zero_never_stops():
    v = feed(ValidationWatch(patience=0, min_delta=0.0), [1.0, 2.0, 3.0, 4.0, 5.0])
    assert not any(x.stop for x in v)


def test_overfitting_is_validation_rising_while_training_falls():
    trains = {0: [2.6, 2.4], 1: [2.1, 1.9], 2: [2.4], 3: [1.5]}  # evaluation 4 has none
    v = feed(ValidationWatch(patience=0, min_delta=0.0), [2.0, 2.2, 2.3, 2.1, 2.4], trains)
    assert [x.train_loss for x in v] == [2.5, 2.0, 2.4, 1.5, None]
    # 2: val up, train down -> overfitting; 3: both up; 4: val down; 5: no training figure.
    assert [x.overfitting for x in v] == [False, True, False, False, False]


def test_state_survives_a_checkpoint_round_trip():
    a = ValidationWatch(patience=3, min_delta=0.0)
    feed(a, [2.0, 2.1], {0: [2.5], 1: [2.4]})
    a.record_train(1.9)
    b = ValidationWatch(patience=3, min_delta=0.0)
    b.load_json(a.to_json())
    assert b.observe(2.2) == a.observe(2.2)
    fresh = ValidationWatch(patience=3, min_delta=0.0)
    fresh.load_json(ValidationWatch(3, 0.0).to_json())  # best = inf survives JSON
    assert fresh.observe(5.0).evals_without_improvement == 0
