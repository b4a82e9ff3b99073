"""Grant tokens of fastp2p.memory.MemoryManager: every check, forgery and revocation."""

from __future__ import annotations

import gc
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.errors import AccessDeniedError, AccessError, ClosedResourceError, RegionBoundsError
from fastp2p.memory import TOKEN_SIZE, TOKEN_VERSION, MemoryManager
from fastp2p.peer import Ed25519PrivateKey, PeerID

HSET = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _peer() -> PeerID:
    return PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())


ALICE, BOB = _peer(), _peer()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mgr(clock: FakeClock) -> MemoryManager:
    m = MemoryManager(clock=clock)
    yield m
    m.close()


def test_token_shape(mgr):
    region = mgr.alloc(1000)
    token = region.grant(ALICE)
    assert isinstance(token, bytes) and len(token) == TOKEN_SIZE == 120
    assert token[0] == TOKEN_VERSION
    assert region.grant(ALICE) != token  # every grant is distinct (serial)


def test_valid_read_grant(mgr):
    region = mgr.alloc(1000)
    token = region.grant(ALICE)
    got, off = mgr.check(token, ALICE, write=False, offset=0, length=1000)
    assert got is region and off == 0
    assert mgr.verify(token, ALICE, write=False, offset=10, length=5) == (region, 10)


def test_offsets_are_relative_to_the_grant(mgr):
    region = mgr.alloc(1000)
    token = region.grant(ALICE, write=True, offset=100, length=50)
    assert mgr.check(token, ALICE, write=True, offset=10, length=40) == (region, 110)
    assert mgr.check(token, ALICE, write=False, offset=50, length=0) == (region, 150)
    for offset, length in [(10, 41), (0, 51), (51, 0), (-1, 1), (0, -1), (49, 2)]:
        with pytest.raises(RegionBoundsError):
            mgr.check(token, ALICE, write=True, offset=offset, length=length)


def test_missing_write_right(mgr):
    region = mgr.alloc(100)
    token = region.grant(ALICE)  # read only
    with pytest.raises(AccessDeniedError, match="writing"):
        mgr.check(token, ALICE, write=True, offset=0, length=1)


def test_missing_read_right(mgr):
    region = mgr.alloc(100)
    token = region.grant(ALICE, read=False, write=True)
    mgr.check(token, ALICE, write=True, offset=0, length=100)
    with pytest.raises(AccessDeniedError, match="reading"):
        mgr.check(token, ALICE, write=False, offset=0, length=1)


def test_wrong_peer(mgr):
    region = mgr.alloc(100)
    token = region.grant(ALICE, write=True)
    with pytest.raises(AccessDeniedError, match="another peer"):
        mgr.check(token, BOB, write=False, offset=0, length=1)
    with pytest.raises(TypeError):
        mgr.check(token, ALICE.to_bytes(), write=False, offset=0, length=1)


def test_revoke_one(mgr):
    region = mgr.alloc(100)
    t1, t2 = region.grant(ALICE), region.grant(ALICE)
    region.revoke(t1)
    with pytest.raises(AccessDeniedError, match="revoked"):
        mgr.check(t1, ALICE, write=False, offset=0, length=1)
    mgr.check(t2, ALICE, write=False, offset=0, length=1)  # others unaffected
    region.revoke(t1)  # idempotent
    mgr.revoke(t2)
    with pytest.raises(AccessDeniedError, match="revoked"):
        mgr.check(t2, ALICE, write=False, offset=0, length=1)
    assert mgr.live_grants(region) == 0


def test_revoke_token_of_another_region(mgr):
    a, b = mgr.alloc(10), mgr.alloc(10)
    token = a.grant(ALICE)
    with pytest.raises(ValueError):
        b.revoke(token)
    mgr.check(token, ALICE, write=False, offset=0, length=1)


def test_revoke_all(mgr):
    region = mgr.alloc(100)
    other = mgr.alloc(100)
    tokens = [region.grant(ALICE), region.grant(BOB, write=True)]
    keep = other.grant(ALICE)
    region.revoke_all()
    for token, peer in zip(tokens, (ALICE, BOB), strict=True):
        with pytest.raises(AccessDeniedError, match="revoked"):
            mgr.check(token, peer, write=False, offset=0, length=1)
    mgr.check(keep, ALICE, write=False, offset=0, length=1)
    fresh = region.grant(ALICE)  # the region can be granted again
    mgr.check(fresh, ALICE, write=False, offset=0, length=1)


def test_close_region_invalidates(mgr):
    region = mgr.alloc(100)
    token = region.grant(ALICE)
    region.close()
    with pytest.raises(AccessDeniedError, match="unknown or closed"):
        mgr.check(token, ALICE, write=False, offset=0, length=1)
    with pytest.raises(ClosedResourceError):
        region.grant(ALICE)
    region.revoke_all()  # a closed region has nothing left to revoke
    assert region not in mgr.regions


def test_dropped_region_invalidates(mgr):
    region = mgr.alloc(100)
    token = region.grant(ALICE)
    del region
    gc.collect()
    with pytest.raises(AccessDeniedError, match="unknown or closed"):
        mgr.check(token, ALICE, write=False, offset=0, length=1)
    assert mgr.regions == []


def test_expired(mgr, clock):
    region = mgr.alloc(100)
    token = region.grant(ALICE, expires=1.5)
    forever = region.grant(ALICE)
    clock.now += 1.4
    mgr.check(token, ALICE, write=False, offset=0, length=1)
    clock.now += 0.1
    with pytest.raises(AccessDeniedError, match="expired"):
        mgr.check(token, ALICE, write=False, offset=0, length=1)
    clock.now += 1e6
    mgr.check(forever, ALICE, write=False, offset=0, length=1)


def test_expired_grants_do_not_accumulate(mgr, clock):
    region = mgr.alloc(100)
    for _ in range(1000):
        region.grant(ALICE, expires=1)
    clock.now += 2
    for _ in range(300):
        region.grant(ALICE, expires=1)
    assert mgr.live_grants(region) <= 300 + 64


def test_grant_validation(mgr):
    region = mgr.alloc(100)
    with pytest.raises(RegionBoundsError):
        region.grant(ALICE, offset=101)
    with pytest.raises(RegionBoundsError):
        region.grant(ALICE, offset=-1)
    with pytest.raises(RegionBoundsError):
        region.grant(ALICE, offset=50, length=51)
    with pytest.raises(RegionBoundsError):
        region.grant(ALICE, length=-1)
    with pytest.raises(ValueError):
        region.grant(ALICE, read=False, write=False)
    for bad in (0, -1, float("nan"), float("inf"), "10"):
        with pytest.raises(ValueError):
            region.grant(ALICE, expires=bad)
    with pytest.raises(TypeError):
        region.grant(ALICE.to_bytes())
    assert mgr.check(region.grant(ALICE, offset=100), ALICE, write=False, offset=0,
                     length=0) == (region, 100)


def test_forged_mac_every_byte(mgr):
    region = mgr.alloc(100)
    token = region.grant(ALICE, write=True)
    for i in range(len(token)):
        for flip in (0x01, 0x80):
            forged = bytearray(token)
            forged[i] ^= flip
            with pytest.raises(AccessDeniedError):
                mgr.check(bytes(forged), ALICE, write=False, offset=0, length=1)
            with pytest.raises(AccessDeniedError):
                mgr.revoke(bytes(forged))
    mgr.check(token, ALICE, write=True, offset=0, length=100)


def test_escalation_by_editing_fields_fails(mgr):
    region = mgr.alloc(100)
    token = bytearray(region.grant(ALICE, read=True, write=False, offset=0, length=10))
    token[1] |= 2  # claim the write right
    with pytest.raises(AccessDeniedError, match="does not verify"):
        mgr.check(bytes(token), ALICE, write=True, offset=0, length=1)


def test_token_from_another_manager(clock):
    a, b = MemoryManager(clock=clock), MemoryManager(clock=clock)
    region = a.alloc(100)
    token = region.grant(ALICE)
    with pytest.raises(AccessDeniedError, match="does not verify"):
        b.check(token, ALICE, write=False, offset=0, length=1)
    # same secret, but the region is not one of b's
    shared = b"s" * 32
    c, d = MemoryManager(shared), MemoryManager(shared)
    token = c.alloc(100).grant(ALICE)
    with pytest.raises(AccessDeniedError, match="unknown"):
        d.check(token, ALICE, write=False, offset=0, length=1)
    for m in (a, b, c, d):
        m.close()


def test_region_of_another_manager(mgr):
    other = MemoryManager()
    region = other.alloc(10)
    with pytest.raises(AccessError):
        mgr.grant(region, ALICE)
    with pytest.raises(AccessError):
        mgr.revoke_all(region)
    other.close()


@given(st.binary(max_size=300))
@HSET
def test_garbage_tokens_are_access_denied(data):
    mgr = MemoryManager(b"k" * 32)
    with pytest.raises(AccessDeniedError):
        mgr.check(data, ALICE, write=False, offset=0, length=0)
    with pytest.raises(AccessDeniedError):
        mgr.revoke(data)


_MGR = MemoryManager(b"t" * 32)
_REGION = _MGR.alloc(4096)
_TOKEN = _REGION.grant(ALICE, write=True)


@given(st.integers(0, TOKEN_SIZE - 1), st.binary(max_size=40))
@HSET
def test_truncated_or_extended_tokens_are_access_denied(cut, tail):
    token = _TOKEN[:cut] + tail
    if token == _TOKEN:
        return
    with pytest.raises(AccessDeniedError):
        _MGR.check(token, ALICE, write=False, offset=0, length=1)


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers(0, 255))))
@HSET
def test_non_bytes_tokens_are_access_denied(token):
    with pytest.raises(AccessDeniedError):
        _MGR.check(token, ALICE, write=False, offset=0, length=1)


def test_bytes_like_tokens_accepted(mgr):
    region = mgr.alloc(10)
    token = region.grant(ALICE)
    mgr.check(bytearray(token), ALICE, write=False, offset=0, length=1)
    mgr.check(memoryview(token), ALICE, write=False, offset=0, length=1)


def test_manager_close(clock):
    mgr = MemoryManager(clock=clock)
    a, b = mgr.alloc(10), mgr.register(bytearray(10))
    token = a.grant(ALICE)
    assert set(map(id, mgr.regions)) == {id(a), id(b)}
    with mgr:
        pass
    assert mgr.closed and a.closed and b.closed
    with pytest.raises(AccessDeniedError):
        mgr.check(token, ALICE, write=False, offset=0, length=1)
    with pytest.raises(ClosedResourceError):
        mgr.alloc(10)
    with pytest.raises(ClosedResourceError):
        mgr.register(bytearray(1))
    mgr.close()


def test_register_and_grant(mgr):
    buf = bytearray(b"0123456789")
    region = mgr.register(buf)
    token = region.grant(BOB, offset=2, length=4)
    got, off = mgr.check(token, BOB, write=False, offset=1, length=3)
    assert bytes(got.view(off, 3)) == b"345"


def test_secret_validation():
    with pytest.raises(ValueError):
        MemoryManager(b"short")
    MemoryManager(bytearray(16)).close()


def test_hugepage_fallback_is_logged(mgr, caplog):
    with caplog.at_level(logging.DEBUG, logger="fastp2p.memory"):
        region = mgr.alloc(4 << 20, hugepages=True)
    if not region.hugepages:
        assert region.hugepage_fallback_reason in caplog.text
        assert any(r.levelno == logging.WARNING for r in caplog.records)
