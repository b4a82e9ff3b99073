"""The same-host shared-memory data path end to end (issue 6 §4).

Peers run in spawned child processes (``tests/integration/shm_peer.py``) for
the bulk transfers and the kill -9 test; the hand-off socket attacker is a
separate ``python -c`` process; the hostile-ring and fallback tests run both
hosts in this process. put/get across processes is in ``test_regions.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import mmap
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fastp2p
from fastp2p.config import HostConfig, ShmConfig
from fastp2p.errors import ConnectionClosedError, RemoteProtocolError, ShmRingError
from fastp2p.proto import shm as msgs
from fastp2p.proto.shm import Kind, ShmMessage
from fastp2p.services import serve_echo
from fastp2p.testing import host_pair
from fastp2p.transport import shm

np = pytest.importorskip("numpy", reason="numpy is in bench/requirements.txt, not [test]")

from tests.integration.shm_peer import (  # noqa: E402
    SINK,
    SOURCE,
    STALL,
    Child,
    RegionControl,
    crc,
    pattern,
    readinto_exactly,
)

SHM_OK, SHM_WHY = shm.available()
# Every test here needs the native core but the pure-build checks at the end.
needs_shm = pytest.mark.skipif(not SHM_OK, reason=SHM_WHY)

MiB = 1 << 20
GiB = 1 << 30
LISTEN = "/ip4/127.0.0.1/tcp/0"
ECHO = "/echo/1.0.0"
PAGE = mmap.PAGESIZE
# csrc/fp_ring.h: FP_RING_LINE and the control-block offsets of ring i.
RING_LINE = 128


def _off_head(i: int) -> int:
    return RING_LINE * (1 + 4 * i)


def _off_tail(i: int) -> int:
    return _off_head(i) + RING_LINE


# -- process-state probes ------------------------------------------------------------


def open_fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


def ring_fds() -> list[str]:
    """fds that are fastp2p ring memfds (csrc/fp_ring.c names them ``fastp2p-shm``)."""
    return [t for t in open_fds().values() if "fastp2p-shm" in t]


def ring_maps() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if "fastp2p-shm" in line]


def thread_ids() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


async def settle_resources(fds_before: dict[int, str], timeout: float = 3.0) -> None:
    """Wait (bounded) until fds are back to ``fds_before`` and no ring is mapped."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = open_fds()
        leaked = {fd: t for fd, t in now.items() if fds_before.get(fd) != t}
        maps = ring_maps()
        if (not leaked and not maps) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert not leaked, f"leaked fds: {leaked}"
    assert not maps, f"ring mappings left: {maps}"


async def wait_path(
    host: fastp2p.Host, peer: fastp2p.PeerID, want: str = "shm", timeout: float = 3.0
):
    """The host's connection to ``peer`` once its data path is ``want`` (bounded poll)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = host.connection(peer)
        if conn is not None and conn.data_path == want:
            return conn
        if time.monotonic() > deadline:
            got = None if conn is None else (conn.data_path, conn.data_path_reason)
            raise AssertionError(f"connection to {peer} not on {want!r} after {timeout} s: {got}")
        await asyncio.sleep(0.01)


async def echo_check(host: fastp2p.Host, peer: fastp2p.PeerID, nbytes: int = 256 * 1024) -> None:
    data = os.urandom(nbytes)
    s = await host.open_stream(peer, ECHO)

    async def send() -> None:
        await s.write(data)
        await s.close_write()

    t = asyncio.create_task(send())
    got = await s.read()
    await t
    await s.aclose()
    assert got == data


@pytest.fixture(scope="module")
def child():
    c = Child()
    yield c
    c.stop()


# -- 1 GiB through a stream, both directions, separate processes ----------------------


async def _send_to_sink(host: fastp2p.Host, peer: fastp2p.PeerID, nbytes: int) -> None:
    src = pattern(nbytes, 11)
    want = crc(src)
    s = await host.open_stream(peer, SINK)
    await s.write(struct.pack(">Q", nbytes))
    view = memoryview(src)
    for i in range(0, nbytes, MiB):
        await s.write(view[i : i + MiB])
    got, got_crc = struct.unpack(">QI", await s.readexactly(12))
    await s.aclose()
    assert got == nbytes
    assert got_crc == want


async def _read_from_source(host: fastp2p.Host, peer: fastp2p.PeerID, nbytes: int) -> None:
    seed = 23
    dst = np.empty(nbytes, dtype=np.uint8)
    s = await host.open_stream(peer, SOURCE)
    await s.write(struct.pack(">QQQ", nbytes, seed, MiB))
    got = await readinto_exactly(s, memoryview(dst))
    assert got == nbytes
    assert await s.read(1) == b""  # EOF right after the last byte
    await s.aclose()
    want = pattern(nbytes, seed)
    assert crc(dst) == crc(want)
    assert np.array_equal(dst[:MiB], want[:MiB]) and np.array_equal(dst[-MiB:], want[-MiB:])


@needs_shm
@pytest.mark.parametrize(
    ("dialer", "flow", "nbytes"),
    [
        pytest.param("parent", "to_child", GiB, id="parent_dials-to_child-1GiB"),
        pytest.param("child", "to_parent", GiB, id="child_dials-to_parent-1GiB"),
        pytest.param("parent", "to_parent", 64 * MiB, id="parent_dials-to_parent-64MiB"),
        pytest.param("child", "to_child", 64 * MiB, id="child_dials-to_child-64MiB"),
    ],
)
async def test_bulk_numpy_readinto_across_processes(
    child: Child, dialer: str, flow: str, nbytes: int
) -> None:
    async with fastp2p.Host(listen=[LISTEN]) as host:
        if dialer == "parent":
            peer = await host.connect(child.addr)
            assert host.connection(peer).data_path == "shm", host.connection(peer).data_path_reason
            path, reason = await child.wait_state(host.peer_id, "shm")
            assert path == "shm", reason
        else:
            _tag, path, reason = await child.call("dial", str(host.full_addrs[0]))
            assert path == "shm", reason
            peer = child.peer_id
            conn = await wait_path(host, peer)
            assert conn.statistics()["data_path"] == "shm"
        conn = host.connection(peer)
        assert conn.peer_process == child.pid  # learnt from SO_PEERCRED
        if flow == "to_child":
            await _send_to_sink(host, peer, nbytes)
        else:
            await _read_from_source(host, peer, nbytes)
        assert conn.data_path == "shm"
        stats = conn._rx.statistics()
        assert stats["bytes_received"] > 0 and conn._tx.statistics()["bytes_sent"] > 0


# -- kill -9 of the peer mid-transfer ----------------------------------------------------


@needs_shm
@pytest.mark.parametrize("dialer", ["parent", "child"])
async def test_kill9_mid_transfer_fails_every_pending_op_without_leaks(dialer: str) -> None:
    c = Child()
    try:
        gc.collect()
        fds0 = open_fds()
        threads0 = thread_ids()
        async with fastp2p.Host(listen=[LISTEN]) as host:
            if dialer == "parent":
                peer = await host.connect(c.addr)
            else:
                _tag, path, reason = await c.call("dial", str(host.full_addrs[0]))
                assert path == "shm", reason
                peer = c.peer_id
            conn = await wait_path(host, peer)
            assert ring_fds() and ring_maps()

            ctl = await RegionControl.open(host, peer)
            await ctl(op="alloc", name="r", size=4 * MiB)
            wtoken = await ctl.grant("r", write=True, read=False)
            rtoken = await ctl.grant("r")
            await ctl(op="stall_regions")  # the owner never answers from now on
            local = host.alloc(4 * MiB)

            # 1. a big write in progress into a sink that keeps reading
            sink = await host.open_stream(peer, SINK)
            await sink.write(struct.pack(">Q", GiB))
            chunk = memoryview(bytes(MiB))
            sent = 0

            async def big_write() -> None:
                nonlocal sent
                for _ in range(1024):
                    await sink.write(chunk)
                    sent += MiB

            # 2. a pending readinto, 3. a write blocked on a peer that does not read
            idle = await host.open_stream(peer, STALL)
            stuck = await host.open_stream(peer, STALL)
            buf = bytearray(4096)
            ops = {
                "big_write": asyncio.create_task(big_write()),
                "readinto": asyncio.create_task(idle.readinto(buf)),
                "blocked_write": asyncio.create_task(stuck.write(bytes(16 * MiB))),
                # 4. a pending put and get (the owner stalls)
                "put": asyncio.create_task(conn.put(local, wtoken)),
                "get": asyncio.create_task(conn.get(local, rtoken, length=MiB)),
                "closed": asyncio.ensure_future(conn.closed),
            }
            async with asyncio.timeout(20):
                while sent < 32 * MiB:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in ops.values()), {
                k: t for k, t in ops.items() if t.done()
            }

            c.kill()
            t0 = time.monotonic()
            done, pending = await asyncio.wait(ops.values(), timeout=2.0)
            elapsed = time.monotonic() - t0
            assert not pending, (
                f"still pending 2 s after kill -9: {[k for k, t in ops.items() if t in pending]}"
            )
            assert elapsed < 2.0
            for name, task in ops.items():
                if name == "closed":
                    continue
                exc = task.exception()
                assert isinstance(exc, ConnectionClosedError), f"{name}: {exc!r}"
            assert conn.is_closed and host.connection(peer) is None
            with pytest.raises(ConnectionClosedError):
                await conn.put(local, wtoken)
            local.close()
        c.proc.join(5)
        assert c.proc.exitcode == -signal.SIGKILL
        await settle_resources(fds0)
        deadline = time.monotonic() + 2
        while thread_ids() - threads0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not thread_ids() - threads0, [
            t.name for t in threading.enumerate() if t.ident not in threads0
        ]
    finally:
        c.stop()


# -- a hostile peer scribbling over the ring header ---------------------------------------

HOSTILE = ["head_beyond_capacity", "head_behind_tail", "head_max_u64", "garbage_frame"]


@needs_shm
@pytest.mark.parametrize("victim_side", ["listener", "dialer"])
@pytest.mark.parametrize("garbage", HOSTILE)
async def test_hostile_ring_header_closes_only_that_connection(
    garbage: str, victim_side: str
) -> None:
    """The peer's end is played by a second mapping of the victim's memfd that
    scribbles over the header (or writes a well-indexed garbage frame)."""
    async with host_pair() as (a1, b1, p1), host_pair() as (a2, b2, p2):
        for h in (a1, b1, a2, b2):
            serve_echo(h)
        lconn = await wait_path(b1, a1.peer_id)
        dconn = await wait_path(a1, p1)
        victim, other_end = (lconn, dconn) if victim_side == "listener" else (dconn, lconn)
        bystander = await wait_path(b2, a2.peer_id)
        # a pending read on the victim's side
        if victim_side == "listener":
            s = await b1.open_stream(a1.peer_id, ECHO)
        else:
            s = await a1.open_stream(p1, ECHO)
        pending = asyncio.create_task(s.readinto(bytearray(100)))
        await asyncio.sleep(0.01)

        rx = victim._rx
        seg = rx.segment
        ring = 1 if seg.is_creator else 0  # the ring this side consumes
        assert seg.is_creator is (victim_side == "dialer")
        cap = seg.capacity
        with mmap.mmap(seg.fd, PAGE + 2 * cap) as m:
            head = struct.unpack_from("<Q", m, _off_head(ring))[0]
            tail = struct.unpack_from("<Q", m, _off_tail(ring))[0]
            if garbage == "head_beyond_capacity":
                new = (tail + cap + 1) % (1 << 64)
            elif garbage == "head_behind_tail":
                new = (tail - 1) % (1 << 64)
            elif garbage == "head_max_u64":
                new = (1 << 64) - 1
            else:
                # a well-indexed frame of garbage: yamux version 0xff
                at = PAGE + ring * cap + (head & (cap - 1))
                m[at : at + 12] = b"\xff" * 12
                new = head + 12
            struct.pack_into("<Q", m, _off_head(ring), new)
        os.eventfd_write(rx._my_efd, 1)  # wake the consumer

        async with asyncio.timeout(2):
            await victim.closed
            await other_end.closed
        with pytest.raises(ConnectionClosedError) as ei:
            victim.check_open()
        cause = ei.value.__cause__
        if garbage == "garbage_frame":
            assert isinstance(cause, RemoteProtocolError), repr(cause)
        else:
            assert isinstance(cause, ShmRingError), repr(cause)
        with pytest.raises(ConnectionClosedError):
            await pending
        # the other connection in this process is untouched
        assert bystander.data_path == "shm" and not bystander.is_closed
        await echo_check(a2, p2, 1 * MiB)
        await echo_check(b2, a2.peer_id, 64 * 1024)
        # and the hosts can connect again
        await a1.connect(b1.full_addrs[0])
        await wait_path(a1, p1)
        await echo_check(a1, p1)


@needs_shm
async def test_hostile_wakeup_flags_and_static_header_are_harmless() -> None:
    """Scribbling over the armed-wakeup flags, magic and capacities after attach
    may cost spurious wake-ups but never a crash, a hang or corrupted data."""
    async with host_pair() as (a, b, peer):
        serve_echo(b)
        conn = await wait_path(a, peer)
        await wait_path(b, a.peer_id)
        seg = conn._rx.segment
        with mmap.mmap(seg.fd, PAGE) as m:
            for ring in (0, 1):
                for off in (_off_tail(ring) + RING_LINE, _off_tail(ring) + 2 * RING_LINE):
                    struct.pack_into("<Q", m, off, 0xDEADBEEFDEADBEEF)
            m[0:32] = os.urandom(32)  # magic, version, capacities
        for _ in range(3):
            await echo_check(a, peer, 2 * MiB)
        assert not conn.is_closed and conn.data_path == "shm"


# -- a third local process on the hand-off socket -----------------------------------------

ATTACKER = textwrap.dedent(
    """
    import json, os, socket, sys, time
    req = json.loads(sys.stdin.readline())
    name = bytes.fromhex(req["name"])
    want = "@" + name[1:].decode()
    seen, found = False, []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not seen:
        with open("/proc/net/unix") as f:
            rows = [r.split() for r in f.read().splitlines()[1:]]
        found = [r[-1] for r in rows if len(r) >= 8 and r[-1].startswith("@fastp2p-shm-")]
        seen = want in found
        if not seen:
            time.sleep(0.002)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b"\\0" + want[1:].encode())
    if req["mode"] == "wrong":
        s.sendall(os.urandom(32))
    print(json.dumps({"seen": seen, "found": found}), flush=True)
    s.settimeout(req["wait"])
    try:
        msg, fds, _flags, _addr = socket.recv_fds(s, 16, 4)
        out = {"bytes": msg.hex(), "nfds": len(fds)}
    except (socket.timeout, OSError) as exc:
        out = {"error": repr(exc), "nfds": 0}
    print(json.dumps(out), flush=True)
    """
)


@needs_shm
@pytest.mark.parametrize("mode", ["wrong", "silent"])
async def test_third_process_on_handoff_socket_gets_nothing(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A separate local process finds the abstract hand-off socket in
    /proc/net/unix and connects before the legitimate peer (made deterministic
    by holding the listener's connect until the attacker is in). ``wrong``:
    it sends 32 random bytes; ``silent``: it sends nothing. It must get no fd;
    the upgrade still succeeds (``wrong``) or the connection stays usable on
    TCP with a reason (``silent`` may use up the hand-off's time)."""
    loop = asyncio.get_running_loop()
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ATTACKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    reports: list[dict] = []
    real_connect = loop.sock_connect

    async def held_connect(sock: socket.socket, address: object) -> None:
        if isinstance(address, bytes) and address.startswith(b"\0fastp2p-shm-") and not reports:
            req = {"name": address.hex(), "mode": mode, "wait": 5}
            attacker.stdin.write(json.dumps(req).encode() + b"\n")
            await attacker.stdin.drain()
            reports.append(json.loads(await asyncio.wait_for(attacker.stdout.readline(), 10)))
        await real_connect(sock, address)

    monkeypatch.setattr(loop, "sock_connect", held_connect)
    timeout = 1.0 if mode == "silent" else 5.0
    cfg = HostConfig(shm=ShmConfig(upgrade_timeout=timeout))
    try:
        async with host_pair(cfg) as (a, b, peer):
            serve_echo(b)
            result = json.loads(await asyncio.wait_for(attacker.stdout.readline(), 10))
            assert reports and reports[0]["seen"], reports
            assert result["nfds"] == 0, result
            assert result.get("bytes", "") == "", result
            conn = a.connection(peer)
            if mode == "silent" and conn.data_path == "tcp":
                assert conn.data_path_reason
            else:
                assert conn.data_path == "shm", conn.data_path_reason
                await wait_path(b, a.peer_id)
            await echo_check(a, peer)
    finally:
        if attacker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                attacker.kill()
        await attacker.wait()


async def _recv_msg(
    stream: fastp2p.Stream, reader: msgs.MessageReader, queue: list[ShmMessage]
) -> ShmMessage:
    while not queue:
        data = await stream.read(4096)
        assert data, "the upgrade stream ended early"
        queue.extend(reader.receive_data(data))
    return queue.pop(0)


class _FakeListener:
    """A hand-made ``/fastp2p/shm/1.0.0`` listener that never proves itself."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.results: list[tuple[bytes, list[int]]] = []
        self.done = asyncio.Event()

    async def __call__(self, stream: fastp2p.Stream) -> None:
        loop = asyncio.get_running_loop()
        reader, queue = msgs.MessageReader(), []
        try:
            hello = await _recv_msg(stream, reader, queue)
            assert hello.kind is Kind.HELLO and len(hello.secret) == msgs.SECRET_SIZE
            attempts = 0 if self.mode == "no_collect" else shm._MAX_ACCEPTS
            for _ in range(attempts):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                with sock:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, hello.socket)
                    if self.mode == "wrong_secret":
                        await loop.sock_sendall(sock, bytes(b ^ 1 for b in hello.secret))
                    else:  # short_secret
                        await loop.sock_sendall(sock, hello.secret[:5])
                        sock.shutdown(socket.SHUT_WR)
                    await shm._wait_readable(loop, sock)
                    msg, fds, _f, _a = socket.recv_fds(sock, 16, 4)
                    self.results.append((msg, fds))
                    for fd in fds:
                        os.close(fd)
            # claim success although nothing was collected
            await stream.write(msgs.encode(ShmMessage(Kind.SWITCH)))
            await stream.read()  # the dialer gives up and closes the stream
        finally:
            self.done.set()


@needs_shm
@pytest.mark.parametrize("mode", ["wrong_secret", "short_secret", "no_collect"])
async def test_dialer_hands_no_fds_to_an_unproven_listener(mode: str) -> None:
    gc.collect()
    fds0 = open_fds()
    fake = _FakeListener(mode)
    # the dialer waits for a proven collector until its upgrade timeout: 1.5 s, not 5
    dialer_cfg = HostConfig(shm=ShmConfig(upgrade_timeout=1.5))
    async with fastp2p.Host(listen=[LISTEN]) as b, fastp2p.Host(config=dialer_cfg) as a:
        b.set_handler(shm.PROTOCOL_ID, fake)
        serve_echo(b)
        peer = await a.connect(b.full_addrs[0])
        async with asyncio.timeout(5):
            await fake.done.wait()
        assert all(fds == [] and msg == b"" for msg, fds in fake.results), fake.results
        conn = a.connection(peer)
        assert conn.data_path == "tcp"
        assert conn.data_path_reason and "progress" not in conn.data_path_reason
        assert conn.statistics()["data_path_reason"] == conn.data_path_reason
        assert conn.peer_process is None
        await echo_check(a, peer)
    await settle_resources(fds0)


@needs_shm
@pytest.mark.parametrize(
    "mode", ["claims_other_pid", "no_fds", "not_a_ring", "foreign_socket_name"]
)
async def test_listener_attaches_nothing_from_an_unproven_dialer(mode: str) -> None:
    """A hand-made dialer: the listener must check SO_PEERCRED against HELLO's
    pid, the descriptors and the segment, refuse, and keep the connection on TCP."""
    gc.collect()
    fds0 = open_fds()
    loop = asyncio.get_running_loop()
    async with (
        fastp2p.Host(listen=[LISTEN]) as b,
        fastp2p.Host(config=HostConfig(data_paths=("tcp",))) as a,
    ):
        serve_echo(b)
        serve_echo(a)
        peer = await a.connect(b.full_addrs[0])
        conn = a.connection(peer)
        name = b"\0fastp2p-shm-" + secrets.token_hex(16).encode()
        if mode == "foreign_socket_name":
            name = b"\0not-fastp2p-" + secrets.token_hex(8).encode()
        secret = secrets.token_bytes(msgs.SECRET_SIZE)
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(name)
        lsock.listen(1)
        lsock.setblocking(False)
        hello = ShmMessage(
            Kind.HELLO,
            boot_id=shm.boot_id(),
            uid=os.getuid(),
            capacity=1 << 20,
            pid=1 if mode == "claims_other_pid" else os.getpid(),
            socket=name,
            secret=secret,
        )
        from fastp2p._native.shm import ShmSegment
        from fastp2p.transport.upgrader import negotiate_outbound

        stream = conn.open_stream()
        stream.protocol = await negotiate_outbound(
            stream, [shm.PROTOCOL_ID], early_data=msgs.encode(hello)
        )
        extra: list[int] = []
        seg = None
        try:
            if mode != "foreign_socket_name":
                async with asyncio.timeout(5):
                    csock, _ = await loop.sock_accept(lsock)
                with csock:
                    got = await loop.sock_recv(csock, 64)
                    assert got == secret
                    csock.setblocking(True)
                    if mode == "claims_other_pid":
                        seg = ShmSegment.create(1 << 20)
                        extra = [os.eventfd(0), os.eventfd(0)]
                        socket.send_fds(csock, [b"F"], [seg.fd, *extra])
                    elif mode == "no_fds":
                        csock.sendall(b"F")
                    else:  # not_a_ring: a memfd with garbage
                        fd = os.memfd_create("not-a-ring", os.MFD_CLOEXEC)
                        os.write(fd, os.urandom(1 << 16))
                        extra = [fd, os.eventfd(0), os.eventfd(0)]
                        socket.send_fds(csock, [b"F"], extra)
            reader, queue = msgs.MessageReader(), []
            async with asyncio.timeout(5):
                if mode == "foreign_socket_name":
                    with pytest.raises(Exception) as ei:
                        await _recv_msg(stream, reader, queue)
                    assert not isinstance(ei.value, AssertionError) or "ended" in str(ei.value)
                else:
                    reply = await _recv_msg(stream, reader, queue)
                    assert reply.kind is Kind.REFUSE, reply
        finally:
            lsock.close()
            for fd in extra:
                os.close(fd)
            if seg is not None:
                seg.close()
            await stream.aclose()
        lconn = await wait_path(b, a.peer_id, "tcp")
        assert lconn.data_path == "tcp" and lconn.peer_process is None
        deadline = time.monotonic() + 2
        while "progress" in (lconn.data_path_reason or "progress") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert lconn.data_path_reason, lconn.data_path_reason
        await echo_check(a, peer)
        await echo_check(b, a.peer_id)
    await settle_resources(fds0)


# -- fallback to TCP ----------------------------------------------------------------------


@needs_shm
async def test_listener_without_shm_keeps_tcp_with_reason() -> None:
    tcp_only = HostConfig(data_paths=("tcp",))
    async with fastp2p.Host(listen=[LISTEN], config=tcp_only) as b, fastp2p.Host() as a:
        serve_echo(b)
        peer = await a.connect(b.full_addrs[0])
        conn = a.connection(peer)
        assert conn.data_path == "tcp"
        assert shm.PROTOCOL_ID in (conn.data_path_reason or ""), conn.data_path_reason
        stats = conn.statistics()
        assert stats["data_path"] == "tcp" and stats["data_path_reason"] == conn.data_path_reason
        lconn = await wait_path(b, a.peer_id, "tcp")
        assert "data_paths" in (lconn.data_path_reason or ""), lconn.data_path_reason
        assert shm.PROTOCOL_ID not in b.protocols
        await echo_check(a, peer, 1 * MiB)


@needs_shm
async def test_dialer_without_shm_does_not_upgrade() -> None:
    tcp_only = HostConfig(data_paths=("tcp",))
    async with fastp2p.Host(listen=[LISTEN]) as b, fastp2p.Host(config=tcp_only) as a:
        serve_echo(b)
        upgrades: list[fastp2p.Stream] = []
        real = b._handler_for(shm.PROTOCOL_ID)

        async def counting(stream: fastp2p.Stream) -> None:
            upgrades.append(stream)
            await real(stream)

        b.set_handler(shm.PROTOCOL_ID, counting)
        peer = await a.connect(b.full_addrs[0])
        conn = a.connection(peer)
        assert conn.data_path == "tcp"
        assert "data_paths" in (conn.data_path_reason or ""), conn.data_path_reason
        await echo_check(a, peer)
        lconn = b.connection(a.peer_id)
        assert lconn.data_path == "tcp" and lconn.data_path_reason
        assert upgrades == []
        assert conn.peer_process is None


@needs_shm
async def test_peer_on_another_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Different kernel boot ids (simulated: the dialer's HELLO carries another)."""
    real = shm.boot_id
    calls = 0

    def fake_boot_id() -> bytes:
        nonlocal calls
        calls += 1
        return real() if calls > 1 else b"another-host-boot-id"

    monkeypatch.setattr(shm, "boot_id", fake_boot_id)
    async with host_pair() as (a, b, peer):
        serve_echo(b)
        conn = a.connection(peer)
        assert conn.data_path == "tcp"
        assert "another host" in (conn.data_path_reason or ""), conn.data_path_reason
        lconn = await wait_path(b, a.peer_id, "tcp")
        assert "another host" in (lconn.data_path_reason or ""), lconn.data_path_reason
        await echo_check(a, peer)
    assert calls >= 2


@needs_shm
@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run the child as another user")
async def test_peer_running_as_another_user_is_refused() -> None:
    c = Child({"setuid": 65534})
    try:
        async with fastp2p.Host() as host:
            peer = await host.connect(c.addr)
            conn = host.connection(peer)
            assert conn.data_path == "tcp"
            assert "another user" in (conn.data_path_reason or ""), conn.data_path_reason
            await echo_check(host, peer)
    finally:
        c.stop()


PURE = textwrap.dedent(
    """
    import asyncio, json, os
    from fastp2p import _accel
    from fastp2p.services import serve_echo
    from fastp2p.testing import host_pair
    from fastp2p.transport import shm

    async def main():
        async with host_pair() as (a, b, peer):
            serve_echo(b)
            s = await a.open_stream(peer, "/echo/1.0.0")
            await s.write(b"x" * 100000)
            await s.close_write()
            echoed = len(await s.read())
            await s.aclose()
            ca, cb = a.connection(peer), b.connection(a.peer_id)
            print(json.dumps({
                "native": _accel.HAVE_NATIVE,
                "available": list(shm.available()),
                "dialer": [ca.data_path, ca.data_path_reason],
                "listener": [cb.data_path, cb.data_path_reason],
                "stats": ca.statistics()["data_path_reason"],
                "offered": shm.PROTOCOL_ID in b.protocols,
                "echoed": echoed,
            }))

    asyncio.run(main())
    """
)


async def test_pure_python_build_says_shm_needs_the_native_core() -> None:
    env = dict(os.environ, FASTP2P_NO_EXTENSIONS="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PURE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert res["native"] is False
    ok, why = res["available"]
    assert ok is False and "native core" in why
    for side in ("dialer", "listener"):
        path, reason = res[side]
        assert path == "tcp"
        assert reason == why, (side, reason)
    assert res["stats"] == why
    assert res["offered"] is False
    assert res["echoed"] == 100000


# -- sealed mode ------------------------------------------------------------------------------


def _ring_bytes(conn) -> bytes:
    """Everything in the connection's shared segment (header and both rings)."""
    seg = conn._tx.segment
    with mmap.mmap(seg.fd, PAGE + 2 * seg.capacity, prot=mmap.PROT_READ) as m:
        return bytes(m)


@needs_shm
@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
async def test_sealed_mode_echo_8mib_and_what_lands_in_the_ring(sealed: bool) -> None:
    cfg = HostConfig(shm=ShmConfig(sealed=sealed))
    async with host_pair(cfg) as (a, b, peer):
        serve_echo(b)
        conn = await wait_path(a, peer)
        lconn = await wait_path(b, a.peer_id)
        for c in (conn, lconn):
            assert (c._tx._seal is not None) is sealed
            assert c._rx.transient is not sealed
        marker = secrets.token_bytes(64)
        data = marker * (8 * MiB // len(marker))
        s = await a.open_stream(peer, ECHO)

        async def send() -> None:
            view = memoryview(data)
            for i in range(0, len(data), MiB):
                await s.write(view[i : i + MiB])
            await s.close_write()

        t = asyncio.create_task(send())
        got = bytearray(len(data))
        n = await readinto_exactly(s, memoryview(got))
        await t
        assert n == len(data) and got == data
        assert await s.read() == b""
        await s.aclose()
        # Unsealed frames are plaintext in shared memory; sealed ones are not.
        assert (marker in _ring_bytes(conn)) is not sealed


@needs_shm
@pytest.mark.parametrize(
    ("dialer_sealed", "listener_sealed"),
    [
        pytest.param(True, False, id="dialer_sealed"),
        pytest.param(False, True, id="listener_sealed"),
    ],
)
async def test_sealing_wanted_by_either_side_is_honoured(
    dialer_sealed: bool, listener_sealed: bool
) -> None:
    async with (
        fastp2p.Host(
            listen=[LISTEN], config=HostConfig(shm=ShmConfig(sealed=listener_sealed))
        ) as b,
        fastp2p.Host(config=HostConfig(shm=ShmConfig(sealed=dialer_sealed))) as a,
    ):
        serve_echo(b)
        peer = await a.connect(b.full_addrs[0])
        conn = a.connection(peer)
        lconn = b.connection(a.peer_id)
        if conn.data_path == "shm":
            lconn = await wait_path(b, a.peer_id)
            await echo_check(a, peer, 1 * MiB)
            # A side that asked for sealing must never send plaintext frames.
            assert conn._tx._seal is not None and lconn._tx._seal is not None
        else:  # refusing the upgrade would be fine too
            assert conn.data_path_reason


@needs_shm
async def test_a_bulk_reader_gets_the_ring_in_passes_so_credit_flows_back_while_it_copies() -> None:
    """A reader's lent buffer takes at most one pass of the ring (a quarter of it)
    before its task runs and returns the credit: unbounded, it took the whole
    window at once and the writer waited for every byte to be copied (bulk
    transfers went in turns, both processes half idle)."""
    got_sizes: list[int] = []
    received = bytearray()
    done = asyncio.Event()

    async def sink(stream: fastp2p.Stream) -> None:
        buf = memoryview(bytearray(16 * MiB))  # far larger than the ring
        while n := await stream.readinto(buf):
            got_sizes.append(n)
            received.extend(buf[:n])
        done.set()

    async with host_pair() as (a, b, peer):
        b.set_handler("/bulk-sink/1", sink)
        conn = await wait_path(a, peer)
        lconn = await wait_path(b, a.peer_id)
        ring = lconn._rx.segment.capacity
        data = os.urandom(4 * ring)
        s = await a.open_stream(peer, "/bulk-sink/1")
        view = memoryview(data)
        for i in range(0, len(data), MiB):
            await s.write(view[i : i + MiB])
        await s.close_write()
        await asyncio.wait_for(done.wait(), 30)
        await s.aclose()
        assert bytes(received) == data
        assert max(got_sizes) <= ring // shm.PASS_FRACTION, got_sizes
        assert conn.data_path == "shm"


@needs_shm
async def test_one_page_rings_carry_frames_larger_than_the_ring() -> None:
    cfg = HostConfig(shm=ShmConfig(ring_capacity=PAGE))
    async with host_pair(cfg) as (a, b, peer):
        serve_echo(b)
        conn = await wait_path(a, peer)
        await wait_path(b, a.peer_id)
        assert conn._tx.segment.capacity == PAGE
        await echo_check(a, peer, 4 * MiB)


@needs_shm
async def test_invalid_ring_capacity_falls_back_with_a_reason() -> None:
    try:
        cfg = HostConfig(shm=ShmConfig(ring_capacity=12345))
    except ValueError:
        return  # rejected up front: fine too
    async with host_pair(cfg) as (a, b, peer):
        conn = a.connection(peer)
        assert conn.data_path == "tcp"
        assert conn.data_path_reason and "progress" not in conn.data_path_reason


@needs_shm
@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
async def test_streams_busy_across_the_switch(sealed: bool) -> None:
    """Both sides open streams and push data the moment the connection exists,
    so frames cross the TCP -> ring switch in both directions mid-stream."""
    cfg = HostConfig(shm=ShmConfig(sealed=sealed))
    n = 8 * MiB
    payloads: dict[str, bytes] = {"a": os.urandom(n), "b": os.urandom(n)}
    results: dict[str, asyncio.Future[bytes]] = {}
    from fastp2p.transport.upgrader import negotiate_outbound

    async def push(who: str, conn) -> bytes:
        s = conn.open_stream()
        s.protocol = await negotiate_outbound(s, [ECHO])

        async def send() -> None:
            view = memoryview(payloads[who])
            for i in range(0, n, 64 * 1024):
                await s.write(view[i : i + 64 * 1024])
            await s.close_write()

        t = asyncio.create_task(send())
        got = bytearray(n)
        k = await readinto_exactly(s, memoryview(got))
        await t
        await s.aclose()
        assert k == n
        return bytes(got)

    async with fastp2p.Host(listen=[LISTEN], config=cfg) as b, fastp2p.Host(config=cfg) as a:
        serve_echo(a)
        serve_echo(b)
        b.on_connection(lambda c: results.setdefault("b", asyncio.ensure_future(push("b", c))))
        a.on_connection(lambda c: results.setdefault("a", asyncio.ensure_future(push("a", c))))
        peer = await a.connect(b.full_addrs[0])
        async with asyncio.timeout(30):
            got = {k: await f for k, f in results.items()}
        assert got == payloads
        conn = await wait_path(a, peer)
        lconn = await wait_path(b, a.peer_id)
        for c in (conn, lconn):  # the payloads really crossed the switch
            on_ring = c._tx.statistics()["bytes_sent"]
            assert on_ring > MiB and c.stats.bytes_sent - on_ring > 64 * 1024
        await echo_check(a, peer)


@pytest.mark.parametrize("path", ["tcp", pytest.param("shm", marks=needs_shm)])
async def test_bytes_written_before_the_peer_closes_are_delivered(path: str) -> None:
    """The peer writes, half-closes and closes its host at once: on shm its last
    frames sit in the ring when TCP reports the close, and must still arrive."""
    cfg = HostConfig(data_paths=("tcp",)) if path == "tcp" else HostConfig()
    data = os.urandom(1 * MiB)
    got: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()

    async def reader(s: fastp2p.Stream) -> None:
        buf = bytearray()
        try:
            while chunk := await s.read(65536):
                buf += chunk
            end = "eof"
        except Exception as exc:
            end = repr(exc)
        await got.put((bytes(buf), end))

    b = fastp2p.Host(listen=[LISTEN], config=cfg)
    await b.start()
    try:
        async with fastp2p.Host(config=cfg) as a:
            a.set_handler("/shmtest/read/1.0.0", reader)
            peer = await a.connect(b.full_addrs[0])
            await wait_path(a, peer, path)
            await wait_path(b, a.peer_id, path)
            s = await b.open_stream(a.peer_id, "/shmtest/read/1.0.0")
            await s.write(data)
            await s.close_write()
            await b.aclose()
            async with asyncio.timeout(5):
                received, end = await got.get()
            assert end == "eof" and received == data
    finally:
        await b.aclose()


# -- resources ------------------------------------------------------------------------------


@needs_shm
async def test_resources_released_after_hosts_close() -> None:
    gc.collect()
    fds0 = open_fds()
    threads0 = thread_ids()
    regions = []
    for _ in range(3):
        async with host_pair() as (a, b, peer):
            serve_echo(b)
            await wait_path(a, peer)
            await wait_path(b, a.peer_id)
            assert len(ring_fds()) == 2  # one segment each side
            assert ring_maps()
            await echo_check(a, peer, 2 * MiB)
            ra, rb = a.alloc(1 * MiB), b.alloc(1 * MiB)
            ra.view()[:] = os.urandom(1 * MiB)
            token = rb.grant(a.peer_id, write=True)
            assert await a.connection(peer).put(ra, token) == 1 * MiB
            assert bytes(rb.view()) == bytes(ra.view())
            regions += [ra, rb]
        assert all(r.closed for r in regions)
    await settle_resources(fds0)
    assert not thread_ids() - threads0


@pytest.mark.skipif(SHM_OK, reason="covered by the subprocess test when the native core is loaded")
async def test_in_process_without_the_native_core() -> None:
    """The pure pass (FASTP2P_NO_EXTENSIONS=1): no shm, and every connection says why."""
    assert "native core" in SHM_WHY
    async with host_pair() as (a, b, peer):
        serve_echo(b)
        conn = a.connection(peer)
        assert conn.data_path == "tcp" and conn.data_path_reason == SHM_WHY
        assert conn.statistics()["data_path_reason"] == SHM_WHY
        assert shm.PROTOCOL_ID not in b.protocols
        await echo_check(a, peer)
