"""The drift score as a pure function: the documented formula on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from capstan_api.drift import LENGTH_BUCKETS, PromptStats, bucket_of, psi, score


def test_psi_by_hand():
    assert psi([50, 50], [50, 50]) == 0
    # shares 0.5/0.5 -> 1.0/0 (floored at 1e-4)
    want = (1 - 0.5) * math.log(1 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert psi([50, 50], [100, 0]) == pytest.approx(want)


def test_score_adds_psi_surprisal_rise_and_byte_share_rise():
    ref, live = PromptStats(surprisal=2.0), PromptStats(surprisal=3.0)
    for _ in range(10):
        ref.add(10, 0)
        live.add(10, 2)  # same lengths; 2 of 10 tokens are bytes
    s = score(ref, live)
    assert (s.psi, s.surprisal_change, s.byte_fallback_change, s.score) == (0, 0.5, 0.2, 0.7)
    # Lower surprisal or fewer byte tokens than the training data is not drift.
    assert score(live, ref).score == 0
    assert score(PromptStats(), live).surprisal_change is None  # no reference surprisal


def test_length_buckets_are_upper_bounds_inclusive():
    assert [bucket_of(n) for n in (1, 4, 5, 2048, 2049)] == [0, 0, 1, 9, 10]
    assert math.isinf(LENGTH_BUCKETS[-1])
