"""Kademlia interop: a 10-peer DHT of fastp2p, js-libp2p (@libp2p/kad-dht) and py-libp2p peers.

4 fastp2p hosts (in this process), 3 js-libp2p and 3 py-libp2p peers (child
processes) on loopback, all bootstrapped through the first fastp2p host:

- every peer finds every other with ``find_peer``;
- a key provided by a fastp2p peer is found by js and py peers, and keys
  provided by js and py are found by fastp2p;
- ``put``/``get`` in the ``/fastp2p/`` namespace (registered in the js and py
  peers with an any-value validator) across implementations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import replace
from typing import Any

import pytest

from fastp2p.config import DhtConfig, HostConfig
from fastp2p.host import Host
from fastp2p.peer import PeerID

from .dht_harness import DhtPeer, missing_dht, spawn_dht

pytestmark = [pytest.mark.interop, pytest.mark.asyncio]

CFG = HostConfig(data_paths=("tcp",), dht=DhtConfig(enabled=True, mode="server", rpc_timeout=5.0,
                                                    query_timeout=30.0))


def mh(text: str) -> bytes:
    return b"\x12\x20" + hashlib.sha256(text.encode()).digest()


@pytest.fixture(scope="module", autouse=True)
def _need_peers() -> None:
    for kind in ("js", "py"):
        reason = missing_dht(kind)
        if reason:
            pytest.skip(reason)


async def test_mixed_dht_of_ten_peers() -> None:
    async with contextlib.AsyncExitStack() as stack:
        fast = [await stack.enter_async_context(Host(listen=["/ip4/127.0.0.1/tcp/0"], config=CFG))
                for _ in range(4)]
        boot = str(fast[0].full_addrs[0])
        ext: list[DhtPeer] = []
        for kind in ("js", "js", "js", "py", "py", "py"):
            ext.append(await stack.enter_async_context(spawn_dht(kind)))
        await asyncio.gather(*(h.dht.bootstrap([boot]) for h in fast[1:]))
        for p in ext:
            await p.call("bootstrap", addrs=[boot])
        # a second round lets everyone see the whole (small) network
        await asyncio.gather(*(h.dht.refresh(force=True) for h in fast))
        for p in ext:
            await p.call("bootstrap", addrs=[boot])
        ids = [h.peer_id for h in fast] + [PeerID.from_string(p.peer_id) for p in ext]

        # A lookup may race the routing tables still settling after bootstrap
        # (js can answer from a peer-store entry that has no address yet):
        # each pair gets three tries, half a second apart, before it is a miss.
        async def found_by_fastp2p(h: Host, pid: PeerID) -> None:
            info = await h.dht.find_peer(pid)
            assert info.addrs, info

        async def found_by_ext(p: DhtPeer, pid: PeerID) -> None:
            r = await p.call("find_peer", peer_id=str(pid))
            assert r["addrs"], r

        async def retried(what: str, attempt: Any) -> str | None:
            err: BaseException | None = None
            for _ in range(3):
                try:
                    await attempt()
                    return None
                except Exception as exc:  # noqa: BLE001
                    err = exc
                    await asyncio.sleep(0.5)
            return f"{what}: {err!r}"

        misses = []
        for h in fast:
            for pid in ids:
                if pid != h.peer_id:
                    m = await retried(f"fastp2p {h.peer_id} -> {pid}",
                                      lambda h=h, pid=pid: found_by_fastp2p(h, pid))
                    if m:
                        misses.append(m)
        for p in ext:
            for pid in ids:
                if str(pid) != p.peer_id:
                    m = await retried(f"{p.kind} {p.peer_id} -> {pid}",
                                      lambda p=p, pid=pid: found_by_ext(p, pid))
                    if m:
                        misses.append(m)
        assert not misses, "\n".join(misses)

        # providers: fastp2p -> js, py
        key = mh("provided by fastp2p")
        assert await fast[1].dht.provide(key) > 0
        for p in ext:
            r = await p.call("find_providers", key_hex=key.hex(), limit=1)
            assert str(fast[1].peer_id) in [x["peer_id"] for x in r["providers"]], (p.kind, r)
        # js, py -> fastp2p
        for p in (ext[0], ext[3]):
            key = mh(f"provided by {p.kind}")
            await p.call("provide", key_hex=key.hex())
            found = [i.peer_id async for i in fast[2].dht.find_providers(key, limit=1)]
            assert found == [PeerID.from_string(p.peer_id)], p.kind

        # values in /fastp2p/
        assert await fast[3].dht.put_value(b"/fastp2p/interop", b"from fastp2p") > 0
        for p in ext:
            r = await p.call("get", key="/fastp2p/interop")
            assert r["value"] == "from fastp2p", p.kind
        for p, text in ((ext[1], "from js"), (ext[4], "from py")):
            key = f"/fastp2p/by-{p.kind}"
            await p.call("put", key=key, value=text)
            assert await fast[0].dht.get_value(key.encode()) == text.encode(), p.kind


async def test_fastp2p_client_uses_js_servers() -> None:
    async with contextlib.AsyncExitStack() as stack:
        js = [await stack.enter_async_context(spawn_dht("js")) for _ in range(3)]
        for p in js[1:]:
            await p.call("bootstrap", addrs=[js[0].addr])
        cfg = replace(CFG, dht=replace(CFG.dht, mode="client"))
        h = await stack.enter_async_context(Host(config=cfg))
        await h.dht.bootstrap([js[0].addr])
        info = await h.dht.find_peer(PeerID.from_string(js[2].peer_id))
        assert info.addrs
        assert await h.dht.put_value(b"/fastp2p/c", b"v") > 0
        r = await js[1].call("get", key="/fastp2p/c")
        assert r["value"] == "v"
