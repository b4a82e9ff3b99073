"""Record validators/selectors and the bounded record and provider stores."""

from __future__ import annotations

import pytest

from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto.kad.messages_pb import KadRecord
from fastp2p.proto.kad.records import (
    NamespacedValidator,
    NewestValueValidator,
    RecordValidationError,
    default_validator,
    split_key,
)
from fastp2p.proto.kad.store import HOUR, ProviderStore, RecordStore


def test_split_key() -> None:
    assert split_key(b"/fastp2p/a/b") == ("fastp2p", b"a/b")
    for bad in (b"fastp2p/x", b"//x", b"/nons"):
        with pytest.raises(RecordValidationError):
            split_key(bad)


def test_pk_namespace_is_self_certifying() -> None:
    v = default_validator()
    key = Ed25519PrivateKey.generate()
    pid = PeerID.from_public_key(key.public_key())
    pk = key.public_key().to_protobuf()
    v.validate(b"/pk/" + pid.to_bytes(), pk)
    other = Ed25519PrivateKey.generate().public_key().to_protobuf()
    with pytest.raises(RecordValidationError):
        v.validate(b"/pk/" + pid.to_bytes(), other)
    with pytest.raises(RecordValidationError):
        v.validate(b"/pk/garbage", pk)


def test_fastp2p_namespace_size_limit_and_newest_wins() -> None:
    v = default_validator(max_value_size=10)
    v.validate(b"/fastp2p/k", b"x" * 10)
    with pytest.raises(RecordValidationError):
        v.validate(b"/fastp2p/k", b"x" * 11)
    with pytest.raises(RecordValidationError):
        v.validate(b"/unknown/k", b"x")
    recs = [
        KadRecord(b"/fastp2p/k", b"old", "2026-01-01T00:00:00Z"),
        KadRecord(b"/fastp2p/k", b"none", ""),
        KadRecord(b"/fastp2p/k", b"new", "2026-01-02T00:00:00Z"),
        KadRecord(b"/fastp2p/k", b"same", "2026-01-02T00:00:00Z"),
    ]
    assert v.select(b"/fastp2p/k", recs) == 2  # newest, first among equals


def test_application_namespaces() -> None:
    v = NamespacedValidator()
    v.register("/app/", NewestValueValidator(3))
    assert v.namespaces() == ["app"]
    v.validate(b"/app/x", b"abc")


def test_record_store_limits_per_peer_and_total() -> None:
    s = RecordStore(max_records=3, max_records_per_peer=2, record_ttl=10.0)
    assert s.put(KadRecord(b"a", b"1"), b"p1", 0.0)
    assert s.put(KadRecord(b"b", b"1"), b"p1", 0.0)
    assert not s.put(KadRecord(b"c", b"1"), b"p1", 0.0)  # per-peer limit
    assert s.put(KadRecord(b"a", b"2"), b"p1", 0.0)  # replacing is always allowed
    assert s.put(KadRecord(b"c", b"1"), b"p2", 0.0)
    assert not s.put(KadRecord(b"d", b"1"), b"p3", 0.0)  # total limit
    rec = s.get(b"a", 1.0)
    assert rec is not None and rec.value == b"2"
    assert s.get(b"a", 10.0) is None  # expired
    assert s.put(KadRecord(b"d", b"1"), b"p3", 10.0)  # gc made room


def test_provider_store_expiry_addresses_and_limits() -> None:
    s = ProviderStore(max_provider_keys=2, max_providers_per_key=2, max_keys_per_provider=2)
    assert s.add(b"k1", b"p1", [b"addr"], 0.0)
    assert s.add(b"k1", b"p2", [], 0.0)
    assert not s.add(b"k1", b"p3", [], 0.0)
    assert s.add(b"k2", b"p1", [], 0.0)
    assert not s.add(b"k3", b"p4", [], 0.0)  # key limit
    assert s.add(b"k2", b"p1", [], 0.0)  # refreshing is allowed at the limit
    got = s.get(b"k1", 60.0)
    assert {g.peer for g in got} == {b"p1", b"p2"}
    assert [g.addrs for g in got if g.peer == b"p1"] == [[b"addr"]]
    # addresses dropped after 30 min, the record itself after 48 h
    assert [g.addrs for g in s.get(b"k1", HOUR) if g.peer == b"p1"] == [[]]
    assert s.get(b"k1", 48 * HOUR) == []
    assert s.add(b"k3", b"p4", [], 48 * HOUR)  # expired keys freed room
    # republish refreshes the expiry
    s.add(b"k3", b"p4", [], 60 * HOUR)
    assert s.get(b"k3", 100 * HOUR) != []
