"""Record validation and selection (libp2p-kad-dht.md "Entry validation").

Rules
-----
- A record key is ``/<namespace>/<rest>``; the validator registered for the
  namespace decides. Keys in an unknown namespace are rejected (as go- and
  js-libp2p do), so a DHT stores only what some application understands.
- ``validate(key, value)`` is pure: it raises :class:`RecordValidationError`
  or returns. It runs on values received in ``GET_VALUE`` answers and before
  storing a ``PUT_VALUE``.
- ``select(key, records)`` returns the index of the best record, stably.
- ``/pk/<peer id bytes>``: the value is a protobuf public key whose PeerId is
  the key's peer id (self-certifying; any two valid values are equal).
- ``/fastp2p/<anything>``: any value up to ``max_size`` bytes; the newest
  wins. "Newest" is the record's ``timeReceived`` (RFC 3339, set by the node
  that stored it, and returned by go, js and py nodes in ``GET_VALUE``); a
  later ``PUT_VALUE`` therefore wins, and records without a time lose to
  records with one. Ties keep the first (stable).

Applications add namespaces with :meth:`NamespacedValidator.register`; a
namespace whose values must be signed registers a validator that checks the
signature (``/pk/`` is the self-certifying example).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastp2p.errors import InvalidKeyError, P2PError
from fastp2p.peer import PeerID, public_key_from_protobuf
from fastp2p.proto.kad.messages_pb import KadRecord

__all__ = [
    "RecordValidationError",
    "Validator",
    "PublicKeyValidator",
    "NewestValueValidator",
    "NamespacedValidator",
    "split_key",
    "default_validator",
    "FASTP2P_NAMESPACE",
]

FASTP2P_NAMESPACE = "fastp2p"
DEFAULT_MAX_VALUE_SIZE = 16 * 1024


class RecordValidationError(P2PError, ValueError):
    """A record is invalid for its namespace (or the namespace is unknown)."""


def split_key(key: bytes) -> tuple[str, bytes]:
    """``/<ns>/<rest>`` -> (ns, rest).

    Raises:
        RecordValidationError: the key has no namespace.
    """
    if not key.startswith(b"/"):
        raise RecordValidationError("record key does not start with '/'")
    i = key.find(b"/", 1)
    if i <= 1:
        raise RecordValidationError("record key has no namespace")
    try:
        ns = key[1:i].decode("utf-8")
    except UnicodeDecodeError:
        raise RecordValidationError("record namespace is not UTF-8") from None
    return ns, key[i + 1 :]


class Validator:
    """A namespace's rules: subclass and override both methods."""

    def validate(self, key: bytes, value: bytes) -> None:
        """Raise :class:`RecordValidationError` if ``value`` is not valid for ``key``."""
        raise NotImplementedError

    def select(self, key: bytes, records: Sequence[KadRecord]) -> int:
        """Index of the best of ``records`` (all already valid); stable."""
        if not records:
            raise ValueError("select needs at least one record")
        return 0


class PublicKeyValidator(Validator):
    """``/pk/<PeerId bytes>`` -> the peer's protobuf public key."""

    def validate(self, key: bytes, value: bytes) -> None:
        _, rest = split_key(key)
        try:
            expected = PeerID.from_bytes(rest)
            pub = public_key_from_protobuf(value)
        except (InvalidKeyError, P2PError, ValueError) as exc:
            raise RecordValidationError(f"invalid /pk/ record: {exc}") from exc
        if PeerID.from_public_key(pub) != expected:
            raise RecordValidationError("/pk/ record: public key does not match the key's peer id")


class NewestValueValidator(Validator):
    """Any value up to ``max_size`` bytes; the newest ``timeReceived`` wins."""

    def __init__(self, max_size: int = DEFAULT_MAX_VALUE_SIZE) -> None:
        self.max_size = max_size

    def validate(self, key: bytes, value: bytes) -> None:
        if len(value) > self.max_size:
            raise RecordValidationError(f"value of {len(value)} bytes exceeds {self.max_size}")

    def select(self, key: bytes, records: Sequence[KadRecord]) -> int:
        if not records:
            raise ValueError("select needs at least one record")
        best = 0
        for i, r in enumerate(records):
            # RFC 3339 with the same offset and precision compares as text; go, js
            # and py all write UTC ("Z").
            if r.time_received and r.time_received > records[best].time_received:
                best = i
        return best


class NamespacedValidator:
    """Validators by namespace (go-libp2p-record ``NamespacedValidator``)."""

    def __init__(self) -> None:
        self._by_ns: dict[str, Validator] = {}

    def register(self, namespace: str, validator: Validator) -> None:
        """Use ``validator`` for keys ``/<namespace>/...``."""
        self._by_ns[namespace.strip("/")] = validator

    def namespaces(self) -> list[str]:
        return sorted(self._by_ns)

    def _for(self, key: bytes) -> Validator:
        ns, _ = split_key(key)
        v = self._by_ns.get(ns)
        if v is None:
            raise RecordValidationError(f"no validator for namespace {ns!r}")
        return v

    def validate(self, key: bytes, value: bytes) -> None:
        """Raise :class:`RecordValidationError` unless ``value`` is valid for ``key``."""
        self._for(key).validate(key, value)

    def select(self, key: bytes, records: Sequence[KadRecord]) -> int:
        """Index of the best of ``records`` for ``key``."""
        return self._for(key).select(key, records)


def default_validator(max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> NamespacedValidator:
    """``/pk/`` and ``/fastp2p/`` (any value up to ``max_value_size``, newest wins)."""
    v = NamespacedValidator()
    v.register("pk", PublicKeyValidator())
    v.register(FASTP2P_NAMESPACE, NewestValueValidator(max_value_size))
    return v
