"""PRUNE backoff bookkeeping (gossipsub v1.1 "PRUNE Backoff and Peer Exchange").

Rules
-----
- After a PRUNE both sides keep a backoff for ``(topic, peer)``; neither
  grafts the other before it expires. A GRAFT received inside the backoff is
  answered with a PRUNE and the backoff is extended; the grafter earns a
  behavioural penalty (P7).
- The PRUNE carries the backoff in seconds; a pruned peer waits the full
  period plus slack (one heartbeat) before it regrafts.
- Backoffs only grow: a shorter new backoff never replaces a longer one.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["BackoffTable"]


class BackoffTable:
    """``(topic, peer) -> expiry`` with lazy and periodic expiry."""

    def __init__(self) -> None:
        self._t: dict[tuple[str, Hashable], float] = {}

    def add(self, topic: str, peer: Hashable, until: float) -> None:
        """Back off from ``peer`` in ``topic`` until ``until`` (never shortens one)."""
        key = (topic, peer)
        if self._t.get(key, 0.0) < until:
            self._t[key] = until

    def active(self, topic: str, peer: Hashable, now: float) -> bool:
        """True while the backoff for ``(topic, peer)`` runs."""
        t = self._t.get((topic, peer))
        return t is not None and t > now

    def expiry(self, topic: str, peer: Hashable) -> float | None:
        """When the backoff ends, or None."""
        return self._t.get((topic, peer))

    def expire(self, now: float) -> None:
        """Drop every finished backoff."""
        self._t = {k: v for k, v in self._t.items() if v > now}

    def __len__(self) -> int:
        return len(self._t)
