"""WindowManager: the receive-side yamux flow-control policy, tested alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastp2p.errors import FlowControlError, LocalProtocolError
from fastp2p.proto.yamux.window import SPEC_INITIAL_WINDOW, UPDATE_MAX, WindowManager

KIB = 1024
MIB = 1024 * KIB


def test_defaults_match_spec() -> None:
    w = WindowManager()
    assert w.max_window == w.credit == SPEC_INITIAL_WINDOW == 256 * KIB
    assert w.initial_delta() == 0
    assert w.buffered == 0 and w.pending == 0


def test_larger_initial_window_is_announced_once() -> None:
    w = WindowManager(initial_window=1 * MIB)
    assert w.credit == 256 * KIB
    assert w.initial_delta() == 768 * KIB
    assert w.credit == 1 * MIB
    assert w.initial_delta() == 0


def test_window_never_below_spec_initial() -> None:
    w = WindowManager(initial_window=1000)
    assert w.max_window == 256 * KIB
    assert w.initial_delta() == 0


def test_limit_clamped_to_wire_and_at_least_initial() -> None:
    assert WindowManager(max_window_limit=10).max_window_limit == 256 * KIB
    assert WindowManager(max_window_limit=1 << 40).max_window_limit == 0xFFFFFFFF


def test_overrun_is_flow_control_error() -> None:
    w = WindowManager()
    w.data_received(256 * KIB)
    with pytest.raises(FlowControlError):
        w.data_received(1)
    assert FlowControlError.error_code == 1  # yamux spec: 0x1 protocol error


def test_credit_returns_only_when_half_consumed() -> None:
    w = WindowManager()
    w.data_received(200 * KIB)
    assert w.data_consumed(100 * KIB, 0.0, None) == 0
    assert w.pending == 100 * KIB
    assert w.data_consumed(28 * KIB, 0.0, None) == 128 * KIB  # reached max/2
    assert w.credit == 56 * KIB + 128 * KIB
    assert w.pending == 0 and w.buffered == 72 * KIB


def test_overacknowledge_is_local_error() -> None:
    w = WindowManager()
    w.data_received(10)
    with pytest.raises(LocalProtocolError):
        w.data_consumed(11, 0.0, None)
    with pytest.raises(LocalProtocolError):
        w.data_consumed(-1, 0.0, None)


def test_autotune_doubles_when_consumed_within_two_rtts() -> None:
    w = WindowManager(max_window_limit=1 * MIB, now=0.0)
    w.data_received(128 * KIB)
    # half a window consumed 10 ms after the epoch start with a 10 ms RTT: < 2 RTT
    delta = w.data_consumed(128 * KIB, 0.010, 0.010)
    assert w.max_window == 512 * KIB
    assert delta == 512 * KIB - 128 * KIB  # everything but the outstanding credit
    assert w.credit == 512 * KIB
    # again: 512 -> 1 MiB, then capped
    w.data_received(256 * KIB)
    w.data_consumed(256 * KIB, 0.015, 0.010)
    assert w.max_window == 1 * MIB
    w.data_received(512 * KIB)
    w.data_consumed(512 * KIB, 0.020, 0.010)
    assert w.max_window == 1 * MIB


def test_no_autotune_when_slow_or_rtt_unknown() -> None:
    w = WindowManager(now=0.0)
    w.data_received(128 * KIB)
    assert w.data_consumed(128 * KIB, 1.0, 0.010) == 128 * KIB  # 100 RTTs later
    assert w.max_window == 256 * KIB
    w.data_received(128 * KIB)
    assert w.data_consumed(128 * KIB, 1.0, None) == 128 * KIB
    assert w.max_window == 256 * KIB
    assert w.epoch_start == 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * MIB), st.integers(0, 3 * MIB),
                          st.floats(0, 0.05)), max_size=60))
def test_invariants_hold(ops: list[tuple[int, int, float]]) -> None:
    """credit + buffered + pending == max_window; nothing negative; max within bounds."""
    w = WindowManager(max_window_limit=16 * MIB, now=0.0)
    now = 0.0
    for recv, consume, dt in ops:
        now += dt
        recv = min(recv, w.credit)
        w.data_received(recv)
        consume = min(consume, w.buffered)
        delta = w.data_consumed(consume, now, 0.01)
        assert delta >= 0
        assert w.credit >= 0 and w.buffered >= 0 and w.pending >= 0
        assert w.credit + w.buffered + w.pending == w.max_window
        assert 256 * KIB <= w.max_window <= 16 * MIB
        assert w.pending < min(w.max_window // 2, UPDATE_MAX) or delta == 0


def test_large_windows_return_credit_from_update_max_on() -> None:
    """Above 4 MiB, credit goes back once UPDATE_MAX is pending, not half the window."""
    w = WindowManager(initial_window=16 * MIB, max_window_limit=16 * MIB, now=0.0)
    assert w.initial_delta() == 16 * MIB - 256 * KIB
    w.data_received(6 * MIB)
    assert w.data_consumed(UPDATE_MAX - 1, 1.0, None) == 0
    assert w.data_consumed(1, 1.0, None) == UPDATE_MAX  # an eighth of 16 MiB
    assert w.credit == 10 * MIB + UPDATE_MAX and w.buffered == 6 * MIB - UPDATE_MAX
    # at 4 MiB and below, half the window as before
    small = WindowManager(initial_window=4 * MIB, max_window_limit=4 * MIB)
    small.initial_delta()
    small.data_received(3 * MIB)
    assert small.data_consumed(2 * MIB - 1, 0.0, None) == 0
    assert small.data_consumed(1, 0.0, None) == 2 * MIB
