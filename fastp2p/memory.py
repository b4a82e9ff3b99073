"""Memory regions and grants: the owner side of remote put/get (DESIGN 5.13).

A :class:`MemoryManager` (one per Host) makes :class:`MemoryRegion` objects,
either pool memory (:meth:`MemoryManager.alloc`) or a pinned user buffer
(:meth:`MemoryManager.register`), keeps a grant table per region, and checks
the capability tokens that remote peers present.

A grant is a capability: ``region.grant(peer, read=, write=, offset=, length=,
expires=)`` returns an opaque token that lets exactly one remote PeerID access
one byte range of one region, with the given rights, until it expires or is
revoked. The owner enforces it in :meth:`MemoryManager.check` when a put/get
arrives over the peer's authenticated connection. Tokens are MAC'd with
HMAC-SHA256 under the manager's 32-byte random secret, so they are unforgeable,
and they name the grantee, so they are useless to any other peer.

Token format, version 1 (120 bytes, integers big-endian)::

    offset size  field
         0    1  version (1)
         1    1  rights: bit 0 read, bit 1 write
         2    2  reserved (0)
         4   16  region_id
        20    4  generation of the region's grant table (bumped by revoke_all)
        24    8  serial of the grant within the region
        32    8  offset of the granted range in the region
        40    8  length of the granted range
        48    8  expiry: nanoseconds on the issuing manager's clock; 0 = never
        56   32  SHA-256 of the grantee PeerID's bytes
        88   32  HMAC-SHA256(secret, b"fastp2p/grant/v1" + bytes 0..88)

Revocation is immediate: a token is valid only while its serial is in the
region's table of live grants for the current generation. ``revoke(token)``
removes one serial, ``revoke_all()`` clears the table and bumps the
generation, and closing (or garbage-collecting) the region drops its table.
The table holds only live grants, so revoked and expired ones cost nothing.

The expiry uses the manager's monotonic clock: a token is only ever checked by
the manager that issued it (a new process has a new secret and new region ids).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import operator
import secrets
import struct
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple

from fastp2p import _accel
from fastp2p._typing import WritableBuffer
from fastp2p.errors import AccessDeniedError, AccessError, ClosedResourceError, RegionBoundsError
from fastp2p.peer import PeerID

__all__ = ["TOKEN_SIZE", "TOKEN_VERSION", "MemoryManager", "MemoryRegion"]

log = logging.getLogger("fastp2p.memory")

MemoryRegion = _accel.MemoryRegion

TOKEN_VERSION = 1
READ = 1
WRITE = 2
_BODY = struct.Struct(">BBH16sIQQQQ32s")
_MAC_SIZE = 32
TOKEN_SIZE = _BODY.size + _MAC_SIZE
_DOMAIN = b"fastp2p/grant/v1"
_U64 = (1 << 64) - 1
_MIN_SWEEP = 64


class _Token(NamedTuple):
    rights: int
    region_id: bytes
    generation: int
    serial: int
    offset: int
    length: int
    expiry: int
    grantee: bytes


class _RegionGrants:
    """The grant table of one region: live serials of the current generation."""

    __slots__ = ("ref", "generation", "next_serial", "live", "sweep_at")

    def __init__(self, ref: weakref.ref[Any]) -> None:
        self.ref = ref
        self.generation = 0
        self.next_serial = 1
        self.live: dict[int, int] = {}  # serial -> expiry (ns, 0 = never)
        self.sweep_at = _MIN_SWEEP


def _grantee_digest(peer: PeerID) -> bytes:
    if not isinstance(peer, PeerID):
        raise TypeError(f"expected a PeerID, not {type(peer).__name__}")
    return hashlib.sha256(peer.to_bytes()).digest()


class MemoryManager:
    """Owns a host's memory regions and their grants (see the module docstring).

    ``secret`` (at least 16 bytes) keys the token MAC; by default 32 random bytes.
    ``clock`` returns seconds on a monotonic clock (tests inject a fake one).
    """

    def __init__(
        self, secret: bytes | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)
        secret = bytes(secret)
        if len(secret) < 16:
            raise ValueError("the grant secret must be at least 16 bytes")
        self._secret = secret
        self._clock = clock
        self._regions: dict[bytes, _RegionGrants] = {}
        self._closed = False
        self._hugepage_warned = False

    # -- regions ---------------------------------------------------------------------

    def alloc(self, nbytes: int, *, hugepages: bool = False) -> Any:
        """A zero-filled region of ``nbytes`` from the pool.

        ``hugepages=True`` asks for huge pages; when none can be had the region
        uses normal pages and the reason is logged (``region.hugepage_fallback_reason``).

        Raises:
            ClosedResourceError: the manager is closed.
            ValueError: ``nbytes`` is negative.
        """
        self._check_open()
        region = _accel.alloc_region(nbytes, hugepages)
        if hugepages and not region.hugepages:
            level = logging.DEBUG if self._hugepage_warned else logging.WARNING
            self._hugepage_warned = True
            log.log(level, "huge pages not used for a %d-byte region: %s", nbytes,
                    region.hugepage_fallback_reason)
        return self._adopt(region)

    def register(self, obj: WritableBuffer) -> Any:
        """Pin ``obj`` (a writable contiguous buffer: bytearray, numpy array, mmap ...).

        Raises:
            ClosedResourceError: the manager is closed.
            TypeError: ``obj`` is not a buffer, or is read-only.
            ValueError: ``obj`` is not contiguous.
        """
        self._check_open()
        return self._adopt(_accel.register_region(obj))

    def _adopt(self, region: Any) -> Any:
        rid = region.region_id
        regions = self._regions

        def forget(ref: weakref.ref[Any], rid: bytes = rid) -> None:
            st = regions.get(rid)
            if st is not None and st.ref is ref:
                del regions[rid]

        region._grants = self
        regions[rid] = _RegionGrants(weakref.ref(region, forget))
        return region

    def _region_closed(self, region: Any) -> None:
        """Called by ``region.close()``: every token of the region dies with it."""
        rid = region.region_id
        st = self._regions.get(rid)
        if st is not None and st.ref() is region:
            del self._regions[rid]

    @property
    def regions(self) -> list[Any]:
        """The open regions this manager made (regions are tracked weakly)."""
        out = []
        for st in list(self._regions.values()):
            region = st.ref()
            if region is not None and not region.closed:
                out.append(region)
        return out

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every region (memory under live views or leases is freed later)."""
        if self._closed:
            return
        self._closed = True
        for region in self.regions:
            region.close()
        self._regions.clear()

    def __enter__(self) -> MemoryManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError("memory manager is closed")

    def _table(self, region: Any) -> _RegionGrants:
        st = self._regions.get(getattr(region, "region_id", b""))
        if st is None or st.ref() is not region:
            if getattr(region, "closed", False):
                raise ClosedResourceError("memory region is closed")
            raise AccessError("this region does not belong to this MemoryManager")
        return st

    # -- grants ----------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock() * 1e9)

    def grant(
        self,
        region: Any,
        peer: PeerID,
        *,
        read: bool = True,
        write: bool = False,
        offset: int = 0,
        length: int | None = None,
        expires: float | None = None,
    ) -> bytes:
        """A token letting ``peer`` access ``[offset, offset + length)`` of ``region``.

        ``length`` defaults to the rest of the region; ``expires`` is a lifetime in
        seconds (None: until revoked or the region is closed).

        Raises:
            TypeError: ``peer`` is not a PeerID.
            ValueError: neither read nor write, or ``expires`` not positive.
            RegionBoundsError: the range is not inside the region.
            ClosedResourceError: the region or the manager is closed.
            AccessError: the region belongs to another manager (or none).
        """
        self._check_open()
        grantee = _grantee_digest(peer)
        st = self._table(region)
        if region.closed:
            raise ClosedResourceError("memory region is closed")
        if not (read or write):
            raise ValueError("a grant needs read and/or write")
        offset = operator.index(offset)
        nbytes = region.nbytes
        if not 0 <= offset <= nbytes:
            raise RegionBoundsError(f"offset {offset} outside a {nbytes}-byte region")
        length = nbytes - offset if length is None else operator.index(length)
        if not 0 <= length <= nbytes - offset:
            raise RegionBoundsError(
                f"range [{offset}, {offset} + {length}) outside a {nbytes}-byte region"
            )
        expiry = 0
        now = self._now()
        if expires is not None:
            if not (isinstance(expires, (int, float)) and math.isfinite(expires) and expires > 0):
                raise ValueError(f"expires must be a positive number of seconds, not {expires!r}")
            expiry = min(max(now + int(expires * 1e9), 1), _U64)
        serial = st.next_serial
        st.next_serial += 1
        if len(st.live) >= st.sweep_at:
            self._sweep(st, now)
        st.live[serial] = expiry
        rights = (READ if read else 0) | (WRITE if write else 0)
        body = _BODY.pack(
            TOKEN_VERSION, rights, 0, region.region_id, st.generation, serial,
            offset, length, expiry, grantee,
        )
        return body + self._mac(body)

    @staticmethod
    def _sweep(st: _RegionGrants, now: int) -> None:
        for serial in [s for s, e in st.live.items() if e and now >= e]:
            del st.live[serial]
        st.sweep_at = max(_MIN_SWEEP, 2 * len(st.live))

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, _DOMAIN + body, hashlib.sha256).digest()

    def _parse(self, token: object) -> _Token:
        """Decode and authenticate ``token``; AccessDeniedError for anything else."""
        if not isinstance(token, (bytes, bytearray, memoryview)):
            raise AccessDeniedError(f"a grant token is bytes, not {type(token).__name__}")
        try:
            raw = bytes(token)
        except (TypeError, ValueError, BufferError):
            raise AccessDeniedError("malformed grant token") from None
        if len(raw) != TOKEN_SIZE:
            raise AccessDeniedError(
                f"malformed grant token ({len(raw)} bytes, expected {TOKEN_SIZE})"
            )
        if raw[0] != TOKEN_VERSION:
            raise AccessDeniedError(f"unsupported grant token version {raw[0]}")
        body, mac = raw[: _BODY.size], raw[_BODY.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise AccessDeniedError(
                "grant token does not verify (forged, altered, or issued by another host)"
            )
        _v, rights, _r, rid, gen, serial, off, length, expiry, grantee = _BODY.unpack(body)
        return _Token(rights, rid, gen, serial, off, length, expiry, grantee)

    def check(
        self, token: bytes, requester: PeerID, *, write: bool, offset: int, length: int
    ) -> tuple[Any, int]:
        """Authorise ``requester`` to read (or write) ``length`` bytes at ``offset``.

        ``offset`` is relative to the start of the granted range. Returns the
        region and the absolute offset of the range in it.

        Raises:
            AccessDeniedError: the token is malformed, forged, for another peer,
                revoked, expired, for an unknown or closed region, or lacks the right.
            RegionBoundsError: the range lies outside the granted range.
        """
        if self._closed:
            raise AccessDeniedError("memory manager is closed")
        tok = self._parse(token)
        if not hmac.compare_digest(tok.grantee, _grantee_digest(requester)):
            raise AccessDeniedError("grant token was issued to another peer")
        st = self._regions.get(tok.region_id)
        region = st.ref() if st is not None else None
        if st is None or region is None or region.closed:
            raise AccessDeniedError("grant token refers to an unknown or closed region")
        if tok.generation != st.generation or tok.serial not in st.live:
            raise AccessDeniedError("grant token was revoked")
        if tok.expiry and self._now() >= tok.expiry:
            st.live.pop(tok.serial, None)
            raise AccessDeniedError("grant token expired")
        if write and not tok.rights & WRITE:
            raise AccessDeniedError("grant token does not allow writing")
        if not write and not tok.rights & READ:
            raise AccessDeniedError("grant token does not allow reading")
        offset = operator.index(offset)
        length = operator.index(length)
        if offset < 0 or length < 0 or offset + length > tok.length:
            raise RegionBoundsError(
                f"range [{offset}, {offset} + {length}) outside the {tok.length} granted bytes"
            )
        if tok.offset + tok.length > region.nbytes:  # cannot happen: checked at grant time
            raise RegionBoundsError("granted range lies outside the region")
        return region, tok.offset + offset

    verify = check

    def revoke(self, token: bytes, *, region: Any = None) -> None:
        """Invalidate ``token`` now (a no-op if it is already dead).

        Raises:
            AccessDeniedError: the token is malformed or was not issued here.
            ValueError: ``region`` is given and the token belongs to another region.
        """
        tok = self._parse(token)
        if region is not None and tok.region_id != region.region_id:
            raise ValueError("the token belongs to another region")
        st = self._regions.get(tok.region_id)
        if st is not None and tok.generation == st.generation:
            st.live.pop(tok.serial, None)

    def revoke_all(self, region: Any) -> None:
        """Invalidate every token of ``region`` now.

        Raises:
            AccessError: the region belongs to another manager.
        """
        if region.closed:
            return  # closing already dropped its grants
        st = self._table(region)
        st.generation = (st.generation + 1) & 0xFFFFFFFF
        st.live.clear()

    def live_grants(self, region: Any) -> int:
        """Grants of ``region`` that are neither revoked nor known to have expired."""
        st = self._regions.get(region.region_id)
        return 0 if st is None else len(st.live)
