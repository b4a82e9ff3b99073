"""Shared-memory rings (fastp2p._native.shm over csrc/fp_ring.c).

A hostile peer is played by a second mapping of the same memfd
(``mmap.mmap(fd, ...)``) that scribbles over the shared header.
"""

from __future__ import annotations

import fcntl
import gc
import mmap
import multiprocessing
import os
import select
import socket
import struct
import threading
import time
import zlib

import pytest

from fastp2p._accel import HAVE_NATIVE
from fastp2p.errors import ClosedResourceError, ShmRingError

pytestmark = pytest.mark.skipif(
    not HAVE_NATIVE,
    reason="the shared-memory ring needs the native core (FASTP2P_NO_EXTENSIONS=1 build)",
)

if HAVE_NATIVE:
    from fastp2p._native.shm import PAGE_SIZE, ShmSegment

# Header byte offsets (fp_ring.h FP_RING_OFF_*): FP_RING_LINE = 128.
LINE = 128
OFF_MAGIC, OFF_VERSION, OFF_CAP0, OFF_CAP1 = 0, 8, 16, 24


def off_head(ring: int) -> int:
    return LINE * (1 + 4 * ring)


def off_tail(ring: int) -> int:
    return off_head(ring) + LINE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def shm_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum("memfd:fastp2p-shm" in line for line in f)


@pytest.fixture
def pair():
    a = ShmSegment.create(PAGE_SIZE * 2)
    b = ShmSegment.attach(a.fd)
    yield a, b
    a.close()
    b.close()


def test_roles_and_properties(pair):
    a, b = pair
    assert a.is_creator and not b.is_creator
    assert a.capacity == b.capacity == PAGE_SIZE * 2
    assert a.fd != b.fd and a.fd >= 0
    assert a.writer.free == a.writer.capacity == PAGE_SIZE * 2
    assert b.reader.readable == 0 and len(b.reader.peek()) == 0
    assert not a.closed


def test_round_trip_wrap_around(pair):
    a, b = pair
    cap = a.capacity
    pos_w = pos_r = 0
    stream = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(1 << 16))

    def chunk(pos: int, n: int) -> bytes:
        return bytes(stream[(pos + i) % len(stream)] for i in range(n))

    for n in [1000, 3000, cap - 1, 17, cap, 4095, 5000, 1, cap + 10] * 4:
        data = chunk(pos_w, n)
        k = a.writer.write(data)
        assert k == min(n, cap - (pos_w - pos_r))
        pos_w += k
        v = b.reader.peek()
        assert v.readonly and v.contiguous and len(v) == pos_w - pos_r
        assert bytes(v) == chunk(pos_r, len(v))
        half = len(v) // 2 if n % 2 else len(v)
        v.release()
        assert b.reader.consume(half) is False
        pos_r += half
    assert pos_w > 8 * cap  # wrapped many times


def test_list_of_buffers_stops_mid_buffer(pair):
    a, b = pair
    assert a.writer.write([b"ab", bytearray(b"cd"), memoryview(b"xefghx")[1:5]]) == 8
    assert a.writer.write((b"", b"ij")) == 2
    assert a.writer.write([]) == 0
    assert bytes(b.reader.peek()) == b"abcdefghij"
    assert b.reader.consume(10) is False
    cap = a.capacity
    bufs = [b"x" * 1000] * (cap // 1000 + 2)
    assert a.writer.write(bufs) == cap
    assert a.writer.free == 0 and a.writer.write(b"more") == 0
    v = b.reader.peek()
    assert len(v) == cap and bytes(v) == b"x" * cap
    del v
    many = [b"%d," % i for i in range(300)]  # more than one C batch of buffers
    assert b.reader.consume(cap) is False
    assert a.writer.write(many) == sum(map(len, many))
    assert bytes(b.reader.peek()) == b"".join(many)


def test_large_write_releases_gil():
    with ShmSegment.create(1 << 20) as a, ShmSegment.attach(a.fd) as b:
        big = os.urandom(900_000)
        assert a.writer.write([memoryview(big)[:500_000], memoryview(big)[500_000:]]) == len(big)
        assert bytes(b.reader.peek()) == big
        assert b.reader.consume(len(big)) is False
        assert a.writer.write(big) == len(big)
        assert a.writer.write(big) == (1 << 20) - len(big)


def test_bad_arguments(pair):
    a, b = pair
    for cap in (0, -4096, 4095, 3 * PAGE_SIZE, 1 << 30, PAGE_SIZE // 2):
        with pytest.raises(ValueError):
            ShmSegment.create(cap)
    with pytest.raises(TypeError):
        ShmSegment.create(4096.0)
    with pytest.raises(TypeError):
        ShmSegment()
    with pytest.raises(ValueError):
        b.reader.consume(-1)
    a.writer.write(b"abc")
    with pytest.raises(ValueError):
        b.reader.consume(4)
    with pytest.raises(ValueError):
        b.reader.spin(-1)
    with pytest.raises(TypeError):
        a.writer.write(12)
    with pytest.raises(TypeError):
        a.writer.write([b"ok", 12])
    with pytest.raises(BufferError):
        memoryview(b.reader)
    assert b.reader.consume(3) is False


def test_wake_protocol(pair):
    a, b = pair
    assert a.writer.wake_needed() is False
    assert b.reader.arm() is False  # armed: empty
    a.writer.write(b"x")
    assert a.writer.wake_needed() is True
    assert a.writer.wake_needed() is False
    assert b.reader.arm() is True  # data readable: don't sleep
    assert a.writer.wake_needed() is False
    a.writer.write(b"y" * a.capacity)
    assert a.writer.arm_space() is False  # full: armed
    assert b.reader.consume(1) is True
    assert b.reader.consume(1) is False
    assert a.writer.arm_space() is True


def test_spin():
    with ShmSegment.create() as a, ShmSegment.attach(a.fd) as b:
        t0 = time.monotonic()
        assert b.reader.spin(2_000_000) == 0
        assert time.monotonic() - t0 >= 0.0019
        timer = threading.Timer(0.01, a.writer.write, args=(b"hello",))
        timer.start()
        assert b.reader.spin(5_000_000_000) == 5  # returns as soon as data lands
        timer.join()
        assert b.reader.spin(0) == 5


def test_hostile_head_raises_and_sticks(pair):
    a, b = pair
    peer = mmap.mmap(a.fd, PAGE_SIZE)
    a.writer.write(b"z" * 100)
    assert b.reader.readable == 100
    struct.pack_into("<Q", peer, off_head(0), 100 + a.capacity + 1)  # beyond tail + cap
    with pytest.raises(ShmRingError):
        b.reader.peek()
    struct.pack_into("<Q", peer, off_head(0), 100)  # restoring it does not help
    for op in (b.reader.peek, b.reader.arm, lambda: b.reader.readable, lambda: b.reader.spin(10)):
        with pytest.raises(ShmRingError):
            op()
    with pytest.raises(ShmRingError):
        b.reader.consume(0)
    # the other direction is unaffected
    b.writer.write(b"still fine")
    assert bytes(a.reader.peek()) == b"still fine"
    peer.close()


@pytest.mark.parametrize("head", [2**64 - 1, 2**63, 49])
def test_hostile_head_values(pair, head):
    a, b = pair
    a.writer.write(b"q" * 100)
    b.reader.peek()
    b.reader.consume(50)  # tail 50, head seen 100
    with mmap.mmap(a.fd, PAGE_SIZE) as peer:
        struct.pack_into("<Q", peer, off_head(0), head)
        with pytest.raises(ShmRingError):
            b.reader.peek()


@pytest.mark.parametrize("tail", [101, 2**63, 2**64 - 1, 49])
def test_hostile_tail(pair, tail):
    a, b = pair
    a.writer.write(b"q" * 100)
    b.reader.consume(0)
    b.reader.peek()
    b.reader.consume(50)
    assert a.writer.free == a.capacity - 50
    with mmap.mmap(a.fd, PAGE_SIZE) as peer:
        struct.pack_into("<Q", peer, off_tail(0), tail)
        with pytest.raises(ShmRingError):
            a.writer.write(b"more")
        struct.pack_into("<Q", peer, off_tail(0), 50)
        with pytest.raises(ShmRingError):
            _ = a.writer.free
        with pytest.raises(ShmRingError):
            a.writer.arm_space()


def test_hostile_header_scribble_after_attach_is_ignored(pair):
    a, b = pair
    with mmap.mmap(a.fd, PAGE_SIZE) as peer:
        peer[0:32] = os.urandom(32)  # magic, version, capacities: read once, never again
        struct.pack_into("<I", peer, off_head(0) + 2 * LINE, 0xDEADBEEF)  # sleeping flag
        assert a.writer.write(b"data") == 4
        assert a.writer.wake_needed() is True  # a spurious wake, nothing worse
        assert bytes(b.reader.peek()) == b"data"
        assert a.writer.free == a.capacity - 4


def _memfd(data: bytes, size: int, seals: int) -> int:
    fd = os.memfd_create("hostile", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, max(size, len(data)))
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def test_attach_rejects_bad_segments():
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
    with ShmSegment.create(PAGE_SIZE) as good:
        header = os.pread(good.fd, PAGE_SIZE, 0)
    size = 3 * PAGE_SIZE
    fds_before = open_fds()

    def bad(data: bytes, size: int = size, seals: int = seals) -> None:
        fd = _memfd(data, size, seals)
        try:
            with pytest.raises((ShmRingError, ValueError)):
                ShmSegment.attach(fd)
        finally:
            os.close(fd)

    fd = _memfd(header, size, seals)
    ShmSegment.attach(fd).close()  # the control case attaches
    os.close(fd)
    bad(os.urandom(PAGE_SIZE))
    bad(b"\0" * PAGE_SIZE)
    bad(b"fp2pring" + header[8:12].replace(b"\x01", b"\x02") + header[12:])
    bad(header[:OFF_CAP0] + struct.pack("<QQ", 3 * PAGE_SIZE, PAGE_SIZE) + header[32:])
    bad(header[:OFF_CAP0] + struct.pack("<QQ", 1 << 40, 1 << 40) + header[32:])
    bad(header[:OFF_CAP0] + struct.pack("<QQ", 0, PAGE_SIZE) + header[32:])
    bad(header, size=size - 1)  # truncated
    bad(header, size=PAGE_SIZE)
    bad(header[:20], size=20)
    bad(b"", size=0)
    bad(header, seals=0)  # unsealed: the peer could shrink it under us (SIGBUS)
    bad(header, seals=seals | fcntl.F_SEAL_WRITE)
    r, w = os.pipe()
    with pytest.raises(ShmRingError):
        ShmSegment.attach(r)  # not a memfd
    os.close(r)
    os.close(w)
    with pytest.raises(ValueError):
        ShmSegment.attach(-1)
    with pytest.raises(OSError):
        ShmSegment.attach(r)  # closed
    assert open_fds() == fds_before


def test_close_defers_unmap_while_a_view_lives():
    gc.collect()
    maps_before = shm_maps()
    a = ShmSegment.create(PAGE_SIZE)
    b = ShmSegment.attach(a.fd)
    a.writer.write(b"survives close")
    a.close()
    v = b.reader.peek()
    w = v[3:]  # a slice shares the export
    b.close()
    b.close()  # idempotent
    assert b.closed
    with pytest.raises(ClosedResourceError):
        b.reader.peek()
    with pytest.raises(ClosedResourceError):
        b.writer.write(b"x")
    with pytest.raises(ClosedResourceError):
        _ = b.fd
    assert bytes(v) == b"survives close"  # still mapped
    assert shm_maps() > maps_before
    v.release()
    assert bytes(w) == b"vives close"
    del w
    assert shm_maps() == maps_before  # unmapped as the last export went


def test_no_fd_or_mapping_leak():
    gc.collect()
    fds, maps = open_fds(), shm_maps()
    for _ in range(20):
        with ShmSegment.create(PAGE_SIZE) as a:
            b = ShmSegment.attach(a.fd)
            a.writer.write(b"x")
            assert b.reader.consume(1) is False
            del b  # unclosed: freed by refcount, fd and mapping with it
    assert open_fds() == fds and shm_maps() == maps


# --- a real second process -------------------------------------------------

ECHO_BYTES = 64 << 20


def _wait(efd: int) -> None:
    ready, _, _ = select.select([efd], [], [], 20)
    if not ready:
        raise TimeoutError("lost wakeup")
    os.eventfd_read(efd)


def _echo_child(sock: socket.socket, nbytes: int) -> None:
    _, fds, _, _ = socket.recv_fds(sock, 16, 3)
    memfd, my_efd, peer_efd = fds
    seg = ShmSegment.attach(memfd)
    os.close(memfd)
    sock.sendall(b"R")
    r, w = seg.reader, seg.writer
    crc = moved = 0
    while moved < nbytes:
        v = r.peek()
        if len(v):
            k = w.write(v)  # ring to ring, one copy
            if k:
                crc = zlib.crc32(v[:k], crc)
            v.release()
            if k:
                moved += k
                woke = r.consume(k)
                if w.wake_needed() or woke:
                    os.eventfd_write(peer_efd, 1)
            elif not w.arm_space():
                _wait(my_efd)
            continue
        v.release()
        if r.spin(50_000) or r.arm():
            continue
        _wait(my_efd)
    sock.sendall(struct.pack("!IQ", crc, moved))
    seg.close()
    os.close(my_efd)
    os.close(peer_efd)


def test_two_process_echo_64mib():
    src = os.urandom(ECHO_BYTES)
    want_crc = zlib.crc32(src)
    ctx = multiprocessing.get_context("spawn")
    parent_sock, child_sock = socket.socketpair()
    seg = ShmSegment.create(1 << 20)
    my_efd = os.eventfd(0, os.EFD_CLOEXEC)
    child_efd = os.eventfd(0, os.EFD_CLOEXEC)
    proc = ctx.Process(target=_echo_child, args=(child_sock, ECHO_BYTES))
    proc.start()
    try:
        child_sock.close()
        socket.send_fds(parent_sock, [b"shm"], [seg.fd, child_efd, my_efd])
        parent_sock.settimeout(60)
        assert parent_sock.recv(1) == b"R"  # attached: time the transfer only
        r, w = seg.reader, seg.writer
        view = memoryview(src)
        sent = got = 0
        crc = 0
        t0 = time.perf_counter()
        while got < ECHO_BYTES:
            progressed = False
            if sent < ECHO_BYTES:
                k = w.write(view[sent : sent + (256 << 10)])
                if k:
                    sent += k
                    progressed = True
                    if w.wake_needed():
                        os.eventfd_write(child_efd, 1)
            v = r.peek()
            n = len(v)
            if n:
                crc = zlib.crc32(v, crc)
                if got == 0:
                    assert v[:64] == view[:64]
                v.release()
                got += n
                progressed = True
                if r.consume(n):
                    os.eventfd_write(child_efd, 1)
            else:
                v.release()
            if progressed or r.spin(50_000):
                continue
            if r.arm() or (sent < ECHO_BYTES and w.arm_space()):
                continue
            _wait(my_efd)
        elapsed = time.perf_counter() - t0
        child_crc, moved = struct.unpack("!IQ", parent_sock.recv(12, socket.MSG_WAITALL))
        proc.join(30)
        assert proc.exitcode == 0
        assert moved == ECHO_BYTES
        assert child_crc == want_crc and crc == want_crc
        print(
            f"\nshm echo: {ECHO_BYTES >> 20} MiB each way in {elapsed:.3f} s, "
            f"{ECHO_BYTES / elapsed / 1e9:.2f} GB/s round trip"
        )
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        seg.close()
        parent_sock.close()
        os.close(my_efd)
        os.close(child_efd)
        proc.close()
