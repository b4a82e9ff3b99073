"""host.files: share, announce over pubsub, multi-provider verified fetch (TCP loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastp2p.config import FilesConfig, HostConfig
from fastp2p.host import Host
from fastp2p.proto.manifest import Manifest, ManifestError
from fastp2p.services.files import NoProvidersError, _dht_key, parse_announcement, safe_name
from fastp2p.stream import Stream

CHUNK = 64 << 10


def _config(**files: object) -> HostConfig:
    fc = FilesConfig(**{"chunk_size": CHUNK, "pipeline_bytes": 4 * CHUNK, "provider_wait": 2.0, **files})  # type: ignore[arg-type]
    return HostConfig(files=fc)


@contextlib.asynccontextmanager
async def _hosts(n: int, **files: object) -> AsyncIterator[list[Host]]:
    hosts = [Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config(**files)) for _ in range(n)]
    try:
        for h in hosts:
            await h.start()
        yield hosts
    finally:
        for h in hosts:
            await h.aclose()


def _write(path: pathlib.Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def _wait_providers(host: Host, cid: str, n: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while len(host.files.providers_table(cid)) < n:
            await asyncio.sleep(0.05)


async def test_three_providers_announce_and_share_the_fetch(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "src.bin", 8 * 1024 * 1024 + 12345)
    async with _hosts(4) as hosts:
        provs, me = hosts[:3], hosts[3]
        for p in provs:
            await me.connect(p.full_addrs[0])
        infos = [await p.files.share(tmp_path / "src.bin") for p in provs]
        assert len({i.cid for i in infos}) == 1
        info = infos[0]
        assert info.name == "src.bin" and info.size == len(data)
        assert info.cid == Manifest.from_bytes(data, CHUNK).cid
        seen: list[str] = []

        async def watch() -> None:
            async for a in me.files.announcements():
                seen.append(str(a.peer))

        task = asyncio.create_task(watch())
        await _wait_providers(me, info.cid, 3)
        progress: list[int] = []
        res = await me.files.fetch(info.cid, tmp_path / "dst.bin", progress=lambda g, s: progress.append(g))
        task.cancel()
        assert (tmp_path / "dst.bin").read_bytes() == data
        assert res.size == res.bytes == len(data) and res.cid == info.cid and res.resumed == 0
        assert sum(res.bytes_per_provider.values()) == len(data)
        assert set(res.providers) == {p.peer_id for p in provs}, res.bytes_per_provider
        assert not res.dropped
        assert progress[-1] == len(data) and progress == sorted(progress)
        assert set(seen) == {str(p.peer_id) for p in provs}
        ann = me.files.providers_table(info.cid)[0]
        assert ann.name == "src.bin" and ann.size == len(data)
        assert all(a.endswith(f"/p2p/{ann.peer}") for a in ann.addrs)


async def test_lying_provider_is_dropped_and_its_chunks_refetched(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "good.bin", 4 * 1024 * 1024)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data)
    async with _hosts(3) as (honest, liar, me):
        info = await honest.files.share(tmp_path / "good.bin")
        assert (await liar.files.share(bad)).cid == info.cid
        bad.write_bytes(bytes(len(data)))  # same size, every chunk now wrong
        res = await me.files.fetch(
            info.cid, tmp_path / "dst.bin", providers=[liar.full_addrs[0], honest.full_addrs[0]]
        )
        assert (tmp_path / "dst.bin").read_bytes() == data
        assert liar.peer_id in res.dropped and "does not match" in res.dropped[liar.peer_id]
        assert res.bytes_per_provider == {honest.peer_id: len(data)}


async def test_only_liars_fails_and_keeps_nothing_unverified(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "f.bin", 1024 * 1024)
    async with _hosts(2) as (liar, me):
        info = await liar.files.share(tmp_path / "f.bin")
        (tmp_path / "f.bin").write_bytes(b"\xff" * len(data))
        with pytest.raises(NoProvidersError, match="does not match"):
            await me.files.fetch(info.cid, tmp_path / "dst.bin", providers=[liar.full_addrs[0]])


async def test_resume_keeps_verified_chunks(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "f.bin", 2 * 1024 * 1024 + 7)
    dst = tmp_path / "dst.bin"
    # half right, then garbage in one chunk of the first half, short file
    partial = bytearray(data[: len(data) // 2])
    partial[CHUNK * 3 : CHUNK * 3 + 10] = b"0123456789"
    dst.write_bytes(bytes(partial))
    async with _hosts(2) as (prov, me):
        info = await prov.files.share(tmp_path / "f.bin")
        res = await me.files.fetch(info.cid, dst, providers=[prov.full_addrs[0]])
        assert dst.read_bytes() == data
        assert res.resumed == (len(partial) // CHUNK - 1) * CHUNK
        assert res.bytes_per_provider[prov.peer_id] == len(data) - res.resumed
        again = await me.files.fetch(info.cid, dst, providers=[prov.full_addrs[0]])
        assert again.resumed == len(data) and not again.bytes_per_provider


async def test_cancelled_fetch_resumes(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "f.bin", 8 * 1024 * 1024)
    dst = tmp_path / "dst.bin"
    async with _hosts(2) as (prov, me):
        info = await prov.files.share(tmp_path / "f.bin")
        half = asyncio.Event()

        def progress(got: int, size: int) -> None:
            if got >= size // 3:
                half.set()

        task = asyncio.create_task(
            me.files.fetch(info.cid, dst, providers=[prov.full_addrs[0]], progress=progress)
        )
        await half.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        res = await me.files.fetch(info.cid, dst, providers=[prov.full_addrs[0]])
        assert dst.read_bytes() == data
        assert len(data) // 3 <= res.resumed < len(data)


async def test_provider_closing_mid_fetch_others_finish(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "f.bin", 16 * 1024 * 1024)
    async with _hosts(3) as (a, b, me):
        info = await a.files.share(tmp_path / "f.bin")
        await b.files.share(tmp_path / "f.bin")
        killed = asyncio.Event()

        def progress(got: int, size: int) -> None:
            if got >= size // 4 and not killed.is_set():
                killed.set()
                asyncio.get_running_loop().create_task(b.aclose())

        res = await me.files.fetch(
            info.cid, tmp_path / "dst.bin", providers=[a.full_addrs[0], b.full_addrs[0]], progress=progress
        )
        assert killed.is_set()
        assert (tmp_path / "dst.bin").read_bytes() == data
        assert b.peer_id in res.dropped
        assert res.bytes_per_provider[a.peer_id] > 0


async def test_new_subscriber_hears_existing_shares_at_once(tmp_path: pathlib.Path) -> None:
    _write(tmp_path / "f.bin", 100_000)
    # announce_interval far away: only the new-subscriber trigger can explain a quick announcement
    async with _hosts(2, announce_interval=3600.0) as (prov, me):
        info = await prov.files.share(tmp_path / "f.bin")
        await me.connect(prov.full_addrs[0])
        async with asyncio.timeout(8):
            async for ann in me.files.announcements():
                assert ann.cid == info.cid and ann.peer == prov.peer_id
                break
        res = await me.files.fetch(info.cid, tmp_path / "dst.bin")  # providers from the table
        assert res.providers == (prov.peer_id,)


async def test_fetch_without_announcements_asks_connected_peers(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "f.bin", 300_000)
    async with _hosts(2) as (prov, me):
        info = await prov.files.share(tmp_path / "f.bin")
        await me.connect(prov.full_addrs[0])
        me.files._table.clear()  # as if no announcement had arrived yet
        await asyncio.sleep(0)
        res = await me.files.fetch(info.cid, tmp_path / "dst.bin")
        assert (tmp_path / "dst.bin").read_bytes() == data and res.providers == (prov.peer_id,)


async def test_unknown_cid_and_unshare(tmp_path: pathlib.Path) -> None:
    _write(tmp_path / "f.bin", 200_000)
    async with _hosts(2, provider_wait=0.5) as (prov, me):
        info = await prov.files.share(tmp_path / "f.bin")
        assert [i.cid for i in prov.files.shared()] == [info.cid]
        assert prov.files.unshare(info.cid) and not prov.files.unshare(info.cid)
        with pytest.raises(NoProvidersError, match="does not have"):
            await me.files.fetch(info.cid, tmp_path / "dst.bin", providers=[prov.full_addrs[0]])
        with pytest.raises(ManifestError):
            await me.files.fetch("not-a-cid", tmp_path / "x")


async def test_empty_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "e").write_bytes(b"")
    async with _hosts(2) as (prov, me):
        info = await prov.files.share(tmp_path / "e")
        res = await me.files.fetch(info.cid, tmp_path / "dst", providers=[prov.full_addrs[0]])
        assert res.size == 0 and (tmp_path / "dst").read_bytes() == b""


async def test_malformed_announcements_rejected_and_table_bounded(tmp_path: pathlib.Path) -> None:
    async with _hosts(2, max_announcements=3) as (spammer, me):
        await me.connect(spammer.full_addrs[0])
        agen = me.files.announcements()
        waiter = asyncio.create_task(agen.__anext__())
        await spammer.pubsub.wait_for_peers("fastp2p/files/1.0.0", 1)
        topic = "fastp2p/files/1.0.0"
        await spammer.pubsub.publish(topic, b"{not json")
        other = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp"
        await spammer.pubsub.publish(topic, json.dumps(
            {"name": "x", "size": 1, "cid": Manifest.from_bytes(b"x", 4096).cid, "addrs": [other]}
        ).encode())
        cids = [Manifest.from_bytes(bytes([i]), 4096).cid for i in range(5)]
        for i, cid in enumerate(cids):
            await spammer.pubsub.publish(topic, json.dumps(
                {"name": f"f{i}", "size": 1, "cid": cid, "addrs": []}
            ).encode())
        first = await asyncio.wait_for(waiter, 10)
        assert first.cid == cids[0]
        async with asyncio.timeout(10):
            while me.files.announcements_heard < 5:
                await asyncio.sleep(0.05)
        assert me.files.announcements_rejected == 2
        assert [a.cid for a in me.files.providers_table()] == cids[2:]
        await agen.aclose()


def test_parse_announcement_and_safe_name() -> None:
    from fastp2p.peer import Ed25519PrivateKey, PeerID

    pid = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
    cid = Manifest.from_bytes(b"abc", 4096).cid
    ok = json.dumps({"name": "a.txt", "size": 3, "cid": cid, "addrs": ["/ip4/10.0.0.1/tcp/4001"]})
    assert parse_announcement(ok.encode(), pid) == (cid, "a.txt", 3, (f"/ip4/10.0.0.1/tcp/4001/p2p/{pid}",))
    for bad in (
        b"[]",
        json.dumps({"name": "a", "size": -1, "cid": cid}).encode(),
        json.dumps({"name": "a", "size": True, "cid": cid}).encode(),
        json.dumps({"name": "a", "size": 1, "cid": "bogus"}).encode(),
        json.dumps({"name": "a" * 300, "size": 1, "cid": cid}).encode(),
        json.dumps({"name": "a", "size": 1, "cid": cid, "addrs": ["/nonsense"]}).encode(),
    ):
        with pytest.raises(ValueError):
            parse_announcement(bad, pid)
    from fastp2p.services.files import Files
    from fastp2p.services.pubsub import PubsubMessage

    files = Files.__new__(Files)
    files.announcements_rejected = 0
    deep = PubsubMessage(b"[" * 100_000 + b"]" * 100_000, "t", pid, 1, b"id", pid)
    assert files._validate(deep) == "reject" and files.announcements_rejected == 1
    assert safe_name("../../etc/passwd", "x") == "passwd"
    assert safe_name("..", "fallback") == "fallback"
    assert safe_name("a\\b\\c.txt", "x") == "c.txt"


async def test_stalled_provider_loses_its_chunks_to_end_game_stealing(tmp_path: pathlib.Path) -> None:
    from fastp2p.services import files as files_mod

    data = _write(tmp_path / "f.bin", 2 * 1024 * 1024)
    async with _hosts(3, stall_timeout=30.0) as (fast, slow, me):
        info = await fast.files.share(tmp_path / "f.bin")
        await slow.files.share(tmp_path / "f.bin")
        stalled = asyncio.Event()

        async def stall(stream: Stream) -> None:  # answers the header, then never a chunk
            n = await files_mod._read_uvarint(stream)
            await stream.readexactly(n + 1)
            entry = next(iter(slow.files._shared.values()))
            await stream.write(b"\x00" + files_mod.uvarint_encode(len(entry.encoded)) + entry.encoded)
            stalled.set()
            await asyncio.sleep(3600)

        slow.set_handler(files_mod.CHUNKS_PROTOCOL_ID, stall)
        async with asyncio.timeout(20):  # far below stall_timeout: stealing, not the timeout, finishes it
            res = await me.files.fetch(
                info.cid, tmp_path / "dst.bin", providers=[slow.full_addrs[0], fast.full_addrs[0]]
            )
        assert stalled.is_set()
        assert (tmp_path / "dst.bin").read_bytes() == data
        assert res.bytes_per_provider == {fast.peer_id: len(data)}


async def test_stalled_sole_provider_is_dropped_after_stall_timeout(tmp_path: pathlib.Path) -> None:
    from fastp2p.services import files as files_mod

    _write(tmp_path / "f.bin", 1024 * 1024)
    async with _hosts(2, stall_timeout=0.5, provider_wait=0.5) as (slow, me):
        info = await slow.files.share(tmp_path / "f.bin")

        async def stall(stream: Stream) -> None:
            n = await files_mod._read_uvarint(stream)
            await stream.readexactly(n + 1)
            entry = next(iter(slow.files._shared.values()))
            await stream.write(b"\x00" + files_mod.uvarint_encode(len(entry.encoded)) + entry.encoded)
            await asyncio.sleep(3600)

        slow.set_handler(files_mod.CHUNKS_PROTOCOL_ID, stall)
        with pytest.raises(NoProvidersError, match="TimeoutError"):
            async with asyncio.timeout(10):
                await me.files.fetch(info.cid, tmp_path / "dst.bin", providers=[slow.full_addrs[0]])


async def test_providers_found_through_the_dht(tmp_path: pathlib.Path) -> None:
    """Provider and fetcher on different announcement topics: only the DHT can introduce them."""
    from fastp2p.config import DhtConfig

    data = _write(tmp_path / "f.bin", 1024 * 1024 + 1)
    dht = DhtConfig(enabled=True, mode="server")

    def cfg(topic: str) -> HostConfig:
        return HostConfig(dht=dht, files=FilesConfig(chunk_size=CHUNK, topic=topic, provider_wait=5.0))

    hosts = [Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg(t)) for t in ("a", "hub", "b")]
    try:
        for h in hosts:
            await h.start()
        prov, hub, me = hosts
        await prov.connect(hub.full_addrs[0])
        await me.connect(hub.full_addrs[0])
        info = await prov.files.share(tmp_path / "f.bin")
        key = _dht_key(info.cid)
        async with asyncio.timeout(10):  # the provider record reached the hub
            while not hub.dht.providers.get(key, time.monotonic()):
                await asyncio.sleep(0.05)
        await me.disconnect(prov.peer_id)  # the DHT's own queries may have connected them
        assert not me.files.providers_table() and me.connection(prov.peer_id) is None
        res = await me.files.fetch(info.cid, tmp_path / "dst.bin")
        assert (tmp_path / "dst.bin").read_bytes() == data
        assert res.providers == (prov.peer_id,)
    finally:
        for h in hosts:
            await h.aclose()


class _ScriptedStream:
    """The two reads ``Swarm._receive`` makes, fed by the test, so it can interleave a
    stealer's copy with the owner's at an exact point."""

    def __init__(self) -> None:
        self.feed: asyncio.Queue[bytes] = asyncio.Queue()

    async def readexactly(self, n: int) -> bytes:
        data = await self.feed.get()
        assert len(data) == n
        return data

    async def readinto(self, buf: memoryview) -> int:
        data = await self.feed.get()
        buf[: len(data)] = data
        return len(data)


@contextlib.asynccontextmanager
async def _swarm(tmp_path: pathlib.Path, data: bytes) -> AsyncIterator[tuple[Any, Manifest, Any, Any, Any]]:
    """A Swarm on a real destination file with two workers (owner, stealer), no network."""
    from concurrent.futures import ThreadPoolExecutor

    from fastp2p.peer import Ed25519PrivateKey, PeerID
    from fastp2p.services.fetcher import ProviderRef, Swarm, _Worker, open_destination

    m = Manifest.from_bytes(data, CHUNK)

    class _Host:
        peer_id = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())

    with ThreadPoolExecutor(1) as pool:
        sw = Swarm(_Host(), "/x", m.cid, b"", pipeline_bytes=CHUNK, stall_timeout=5, pool=pool,  # type: ignore[arg-type]
                   manifest=m, progress=None)
        f, old = open_destination(tmp_path / "dst.bin", m.size)
        try:
            await sw.attach(f.fileno(), old)
            pids = [PeerID.from_public_key(Ed25519PrivateKey.generate().public_key()) for _ in range(2)]
            owner, stealer = _Worker(ProviderRef(pids[0])), _Worker(ProviderRef(pids[1]))
            sw.workers = {pids[0]: owner, pids[1]: stealer}
            yield sw, m, owner, stealer, f
            async with asyncio.timeout(10):
                await sw.shutdown()
        finally:
            f.close()


async def _drain(sw: Any) -> None:
    async with asyncio.timeout(10):
        while sw.verifying:
            await sw.wait_changed(0.05)


@pytest.mark.parametrize("owner_honest", [True, False])
@pytest.mark.parametrize("stealer_first", [True, False])
async def test_end_game_race_counts_each_chunk_once(
    tmp_path: pathlib.Path, owner_honest: bool, stealer_first: bool
) -> None:
    """End-game race at the state-machine level, through ``_receive``: the owner and a
    stealer both deliver chunk 0, in either order, the owner honest or lying. The first
    verified copy counts, only verified bytes reach the file, a liar whose copy is hashed
    is dropped, and the chunk counts once. (The pure build's 3-peer demo hang: a duplicate verified while the
    owner was still receiving was accepted a second time when the owner's copy verified,
    so ``done_chunks`` overshot and the fetch never completed.)"""
    from fastp2p.services.fetcher import DONE

    data = os.urandom(2 * CHUNK)
    async with _swarm(tmp_path, data) as (sw, m, owner, stealer, f):
        assert sw._take(owner) == 0 and sw._take(stealer) == 1
        owner.inflight.append((0, False))
        assert sw._steal(stealer) == 0
        o_stream, s_stream = _ScriptedStream(), _ScriptedStream()
        o_recv = asyncio.ensure_future(sw._receive(owner, o_stream, m, 0, False))  # type: ignore[arg-type]
        half = CHUNK // 2
        o_stream.feed.put_nowait(b"\x00")
        o_stream.feed.put_nowait(data[:half])  # the owner is mid-chunk ...
        s_recv = asyncio.ensure_future(sw._receive(stealer, s_stream, m, 0, True))  # type: ignore[arg-type]
        rest = data[half:CHUNK] if owner_honest else bytes(CHUNK - half)
        first, second = (s_stream, o_stream) if stealer_first else (o_stream, s_stream)
        for stream in (first, second):
            if stream is s_stream:
                s_stream.feed.put_nowait(b"\x00")
                s_stream.feed.put_nowait(data[:CHUNK])
                await s_recv
            else:
                o_stream.feed.put_nowait(rest)
                await o_recv
            await _drain(sw)
        assert sw.state[0] == DONE and sw.done_chunks == 1 and sw.done_bytes == CHUNK
        assert os.pread(f.fileno(), CHUNK, 0) == data[:CHUNK]
        # A copy that arrives after the chunk is done is dropped unhashed (no CPU spent on
        # it), so a lying owner that loses the race is only caught on a chunk it wins.
        assert (owner.dropped is None) == (owner_honest or stealer_first)
        assert owner.bytes_used + stealer.bytes_used == CHUNK
        if stealer_first or not owner_honest:
            assert stealer.bytes_used == CHUNK
        # a duplicate that arrives after the chunk is done changes nothing
        if owner.dropped is None:
            sw._verified(stealer, 0, True, False)
        assert sw.done_chunks == 1 and sw._buffers <= 2 and len(sw._free) == sw._buffers


async def test_bad_chunk_is_never_written_and_goes_back_to_the_queue(tmp_path: pathlib.Path) -> None:
    from fastp2p.services.fetcher import PENDING

    data = os.urandom(2 * CHUNK)
    async with _swarm(tmp_path, data) as (sw, m, owner, _stealer, f):
        assert sw._take(owner) == 0
        owner.inflight.append((0, False))
        stream = _ScriptedStream()
        stream.feed.put_nowait(b"\x00")
        stream.feed.put_nowait(b"\x01" * CHUNK)
        await sw._receive(owner, stream, m, 0, False)  # type: ignore[arg-type]
        await _drain(sw)
        assert owner.dropped and "does not match" in owner.dropped
        assert sw.state[0] == PENDING and list(sw.pending)[0] == 0 and sw.done_chunks == 0
        assert os.pread(f.fileno(), CHUNK, 0) == bytes(CHUNK)  # the lie never reached the file


async def test_provider_listening_on_all_interfaces(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "f.bin", 300_000)
    prov = Host(listen=["/ip4/0.0.0.0/tcp/0"], config=_config())
    me = Host(config=_config())
    await prov.start()
    await me.start()
    try:
        port = prov.addrs[0].value_for("tcp")
        await me.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{prov.peer_id}")
        info = await prov.files.share(tmp_path / "f.bin")
        async with asyncio.timeout(10):
            ann = await anext(aiter(me.files.announcements()))
        assert ann.cid == info.cid and ann.addrs == ()  # 0.0.0.0 is not announced
        await me.disconnect(prov.peer_id)
        res = await me.files.fetch(info.cid, tmp_path / "dst.bin")  # redials from the peerstore
        assert (tmp_path / "dst.bin").read_bytes() == data and res.providers == (prov.peer_id,)
    finally:
        await me.aclose()
        await prov.aclose()
