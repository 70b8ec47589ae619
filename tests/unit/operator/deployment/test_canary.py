"""Canary weights as replica counts."""

from __future__ import annotations

import pytest

from capstan_operator.deployment.canary import Split, split, step_index


def test_weight_becomes_a_replica_ratio_once_the_canary_is_ready():
    assert split(10, 10, canary_ready=1) == Split(stable=9, canary=1)
    assert split(10, 50, canary_ready=5) == Split(stable=5, canary=5)
    assert split(4, 25, canary_ready=1) == Split(stable=3, canary=1)


def test_stable_capacity_is_kept_until_the_canary_is_ready():
    assert split(10, 50, canary_ready=0) == Split(stable=10, canary=5)
    assert split(10, 50, canary_ready=2) == Split(stable=8, canary=5)
    assert split(3, 100, canary_ready=0) == Split(stable=3, canary=3)
    assert split(3, 100, canary_ready=3) == Split(stable=0, canary=3)


def test_a_single_replica_keeps_its_stable_pod_beside_a_small_canary():
    assert split(1, 10, canary_ready=1) == Split(stable=1, canary=1)
    assert split(1, 100, canary_ready=1) == Split(stable=0, canary=1)


def test_no_replicas_and_bad_weights():
    assert split(0, 50, canary_ready=0) == Split(0, 0)
    with pytest.raises(ValueError, match="canary weight must be 0-100, got 101"):
        split(2, 101, 0)


def test_step_index_never_moves_backwards_when_steps_change():
    weights = [10, 50, 100]
    assert [step_index(weights, w) for w in (0, 10, 50, 100)] == [0, 0, 1, 2]
    assert step_index([20, 60, 100], 50) == 1  # edited mid-rollout: the next step at or above
