"""The gossipsub message cache and the seen-message time cache.

Rules
-----
- gossipsub v1.0 "Message Cache": ``put(m)`` adds to the current window;
  ``get(id)``; ``get_gossip_ids(topic)`` returns ids from the newest
  ``gossip`` windows; ``shift()`` (every heartbeat) drops the oldest of
  ``history`` windows.
- v1.1 "Spam Protection Measures": IWANT answers are limited per peer and
  message (``get_for_peer`` counts retransmissions).
- The ``seen`` cache remembers ids for ``seen_ttl`` seconds (v1.0 Parameters).

Theory of operation
-------------------
Windows are lists of ``(id, topic)``; the message dict holds the messages of
every window. ``SeenCache`` is an insertion-ordered dict id -> expiry, purged
from the front, so each operation is O(1) amortised.
"""

from __future__ import annotations

from collections import OrderedDict

from fastp2p.proto.gossipsub.rpc_pb import Message

__all__ = ["MessageCache", "SeenCache"]


class MessageCache:
    """Sliding window cache of recent messages (``history`` windows, ``gossip`` of them gossiped)."""

    def __init__(self, history: int = 5, gossip: int = 3) -> None:
        if not 0 < gossip <= history:
            raise ValueError("mcache needs 0 < gossip <= history")
        self._history = history
        self._gossip = gossip
        self._msgs: dict[bytes, Message] = {}
        self._peer_tx: dict[bytes, dict[object, int]] = {}
        self._windows: list[list[tuple[bytes, str]]] = [[] for _ in range(history)]

    def put(self, msg_id: bytes, msg: Message) -> None:
        """Add ``msg`` to the newest window (a second put of the same id is ignored)."""
        if msg_id in self._msgs:
            return
        self._msgs[msg_id] = msg
        self._windows[0].append((msg_id, msg.topic))

    def get(self, msg_id: bytes) -> Message | None:
        """The cached message with ``msg_id``, or None."""
        return self._msgs.get(msg_id)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._msgs

    def __len__(self) -> int:
        return len(self._msgs)

    def get_for_peer(self, msg_id: bytes, peer: object) -> tuple[Message | None, int]:
        """The message and how many times ``peer`` has now asked for it (IWANT)."""
        msg = self._msgs.get(msg_id)
        if msg is None:
            return None, 0
        counts = self._peer_tx.setdefault(msg_id, {})
        counts[peer] = counts.get(peer, 0) + 1
        return msg, counts[peer]

    def gossip_ids(self, topic: str) -> list[bytes]:
        """Ids of ``topic`` messages in the newest ``gossip`` windows."""
        out = []
        for window in self._windows[: self._gossip]:
            for msg_id, t in window:
                if t == topic:
                    out.append(msg_id)
        return out

    def shift(self) -> None:
        """Drop the oldest window and open a new one (once per heartbeat)."""
        for msg_id, _ in self._windows.pop():
            self._msgs.pop(msg_id, None)
            self._peer_tx.pop(msg_id, None)
        self._windows.insert(0, [])


class SeenCache:
    """Message ids seen in the last ``ttl`` seconds."""

    def __init__(self, ttl: float, max_entries: int = 1 << 20) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._d: OrderedDict[bytes, float] = OrderedDict()

    def add(self, msg_id: bytes, now: float) -> bool:
        """Record ``msg_id``; returns False if it was already present (a duplicate)."""
        if msg_id in self._d:
            return False
        self._d[msg_id] = now + self._ttl
        if len(self._d) > self._max:
            self._d.popitem(last=False)
        return True

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._d

    def __len__(self) -> int:
        return len(self._d)

    def expire(self, now: float) -> None:
        """Forget ids whose time is up."""
        d = self._d
        while d:
            msg_id, t = next(iter(d.items()))
            if t > now:
                break
            d.popitem(last=False)
