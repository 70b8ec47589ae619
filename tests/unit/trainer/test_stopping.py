"""Early stopping with patience and the overfitting signal, as pure bookkeeping."""

from __future__ import annotations

from capstan_trainer.stopping import ValidationWatch


def feed(watch: ValidationWatch, pairs):
    return [watch.observe(e, t) for e, t in pairs]


def test_stops_after_patience_evaluations_without_improvement():
    v = feed(
        ValidationWatch(patience=2, min_delta=0.0), [(3.0, None), (2.5, None), (2.6, None), (2.55, None)]
    )
    assert [x.evals_without_improvement for x in v] == [0, 0, 1, 2]
    assert [x.stop for x in v] == [False, False, False, True]


def test_improvement_smaller_than_min_delta_does_not_count():
    v = feed(ValidationWatch(patience=1, min_delta=0.05), [(3.0, None), (2.99, None)])
    assert v[-1].stop and v[-1].evals_without_improvement == 1


def test_an_improvement_resets_the_count():
    v = feed(ValidationWatch(patience=2, min_delta=0.0), [(3.0, None), (3.1, None), (2.0, None), (2.1, None)])
    assert [x.evals_without_improvement for x in v] == [0, 1, 0, 1] and not any(x.stop for x in v)


def test_patience_zero_never_stops():
    v = feed(ValidationWatch(patience=0, min_delta=0.0), [(1.0, 1.0)] + [(2.0 + i, 1.0) for i in range(5)])
    assert not any(x.stop for x in v)


def test_overfitting_is_validation_rising_while_training_falls():
    v = feed(
        ValidationWatch(patience=0, min_delta=0.0),
        [(2.0, 2.5), (2.2, 2.0), (2.3, 2.4), (2.1, 1.5), (2.4, None)],
    )
    # 2: val up, train down -> overfitting; 3: both up; 4: val down; 5: no training figure.
    assert [x.overfitting for x in v] == [False, True, False, False, False]
