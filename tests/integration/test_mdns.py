"""mDNS discovery between real Hosts in one process, on the loopback interface.

The hosts join the group on ``lo`` (``MdnsConfig(interfaces=("lo",),
loopback=True)``) on a free port, so nothing leaves this machine and the
tests run without root. Across namespaces, on eth0 and port 5353, and with
``fastp2p listen --mdns`` processes: tests/netns/test_mdns_netns.py.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from fastp2p import Host, HostConfig, MdnsConfig
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID
from fastp2p.proto import dns, mdns

pytestmark = pytest.mark.timeout(60)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lo_multicast_reason() -> str | None:
    """Why multicast on lo does not work here, or None."""
    try:
        idx = socket.if_nametoindex("lo")
    except OSError as exc:
        return f"no lo interface: {exc}"
    port = _free_udp_port()
    group = socket.inet_aton(mdns.MDNS_GROUP_V4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", port))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4si", group, b"\0" * 4, idx))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("4s4si", b"\0" * 4, b"\0" * 4, idx))
            s.settimeout(2)
            s.sendto(b"probe", (mdns.MDNS_GROUP_V4, port))
            s.recvfrom(16)
        except OSError as exc:
            return f"multicast on lo does not work here: {exc}"
    return None


_reason = _lo_multicast_reason()
needs_lo_multicast = pytest.mark.skipif(_reason is not None, reason=str(_reason))


def _config(port: int, **kw: object) -> HostConfig:
    return HostConfig(mdns=MdnsConfig(interfaces=("lo",), loopback=True, port=port, interval=0.5, **kw))


@needs_lo_multicast
async def test_two_hosts_discover_each_other_and_auto_dial() -> None:
    port = _free_udp_port()
    got_a: list[tuple[PeerID, list[Multiaddr]]] = []
    got_b: asyncio.Queue[tuple[PeerID, list[Multiaddr]]] = asyncio.Queue()

    async def async_cb(peer: PeerID, addrs: list[Multiaddr]) -> None:
        await got_b.put((peer, addrs))

    t0 = time.monotonic()
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config(port, auto_dial=True)) as a:
        a.on_peer_discovered(lambda p, ad: got_a.append((p, ad)))
        async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config(port)) as b:
            b.on_peer_discovered(async_cb)
            peer, addrs = await asyncio.wait_for(got_b.get(), 10)
            assert peer == a.peer_id and addrs == a.addrs
            latency = time.monotonic() - t0
            async with asyncio.timeout(10):
                while not got_a or a.connection(b.peer_id) is None:
                    await asyncio.sleep(0.02)
            assert got_a[0] == (b.peer_id, b.addrs)
            assert b.addrs[0] in a.peerstore.addrs(b.peer_id)
            assert await a.ping(b.peer_id) > 0
            # each peer reported once, not at every answer
            await asyncio.sleep(1.2)
            assert [p for p, _ in got_a] == [b.peer_id]
            assert got_b.qsize() == 0
            mdns_a = a._mdns
            assert mdns_a is not None and mdns_a.interfaces == ["lo"] and mdns_a.malformed == 0
            m = a.metrics()
            assert m["fastp2p_mdns_peers"]["samples"][0]["value"] == 1
            kinds = {s["labels"]["kind"]: s["value"] for s in m["fastp2p_mdns_datagrams_total"]["samples"]}
            assert kinds["received"] > 0 and kinds["sent"] > 0 and kinds["malformed"] == 0
        # b said goodbye on close: a forgets it at once
        async with asyncio.timeout(5):
            while b.peer_id in mdns_a.state.peers():
                await asyncio.sleep(0.02)
    assert mdns_a.closed
    print(f"loopback mDNS discovery latency {latency * 1000:.1f} ms")


@needs_lo_multicast
async def test_garbage_on_the_group_is_counted_and_ignored() -> None:
    port = _free_udp_port()
    seen: asyncio.Queue[PeerID] = asyncio.Queue()
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config(port)) as a:
        a.on_peer_discovered(lambda p, _: seen.put_nowait(p))
        m = a._mdns
        assert m is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                         struct.pack("4s4si", b"\0" * 4, b"\0" * 4, socket.if_nametoindex("lo")))
            for i in range(300):
                s.sendto(bytes([i % 256]) * (i % 40), (mdns.MDNS_GROUP_V4, port))
                if i % 50 == 49:
                    await asyncio.sleep(0.05)  # stay within the socket's receive buffer
            s.sendto(b"\x00" * 9500, (mdns.MDNS_GROUP_V4, port))
            # a bad callback does not stop the host
            a.on_peer_discovered(lambda p, _: 1 / 0)
            async with asyncio.timeout(10):
                while m.malformed < 301:
                    await asyncio.sleep(0.02)
            # a well-formed answer from another peer still gets through
            other = mdns.MdnsState(PeerID.from_string("12D3KooWGSzV1RfGvenRLX4Xpg9ey4iMKny6TkuDr3d3scmzxjwV"),
                                   0.0, loopback=True, port=port)
            other.set_addrs([Multiaddr("/ip4/127.0.0.1/tcp/1")])
            # (s is bound to an ephemeral port by its first send)
            # RFC 6762 section 11: answers from a port other than the mDNS one are ignored
            s.sendto(dns.encode(other.full_answer()), (mdns.MDNS_GROUP_V4, port))
            await asyncio.sleep(0.5)
            assert seen.empty()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("", port))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                         struct.pack("4s4si", b"\0" * 4, b"\0" * 4, socket.if_nametoindex("lo")))
            s.sendto(dns.encode(other.full_answer()), (mdns.MDNS_GROUP_V4, port))
            assert await asyncio.wait_for(seen.get(), 5) == other.peer_id
        assert Multiaddr("/ip4/127.0.0.1/tcp/1") in a.peerstore.addrs(other.peer_id)


def test_config_forms() -> None:
    assert HostConfig().mdns is False
    with pytest.raises(ValueError):
        MdnsConfig(interval=0)
    with pytest.raises(ValueError):
        MdnsConfig(port=70000)


async def test_disabled_mdns_starts_nothing() -> None:
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"],
                    config=HostConfig(mdns=MdnsConfig(enabled=False))) as h:
        assert h._mdns is None
