"""The connection manager's pure trimming policy (fastp2p/services/connmgr.py:TrimPolicy)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastp2p.config import ConnectionManagerConfig
from fastp2p.services.connmgr import TrimCandidate, TrimPolicy

NOW = 1000.0


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[TrimPolicy, list[TrimCandidate], set[int], dict[int, int], bool]:
    low = draw(st.integers(0, 12))
    high = draw(st.integers(low, 20))
    grace = draw(st.sampled_from([0.0, 5.0, 30.0]))
    npeers = draw(st.integers(1, 15))
    conns = [
        TrimCandidate(
            conn=i,
            peer=draw(st.integers(0, npeers - 1)),
            outbound=draw(st.booleans()),
            opened_at=NOW - draw(st.sampled_from([0.0, 1.0, 4.9, 5.0, 10.0, 29.0, 100.0])),
            streams=draw(st.integers(0, 3)),
        )
        for i in range(draw(st.integers(0, 40)))
    ]
    protected = draw(st.sets(st.integers(0, npeers - 1), max_size=npeers))
    values = draw(st.dictionaries(st.integers(0, npeers - 1), st.integers(-5, 50), max_size=npeers))
    return TrimPolicy(high, low, grace), conns, protected, values, draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_policy_invariants(sc: tuple[TrimPolicy, list[TrimCandidate], set[int], dict[int, int], bool]) -> None:
    policy, conns, protected, values, active = sc
    plan = policy.plan(conns, now=NOW, protected=protected, values=values, active=active)
    n = len(conns)
    closed = set(plan.close)
    assert len(closed) == len(plan.close), "a connection is closed twice"
    eligible = [c for c in conns if c.peer not in protected and NOW - c.opened_at >= policy.grace]
    # never a protected peer, never a connection in its grace period
    assert all(c.peer not in protected for c in plan.close)
    assert all(NOW - c.opened_at >= policy.grace for c in plan.close)
    if n <= policy.low or (n <= policy.high and not active):
        assert plan.close == () and plan.recheck_at is None
        return
    # never below the low watermark; exactly to it when enough are eligible
    assert n - len(plan.close) >= policy.low
    assert len(plan.close) == min(n - policy.low, len(eligible))
    # the lowest values go first (then fewer streams, then the newest)
    def key(c: TrimCandidate) -> tuple[int, int, float]:
        return (values.get(c.peer, 0), c.streams, -c.opened_at)

    kept = [c for c in eligible if c not in closed]
    if plan.close and kept:
        assert max(key(c) for c in plan.close) <= min(key(c) for c in kept)
    # look again exactly when a young unprotected connection could still help
    young = [c.opened_at + policy.grace for c in conns
             if c.peer not in protected and NOW - c.opened_at < policy.grace]
    if n - len(plan.close) > policy.low and young:
        assert plan.recheck_at == min(young)
    else:
        assert plan.recheck_at is None


def test_policy_example_tags_decide() -> None:
    policy = TrimPolicy(high=3, low=2, grace=10.0)
    conns = [TrimCandidate(i, f"p{i}", False, NOW - 60, 0) for i in range(5)]
    plan = policy.plan(conns, now=NOW, protected={"p0"}, values={"p1": 5, "p2": 1, "p3": 3})
    # p4 (value 0), p2 (1), p3 (3) go; p0 is protected, p1 is the most valuable
    assert [c.peer for c in plan.close] == ["p4", "p2", "p3"]
    assert "5 connections > high watermark 3" in plan.reason


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ConnectionManagerConfig(high_watermark=5, low_watermark=6)
    with pytest.raises(ValueError):
        ConnectionManagerConfig(low_watermark=-1)
    with pytest.raises(ValueError):
        ConnectionManagerConfig(grace_period=-1.0)
    with pytest.raises(ValueError):
        ConnectionManagerConfig(trim_interval=0)
    with pytest.raises(ValueError):
        TrimPolicy(high=1, low=2, grace=0)
    assert ConnectionManagerConfig().low_watermark < ConnectionManagerConfig().high_watermark
