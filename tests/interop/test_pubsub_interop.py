"""fastp2p pubsub against js-libp2p 3.3 (@libp2p/gossipsub 16) and py-libp2p 0.8.1 GossipSub.

For each reference peer x muxer x direction (who dials): both subscribe, each
publishes and the other receives (StrictSign signatures verified on both sides),
and a message with a forged signature sent by fastp2p is dropped by the peer.
Then a mixed mesh of six peers (2 fastp2p, 2 js, 2 py), each publishing once:
every subscriber receives every message exactly once and fastp2p's and js's
scores of every honest peer stay >= 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import replace

import pytest

from fastp2p.config import GossipsubConfig, HostConfig
from fastp2p.host import Host
from fastp2p.peer import PeerID

from .peers import KINDS, MUXER_IDS, MUXERS
from .pubsub_harness import PubsubPeer, missing_pubsub, spawn_pubsub

pytestmark = pytest.mark.interop

_MISSING = {kind: missing_pubsub(kind) for kind in KINDS}
T = "fastp2p-interop"


def _config(muxer: str) -> HostConfig:
    pubsub = replace(GossipsubConfig(), heartbeat_interval=0.2, heartbeat_initial_delay=0.05)
    return HostConfig(muxers=(MUXER_IDS[muxer],), data_paths=("tcp",), pubsub=pubsub)


def _need(kind: str) -> None:
    if _MISSING[kind]:
        pytest.skip(_MISSING[kind] or "")


async def _wait_peer_sees(peer: PubsubPeer, n: int = 1, topic: str = T) -> None:
    await peer.send("wait_peers", topic=topic, n=n)
    await peer.next_event("peers", timeout=30)


async def _message(peer: PubsubPeer, data: str, timeout: float = 20.0) -> dict[str, object]:
    async with asyncio.timeout(timeout):
        while True:
            ev = await peer.next_event("message", timeout=timeout)
            if ev.get("data") == data:
                return ev


@pytest.mark.parametrize("fastp2p_dials", [True, False], ids=["fastp2p-dials", "peer-dials"])
@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("kind", KINDS)
async def test_pubsub_both_directions(kind: str, muxer: str, fastp2p_dials: bool) -> None:
    _need(kind)
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config(muxer)) as host:
        sub = await host.pubsub.subscribe(T)
        args = ["--muxer", muxer, "--topic", T]
        if not fastp2p_dials:
            args += ["--dial", str(host.full_addrs[0])]
        async with spawn_pubsub(kind, *args) as peer:
            pid = PeerID.from_string(peer.peer_id)
            if fastp2p_dials:
                await host.connect(peer.addr)
            async with asyncio.timeout(30):
                await host.pubsub.wait_for_peers(T, 1)
            await _wait_peer_sees(peer)
            await asyncio.sleep(1.2)  # a heartbeat on both sides: meshes formed

            # fastp2p -> peer, signed by fastp2p, verified by the peer
            await host.pubsub.publish(T, f"from-fastp2p-{kind}".encode())
            got = await _message(peer, f"from-fastp2p-{kind}")
            assert got["from"] == str(host.peer_id) and got["topic"] == T

            # peer -> fastp2p, signature verified by fastp2p's router (StrictSign)
            await peer.send("publish", topic=T, data=f"from-{kind}", id=1)
            async with asyncio.timeout(20):
                msg = await sub.get()
            assert msg.data == f"from-{kind}".encode() and msg.from_peer == pid
            assert msg.seqno is not None
            assert host.pubsub.router.stats.rejected == 0

            # a forged signature from fastp2p is dropped by the peer
            router = host.pubsub.router
            forged = router.build_message(T, b"genuine")
            forged.data = b"forged"
            forged.raw = None
            router._box(pid).msgs.append(forged.encode())
            host.pubsub._process()
            await host.pubsub.publish(T, b"after-forged")
            await _message(peer, "after-forged")
            await peer.drain(0.5)
            assert not [e for e in peer.messages() if e.get("data") == "forged"]
            assert host.pubsub.score(pid) >= 0


async def test_mixed_mesh_six_peers_exactly_once() -> None:
    for kind in KINDS:
        _need(kind)
    async with contextlib.AsyncExitStack() as stack:
        hosts = [
            await stack.enter_async_context(Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config("yamux")))
            for _ in range(2)
        ]
        subs = [await h.pubsub.subscribe(T) for h in hosts]
        refs: list[PubsubPeer] = []
        for kind in ("js", "js", "py", "py"):
            refs.append(await stack.enter_async_context(spawn_pubsub(kind, "--muxer", "yamux", "--topic", T)))
        # a complete graph: fastp2p dials everyone; the reference peers dial each other
        for h in hosts:
            for other in [*hosts, *refs]:
                if other is h:
                    continue
                addr = str(other.full_addrs[0]) if isinstance(other, Host) else other.addr
                await h.connect(addr)
        for i, r in enumerate(refs):
            for other in refs[i + 1 :]:
                await r.send("dial", addr=other.addr)
                await r.next_event("connected", timeout=30)
        async with asyncio.timeout(60):
            for h in hosts:
                await h.pubsub.wait_for_peers(T, 5)
        for r in refs:
            await _wait_peer_sees(r, 5)
        await asyncio.sleep(2.5)  # py-libp2p heartbeats once a second

        texts = []
        for i, h in enumerate(hosts):
            texts.append(f"mixed-fastp2p-{i}")
            await h.pubsub.publish(T, texts[-1].encode())
        for i, r in enumerate(refs):
            texts.append(f"mixed-{r.kind}-{i}")
            await r.send("publish", topic=T, data=texts[-1], id=i)
        await asyncio.sleep(4.0)
        for r in refs:
            await r.drain(0.2)

        origin = {t: i for i, t in enumerate(texts)}
        problems = []
        for i, s in enumerate(subs):
            got = Counter()
            while s.qsize():
                got[(await s.get()).data.decode()] += 1
            want = Counter({t: 1 for t in texts if origin[t] != i})
            if got != want:
                problems.append(f"fastp2p-{i}: {dict(got)}")
        for j, r in enumerate(refs):
            # py-libp2p also hands a peer its own messages (like js emitSelf); not a duplicate
            got = Counter(e["data"] for e in r.messages(T) if origin.get(e["data"]) != j + 2)
            want = Counter({t: 1 for t in texts if origin[t] != j + 2})
            if len([e for e in r.messages(T) if origin.get(e["data"]) == j + 2]) > 1:
                problems.append(f"{r.kind}-{j}: own message delivered more than once")
            if got != want:
                problems.append(f"{r.kind}-{j}: {dict(got)}")
        assert not problems, "\n".join(problems)

        honest = [h.peer_id for h in hosts] + [PeerID.from_string(r.peer_id) for r in refs]
        for h in hosts:
            for p in honest:
                if p != h.peer_id:
                    assert h.pubsub.score(p) >= 0, (str(h.peer_id), str(p), h.pubsub.score(p))
        for r in refs:
            if r.kind == "js":
                await r.send("scores")
                ev = await r.next_event("scores")
                scores = ev["scores"]
                assert isinstance(scores, dict)
                assert all(v >= 0 for v in scores.values()), scores


@pytest.mark.parametrize("js_direct", [True, False], ids=["both-direct", "fastp2p-only"])
async def test_direct_peers_with_js(js_direct: bool) -> None:
    """Explicit peering (gossipsub v1.1 directPeers) with js-libp2p: each side dials the
    other by itself, messages flow both ways and fastp2p never meshes js. With directPeers
    on the js side too, js never GRAFTs us; configured on our side only, js grafts us as any
    topic peer and we refuse (PRUNE) - the control that shows the first case is js's doing."""
    import socket

    from fastp2p.peer import Ed25519PrivateKey

    _need("js")
    key = Ed25519PrivateKey.generate()
    me = PeerID.from_public_key(key.public_key())
    with socket.socket() as s:  # a free loopback port, so js can be told where we will be
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--muxer", "yamux", "--topic", T]
    if js_direct:
        args += ["--direct", f"/ip4/127.0.0.1/tcp/{port}/p2p/{me}"]
    async with spawn_pubsub("js", *args) as peer:
        cfg = _config("yamux")
        cfg = replace(cfg, pubsub=replace(cfg.pubsub, direct_peers=(peer.addr,), direct_connect_initial_delay=0.05))
        async with Host(key, listen=[f"/ip4/127.0.0.1/tcp/{port}"], config=cfg) as host:
            sub = await host.pubsub.subscribe(T)
            js = PeerID.from_string(peer.peer_id)
            assert list(host.pubsub.direct_peers) == [js]
            async with asyncio.timeout(30):
                await host.pubsub.wait_for_peers(T, 1)
            await _wait_peer_sees(peer)
            await asyncio.sleep(1.5)  # heartbeats on both sides
            await host.pubsub.publish(T, b"to-direct-js")
            await _message(peer, "to-direct-js")
            await peer.send("publish", topic=T, data="from-direct-js", id=1)
            async with asyncio.timeout(20):
                assert (await sub.get()).data == b"from-direct-js"
            assert js not in host.pubsub.mesh(T)
            refused = host.pubsub.router.stats.direct_grafts_refused
            assert (refused == 0) if js_direct else (refused > 0)
            assert host.pubsub.score(js) >= 0 and host.pubsub.router.stats.rejected == 0
