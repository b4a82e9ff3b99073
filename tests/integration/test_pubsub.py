"""host.pubsub over real Hosts on TCP loopback: subscribe, publish, validators, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from fastp2p.config import GossipsubConfig, HostConfig
from fastp2p.errors import ClosedResourceError
from fastp2p.host import Host
from fastp2p.proto.gossipsub.router import MESHSUB_V11, SIGN_PREFIX
from fastp2p.proto.gossipsub.rpc_pb import RPC, Message, SubOpts, encode_rpc_obj, signing_bytes
from fastp2p.proto.protobuf import length_prefixed

T = "fastp2p-test"
FAST = GossipsubConfig(heartbeat_interval=0.1, heartbeat_initial_delay=0.01)


def cfg(**kw: object) -> HostConfig:
    return HostConfig(data_paths=("tcp",), pubsub=replace(FAST, **kw))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def hosts(n: int, config: HostConfig | None = None) -> AsyncIterator[list[Host]]:
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for _ in range(n):
            h = Host(listen=["/ip4/127.0.0.1/tcp/0"], config=config or cfg())
            out.append(await stack.enter_async_context(h))
        yield out


async def until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


async def test_publish_subscribe_two_hosts() -> None:
    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        sa = await a.pubsub.subscribe(T)
        await b.pubsub.subscribe(T)
        assert await b.pubsub.wait_for_peers(T, 1) == [a.peer_id]
        mid = await b.pubsub.publish(T, b"hello")
        async with asyncio.timeout(5):
            msg = await sa.get()
        assert (msg.data, msg.topic, msg.from_peer, msg.id) == (b"hello", T, b.peer_id, mid)
        assert isinstance(msg.seqno, int) and msg.received_from == b.peer_id
        await until(lambda: a.pubsub.mesh(T) == [b.peer_id] and b.pubsub.mesh(T) == [a.peer_id])
        assert a.pubsub.score(b.peer_id) >= 0
        assert a.pubsub.topics == [T]


async def test_message_crosses_a_line_of_hosts() -> None:
    async with hosts(4) as hs:
        for x, y in zip(hs, hs[1:], strict=False):
            await y.connect(x.full_addrs[0])
        subs = [await h.pubsub.subscribe(T) for h in hs]
        for h in hs[1:3]:
            await h.pubsub.wait_for_peers(T, 2)
        await until(lambda: all(h.pubsub.mesh(T) for h in hs))
        await hs[0].pubsub.publish(T, b"far")
        async with asyncio.timeout(5):
            got = [await s.get() for s in subs[1:]]
        assert {m.data for m in got} == {b"far"} and all(m.from_peer == hs[0].peer_id for m in got)
        assert got[2].received_from == hs[2].peer_id
        await asyncio.sleep(0.3)
        assert all(s.qsize() == 0 for s in subs)  # exactly once


async def test_validators_sync_async_reject_ignore() -> None:
    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        sa = await a.pubsub.subscribe(T)
        await b.pubsub.subscribe(T)
        await b.pubsub.wait_for_peers(T)
        seen: list[bytes] = []

        async def slow_check(msg):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.01)
            seen.append(msg.data)
            if msg.data.startswith(b"bad"):
                return "reject"
            if msg.data.startswith(b"skip"):
                return "ignore"
            return True

        a.pubsub.set_validator(T, slow_check)
        for d in (b"bad-1", b"skip-1", b"good-1"):
            await b.pubsub.publish(T, d)
        async with asyncio.timeout(5):
            msg = await sa.get()
        assert msg.data == b"good-1" and sa.qsize() == 0
        assert seen == [b"bad-1", b"skip-1", b"good-1"]
        assert a.pubsub.router.peer_score.counters(b.peer_id, T)["invalid_message_deliveries"] >= 0.9
        a.pubsub.set_validator(T, lambda m: m.data != b"nope")
        await b.pubsub.publish(T, b"nope")
        await b.pubsub.publish(T, b"yes")
        async with asyncio.timeout(5):
            assert (await sa.get()).data == b"yes"
        a.pubsub.set_validator(T, None)


async def test_slow_subscriber_drops_oldest() -> None:
    async with hosts(2, cfg(subscription_queue_size=4)) as (a, b):
        await b.connect(a.full_addrs[0])
        sa = await a.pubsub.subscribe(T)
        await b.pubsub.subscribe(T)
        await b.pubsub.wait_for_peers(T)
        for i in range(10):
            await b.pubsub.publish(T, b"%d" % i)
        await until(lambda: sa.dropped == 6)
        got = [(await sa.get()).data for _ in range(4)]
        assert got == [b"6", b"7", b"8", b"9"] and sa.qsize() == 0


async def test_bad_signature_rejected_and_sender_penalised() -> None:
    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        sa = await a.pubsub.subscribe(T)
        # b speaks meshsub by hand on its own stream, with a forged message.
        stream = await b.open_stream(a.peer_id, MESHSUB_V11)
        msg = b.pubsub.router.build_message(T, b"genuine")
        msg.data = b"forged"
        msg.raw = None
        good = b.pubsub.router.build_message(T, b"fine")
        await stream.write(length_prefixed(encode_rpc_obj(RPC([SubOpts(True, T)], [msg]))))
        await until(lambda: a.pubsub.router.stats.rejected == 1)
        assert sa.qsize() == 0
        assert a.pubsub.score(b.peer_id) < 0
        # a correctly signed message on the same stream is still delivered
        assert b.identity.public_key().verify(good.signature or b"", SIGN_PREFIX + signing_bytes(good))
        await stream.write(length_prefixed(encode_rpc_obj(RPC(publish=[good]))))
        async with asyncio.timeout(5):
            assert (await sa.get()).data == b"fine"
        await stream.aclose()


async def test_malformed_rpc_resets_stream_only() -> None:
    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        await a.pubsub.subscribe(T)
        stream = await b.open_stream(a.peer_id, MESHSUB_V11)
        await stream.write(b"\x05\x12\x03\x0a\x01")  # publish: Message without topic
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await stream.read()
        assert a.connection(b.peer_id) is not None


async def test_unsubscribe_and_close() -> None:
    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        sa = await a.pubsub.subscribe(T)
        sa2 = await a.pubsub.subscribe(T)
        await b.pubsub.subscribe(T)
        await b.pubsub.wait_for_peers(T)
        await sa.aclose()
        assert a.pubsub.topics == [T]  # sa2 still holds the topic
        await sa2.aclose()
        await until(lambda: b.pubsub.topic_peers(T) == [])
        assert a.pubsub.topics == []
        async with asyncio.timeout(1):
            assert [m async for m in sa] == []
    with pytest.raises(ClosedResourceError):
        await sa.get()


async def test_host_close_ends_subscriptions() -> None:
    async with hosts(1) as (a,):
        sub = await a.pubsub.subscribe(T)
        reader = asyncio.create_task(sub.get())
        await asyncio.sleep(0.01)
    with pytest.raises(ClosedResourceError):
        await reader


async def test_unused_pubsub_opens_no_streams() -> None:
    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        await asyncio.sleep(0.2)
        assert not a.pubsub._links and not b.pubsub._links
        await a.pubsub.subscribe(T)
        await until(lambda: a.peer_id in b.pubsub.router.peers)


async def test_disabled_pubsub() -> None:
    config = HostConfig(pubsub=replace(FAST, enabled=False))
    async with Host(config=config) as h:
        with pytest.raises(ClosedResourceError):
            h.pubsub  # noqa: B018


async def test_disconnect_forgets_peer() -> None:
    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        await a.pubsub.subscribe(T)
        await b.pubsub.subscribe(T)
        await b.pubsub.wait_for_peers(T)
        await b.disconnect(a.peer_id)
        await until(lambda: a.pubsub.topic_peers(T) == [] and not a.pubsub.router.peers)


async def test_message_fields_without_signing() -> None:
    config = cfg(signature_policy="strict_no_sign")
    async with hosts(2, config) as (a, b):
        await b.connect(a.full_addrs[0])
        sa = await a.pubsub.subscribe(T)
        await b.pubsub.subscribe(T)
        await b.pubsub.wait_for_peers(T)
        await b.pubsub.publish(T, b"anon")
        async with asyncio.timeout(5):
            m = await sa.get()
        assert m.from_peer is None and m.seqno is None and m.data == b"anon"
        assert isinstance(Message(topic=T), Message)


async def test_direct_peers_connect_redial_and_stay_out_of_the_mesh() -> None:
    """GossipsubConfig.direct_peers (v1.1 explicit peering) on real hosts: the configured
    peer is dialled without a connect() call, messages flow both ways, neither side meshes
    the other, and a dropped connection is redialled on the next interval."""
    async with hosts(1, cfg()) as (b,):
        direct = cfg(direct_peers=(str(b.full_addrs[0]),), direct_connect_interval=0.3,
                     direct_connect_initial_delay=0.05)
        async with hosts(1, direct) as (a,):
            assert list(a.pubsub.direct_peers) == [b.peer_id]
            sa = await a.pubsub.subscribe(T)  # starts pubsub, and with it the direct dialling
            sb = await b.pubsub.subscribe(T)
            await until(lambda: a.connection(b.peer_id) is not None)
            await a.pubsub.wait_for_peers(T, 1)
            await b.pubsub.wait_for_peers(T, 1)
            await b.pubsub.publish(T, b"b to a")
            await a.pubsub.publish(T, b"a to b")
            async with asyncio.timeout(5):
                assert (await sa.get()).data == b"b to a"
                assert (await sb.get()).data == b"a to b"
            await asyncio.sleep(0.5)  # several heartbeats: a never grafts its direct peer
            assert b.peer_id not in a.pubsub.mesh(T) and a.peer_id not in b.pubsub.mesh(T)
            await b.disconnect(a.peer_id)
            await until(lambda: a.connection(b.peer_id) is None)
            await until(lambda: a.connection(b.peer_id) is not None, timeout=10)  # redialled
            await a.pubsub.wait_for_peers(T, 1)
            await b.pubsub.wait_for_peers(T, 1)
            await b.pubsub.publish(T, b"again")
            async with asyncio.timeout(5):
                assert (await sa.get()).data == b"again"


def test_direct_peers_need_a_peer_id() -> None:
    from fastp2p.services.pubsub import _parse_direct_peers

    with pytest.raises(ValueError, match="/p2p/"):
        _parse_direct_peers(("/ip4/127.0.0.1/tcp/4001",))


async def test_identify_exchanges_signed_peer_records() -> None:
    """Hosts send their listen addresses in a signed peer record over identify and keep
    the other's (verified) in the peerstore: what gossipsub relays in its PRUNE PX."""
    from fastp2p.proto.peer_record import open_peer_record

    async with hosts(2) as (a, b):
        await b.connect(a.full_addrs[0])
        def identified(h: Host, o: Host) -> bool:
            r = h.peerstore.get(o.peer_id)
            return r is not None and r.identified

        await until(lambda: identified(a, b) and identified(b, a))
        for h, other in ((a, b), (b, a)):
            rec = h.peerstore.get(other.peer_id)
            assert rec is not None and rec.signed_record is not None
            opened = open_peer_record(rec.signed_record)
            assert opened.peer_id == other.peer_id and list(opened.addrs) == list(other.addrs)
            assert rec.signed_record_seq == opened.seq > 0
        assert a.pubsub._signed_record_of(b.peer_id) == a.peerstore.get(b.peer_id).signed_record  # type: ignore[union-attr]
