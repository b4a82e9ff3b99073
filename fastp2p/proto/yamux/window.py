"""Receive-side flow-control policy of one yamux stream (h2 ``WindowManager``-like).

Rules
-----
- yamux spec: "each stream [starts] with a 256KiB window size"; both sides assume
  it, and a larger window is announced by a WINDOW_UPDATE "as part of the
  SYN/ACK". A window can only grow: it is never below :data:`SPEC_INITIAL_WINDOW`.
- yamux spec: only DATA payload bytes count against the window.
- The peer may have at most ``credit`` bytes in flight; a DATA chunk larger than
  the remaining credit is a :class:`~fastp2p.errors.FlowControlError`.
- Credit returns only as the application *consumes* data (h2
  ``acknowledge_received_data``), never on mere arrival, so a slow reader
  back-pressures the sender instead of buffering without bound.

Theory of operation
-------------------
Three quantities always satisfy ``credit + buffered + pending == max_window``:

``credit``
    bytes the peer may still send before it must wait for us;
``buffered``
    bytes delivered to the application but not yet acknowledged as consumed;
``pending``
    bytes consumed but whose credit has not been returned yet.

When ``pending`` reaches half of ``max_window`` a WINDOW_UPDATE returns it all
(go-yamux ``recvBuf.GrowTo``: "delta < max/2 -> no update"), halving the number
of update frames compared to returning credit per read. Windows above 4 MiB
return it from :data:`UPDATE_MAX` on: half of a 16 MiB window is 8 MiB that
the sender may not use while the reader already consumed it, and a sender that
seals whole multi-MiB writes before they leave then waits on the window.

Auto-tuning (go-yamux ``sendWindowUpdate``): if half a window was consumed in
less than ``rtt_factor`` round-trip times since the previous update (the
"epoch"), the window, not the application, is the bottleneck, so ``max_window``
doubles, up to ``max_window_limit``. go-yamux uses a factor of 4; fastp2p uses 2
(a window is grown only when clearly too small), configurable per instance.

Implementation
--------------
Pure arithmetic on ints; no clock is read (``now`` and ``rtt`` are passed in).
"""

from __future__ import annotations

from fastp2p.errors import FlowControlError, LocalProtocolError

__all__ = ["SPEC_INITIAL_WINDOW", "MAX_WIRE_WINDOW", "UPDATE_MAX", "WindowManager"]

# yamux spec: "When Yamux is initially starts each stream with a 256KiB window size."
SPEC_INITIAL_WINDOW = 256 * 1024
# Idle loopback RTTs (tens of microseconds) are far below the time a batched
# sender/receiver pipeline needs per window, so auto-tuning treats any RTT as at
# least this long. Growth still requires the application to consume quickly, so
# a slow reader never gets a bigger window. 4 ms, not 1: a sender that seals a
# multi-MiB write before any of it leaves (2 ms per 4 MiB with ChaCha20-Poly1305
# here) and a reader that opens it as long make a 2-4 ms cycle per half window;
# at 1 ms the window stayed at 4 MiB and the two sides took turns (4 MiB writes:
# 0.87-0.9 GB/s against 1.44-1.52 GB/s with this and UPDATE_MAX, 6 runs each).
MIN_TUNING_RTT = 0.004
# The WINDOW_UPDATE length field is 32 bits: no window may exceed it.
MAX_WIRE_WINDOW = 0xFFFFFFFF
#: credit goes back once this much is pending, when that is less than half the window
UPDATE_MAX = 2 * 1024 * 1024


class WindowManager:
    """Receive window bookkeeping and update policy for one stream.

    Args:
        initial_window: the window we want (``YamuxConfig.initial_window``);
            raised to the spec's 256 KiB if smaller, since the peer assumes 256 KiB.
        max_window_limit: ceiling for auto-tuning (``YamuxConfig.max_window``).
        now: creation time, start of the first auto-tuning epoch.
        rtt_factor: grow when half a window is consumed within this many RTTs.
    """

    __slots__ = ("max_window", "max_window_limit", "credit", "buffered", "epoch_start",
                 "rtt_factor")

    def __init__(
        self,
        initial_window: int = SPEC_INITIAL_WINDOW,
        max_window_limit: int = 16 * 1024 * 1024,
        now: float = 0.0,
        rtt_factor: float = 2.0,
    ) -> None:
        limit = min(max(max_window_limit, SPEC_INITIAL_WINDOW), MAX_WIRE_WINDOW)
        self.max_window_limit = limit
        self.max_window = min(max(initial_window, SPEC_INITIAL_WINDOW), limit)
        # The peer starts with the spec window, whatever we want; the difference is
        # announced by initial_delta() on the SYN or ACK.
        self.credit = SPEC_INITIAL_WINDOW
        self.buffered = 0
        self.epoch_start = now
        self.rtt_factor = rtt_factor

    @property
    def pending(self) -> int:
        """Consumed bytes whose credit has not been returned yet."""
        return self.max_window - self.credit - self.buffered

    def initial_delta(self) -> int:
        """The window increase to announce with our SYN or ACK (0 with default config)."""
        delta = self.max_window - self.credit - self.buffered
        if delta <= 0:
            return 0
        self.credit += delta
        return delta

    def data_received(self, n: int) -> None:
        """Account ``n`` payload bytes that arrived from the peer.

        Raises:
            FlowControlError: ``n`` exceeds the credit the peer had.
        """
        if n > self.credit:
            raise FlowControlError(
                f"peer sent {n} bytes with only {self.credit} bytes of window left"
            )
        self.credit -= n
        self.buffered += n

    def data_consumed(self, n: int, now: float, rtt: float | None) -> int:
        """The application consumed ``n`` bytes; returns the WINDOW_UPDATE delta to send (or 0).

        Raises:
            LocalProtocolError: more bytes acknowledged than were delivered.
        """
        if n < 0 or n > self.buffered:
            raise LocalProtocolError(
                f"acknowledged {n} bytes but only {self.buffered} are unacknowledged"
            )
        self.buffered -= n
        max_window = self.max_window
        delta = max_window - self.credit - self.buffered
        half = max_window >> 1
        if delta < (half if half < UPDATE_MAX else UPDATE_MAX):
            return 0
        if (
            rtt is not None
            and rtt > 0
            and max_window < self.max_window_limit
            and now - self.epoch_start < max(rtt, MIN_TUNING_RTT) * self.rtt_factor
        ):
            self.max_window = min(max_window * 2, self.max_window_limit)
            delta = self.max_window - self.credit - self.buffered
        self.epoch_start = now
        self.credit += delta
        return delta
