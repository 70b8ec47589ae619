"""The Lease a replica writes to lead: a new one, a renewal, a takeover once the holder has not
renewed for leaseDurationSeconds, and nothing while another holder's lease is current."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from capstan_operator.leader import LEASE_S, desired_lease

NOW = datetime(2026, 12, 2, 8, 0, 0, tzinfo=UTC)


def lease(holder: str, renewed_s_ago: float, transitions: int = 0) -> dict:
    t = (NOW - timedelta(seconds=renewed_s_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "metadata": {"name": "capstan-operator", "namespace": "ops", "resourceVersion": "42"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": LEASE_S,
            "acquireTime": "2026-12-02T07:00:00.000000Z",
            "renewTime": t,
            "leaseTransitions": transitions,
        },
    }


def test_no_lease_is_created_with_this_replica_holding_it():
    want = desired_lease(None, "ops", "a", NOW)
    assert want["spec"]["holderIdentity"] == "a" and want["spec"]["leaseTransitions"] == 0
    assert "resourceVersion" not in want["metadata"]


def test_the_holder_renews_keeping_its_acquire_time():
    want = desired_lease(lease("a", 3), "ops", "a", NOW)
    assert want["spec"]["renewTime"] == "2026-12-02T08:00:00.000000Z"
    assert want["spec"]["acquireTime"] == "2026-12-02T07:00:00.000000Z"
    assert want["metadata"]["resourceVersion"] == "42"  # a concurrent write makes it a 409


def test_a_current_lease_of_another_holder_is_left_alone_until_it_expires():
    assert desired_lease(lease("a", LEASE_S - 1), "ops", "b", NOW) is None
    want = desired_lease(lease("a", LEASE_S + 1, transitions=2), "ops", "b", NOW)
    assert want["spec"]["holderIdentity"] == "b" and want["spec"]["leaseTransitions"] == 3


def test_a_released_lease_is_taken_at_once():
    assert desired_lease(lease("", 0), "ops", "b", NOW)["spec"]["holderIdentity"] == "b"
