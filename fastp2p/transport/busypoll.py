"""Busy polling: keep the event loop spinning while a read waits, for a bounded time.

A reader that waits for a reply normally puts its thread to sleep in the kernel
(``epoll_wait``) until the reply arrives, and when the CPU it ran on went idle,
waking it again costs tens of microseconds: on a VM a halted vCPU must be woken
by the hypervisor, on bare metal a deep C-state left. For a request/response
exchange that is most of the round trip (the dev VM's loopback: ~65 us for raw
uvloop, of which the work is ~10 us).

``BusyPoller`` trades a busy core for that latency, as Linux's ``SO_BUSY_POLL``
and ``net.core.busy_read`` do for a socket, and as MPI and UCX progress engines
poll: once a stream read starts waiting (``kick``), it keeps a callback queued on
the loop, so the loop polls its sockets with a zero timeout instead of sleeping,
until the budget passed without another kick. Every iteration still runs every
ready callback and every I/O event first: the spin only replaces the sleep.

The budget adapts, as the kernel's ``haltpoll`` idle governor does: a kick that
comes within ``budget_us`` of the previous one (the wait before it was short:
polling pays) polls for the whole budget; after a longer gap the budget halves,
down to none, so a host whose reads wait long (sparse requests, idle streams)
stops burning a core, and its first short gap brings the full budget back.

Enabled per host with ``HostConfig.busy_poll_us`` (0, the default: off). The
shared-memory data path has its own poll of the ring (``ShmConfig.spin_us``),
which saves the eventfd system calls too; this one covers every data path.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["BusyPoller", "MAX_BUSY_POLL_US"]

#: the largest budget taken (one second): past that it is a spinning host, not a poll
MAX_BUSY_POLL_US = 1_000_000
#: below this a halved budget is none (a poll shorter than a loop iteration is noise)
_MIN_POLL_NS = 2_000


class BusyPoller:
    """Keep ``loop`` polling for up to ``budget_us`` microseconds after each ``kick``
    (adaptive: see the module)."""

    __slots__ = ("_loop", "_max_ns", "_cur_ns", "_last_kick", "_deadline", "_active", "_closed",
                 "spins")

    def __init__(self, loop: asyncio.AbstractEventLoop, budget_us: int) -> None:
        if not 0 < budget_us <= MAX_BUSY_POLL_US:
            raise ValueError(f"busy-poll budget must be 1..{MAX_BUSY_POLL_US} us, got {budget_us}")
        self._loop = loop
        self._max_ns = self._cur_ns = budget_us * 1000
        self._last_kick = 0
        self._deadline = 0
        self._active = False
        self._closed = False
        #: loop iterations spent polling (for tests and statistics)
        self.spins = 0

    @property
    def active(self) -> bool:
        """True while the loop is kept polling."""
        return self._active

    @property
    def budget_us(self) -> float:
        """The current budget (the configured one, or less after long waits)."""
        return self._cur_ns / 1000

    def kick(self) -> None:
        """A read started waiting: poll for up to the current budget from now."""
        now = time.monotonic_ns()
        if not self._last_kick or now - self._last_kick <= self._max_ns:
            self._cur_ns = self._max_ns  # the last wait was short: poll it all
        else:
            cur = self._cur_ns >> 1
            self._cur_ns = cur if cur >= _MIN_POLL_NS else 0
        self._last_kick = now
        if not self._cur_ns:
            return
        self._deadline = now + self._cur_ns
        if not self._active and not self._closed:
            self._active = True
            self._loop.call_soon(self._spin)

    def _spin(self) -> None:
        # One call per loop iteration: while it stays queued, the loop's next
        # wait for I/O has a zero timeout (it polls instead of sleeping).
        if self._closed or time.monotonic_ns() >= self._deadline:
            self._active = False
            return
        self.spins += 1
        self._loop.call_soon(self._spin)

    def close(self) -> None:
        """Stop polling (the queued callback, if any, returns at its next run)."""
        self._closed = True
