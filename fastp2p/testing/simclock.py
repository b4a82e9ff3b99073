"""A virtual-time asyncio event loop for in-process network simulations.

A simulation of hundreds of hosts in one process is CPU-bound: with the wall
clock, a loop iteration that runs ten thousand callbacks makes every timer in
the process late, so request timeouts fire because the *simulator* is busy, not
because a simulated peer is slow (the 1000-node Kademlia run saw 65 s loop
stalls and 27 000 timeouts of 2 s RPCs while joining). Network simulators
(ns-3, OMNeT++, PeerSim's event mode) run on simulated time for that reason.

:class:`VirtualClockLoop` keeps ``loop.time()`` still while callbacks are ready
and, when none are, jumps it to the next scheduled timer. Everything scheduled
through the loop (``call_later``, ``asyncio.sleep``, ``asyncio.timeout``, the
memory transport's latency) then runs in simulated time: a timeout fires only
when the simulated network has been idle that long. Code that reads
``time.monotonic()`` directly still sees the wall clock (the yamux keepalive,
table refresh stamps); that only makes such timers later, never earlier.

Only for loops without real I/O or threads: a jump does not wait for a socket
or a worker thread, so a real operation would see its timeout expire early.

Use::

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        runner.run(simulation())
"""

from __future__ import annotations

import asyncio

__all__ = ["VirtualClockLoop"]


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock advances only when no callback is ready."""

    def __init__(self) -> None:
        super().__init__()
        self._vtime = 0.0
        #: simulated seconds skipped by jumps (idle time of the simulated network)
        self.jumped = 0.0

    def time(self) -> float:
        return self._vtime

    def _run_once(self) -> None:
        ready = self._ready  # type: ignore[attr-defined]
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if not ready and scheduled and not self._stopping:  # type: ignore[attr-defined]
            # heap top: the earliest timer (a cancelled one is dropped by the
            # base loop; jumping to its time is harmless, time only moves forward)
            when = scheduled[0]._when
            if when > self._vtime:
                self.jumped += when - self._vtime
                self._vtime = when
        super()._run_once()  # type: ignore[misc]
