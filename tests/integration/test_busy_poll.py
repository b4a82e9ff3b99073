"""Busy polling (HostConfig.busy_poll_us): a waiting read keeps the loop polling
for a bounded time, and an idle host stops polling."""

from __future__ import annotations

import asyncio
import time

import pytest

from fastp2p.config import HostConfig
from fastp2p.testing import host_pair
from fastp2p.transport.busypoll import MAX_BUSY_POLL_US, BusyPoller

PROTO = "/test/busypoll/1.0.0"


def test_config_bounds() -> None:
    assert HostConfig().busy_poll_us == 0
    HostConfig(busy_poll_us=MAX_BUSY_POLL_US)
    for bad in (-1, MAX_BUSY_POLL_US + 1):
        with pytest.raises(ValueError, match="busy_poll_us"):
            HostConfig(busy_poll_us=bad)


async def test_bounds_of_the_poller() -> None:
    loop = asyncio.get_running_loop()
    for bad in (0, -5, MAX_BUSY_POLL_US + 1):
        with pytest.raises(ValueError):
            BusyPoller(loop, bad)


async def test_a_kick_polls_for_the_budget_then_stops() -> None:
    bp = BusyPoller(asyncio.get_running_loop(), 50_000)  # (budgets generous for a loaded CI)
    assert not bp.active
    bp.kick()
    assert bp.active and bp.spins == 0  # the first spin runs after the caller's callback
    t0 = time.monotonic()
    await asyncio.sleep(0.001)
    assert bp.active and bp.spins > 0  # the loop is iterating, not sleeping
    while bp.active and time.monotonic() - t0 < 5:
        await asyncio.sleep(0.002)
    assert not bp.active
    assert time.monotonic() - t0 < 1.0  # stopped near its 50 ms budget, not at some later time
    spins = bp.spins
    await asyncio.sleep(0.01)
    assert bp.spins == spins  # nothing queued any more: an idle loop sleeps


async def test_kicks_extend_the_poll_and_close_ends_it() -> None:
    bp = BusyPoller(asyncio.get_running_loop(), 100_000)
    for _ in range(10):  # kicks every 2 ms, each within the 100 ms budget
        bp.kick()
        await asyncio.sleep(0.002)
        assert bp.active
    bp.close()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not bp.active
    bp.kick()  # a closed poller does not start again
    assert not bp.active


async def _until_idle(poller: BusyPoller) -> None:
    t0 = time.monotonic()
    while poller.active and time.monotonic() - t0 < 5:
        await asyncio.sleep(0.002)
    assert not poller.active


async def _echo(stream) -> None:  # type: ignore[no-untyped-def]
    while data := await stream.read(100):
        await stream.write(data)
    await stream.aclose()


async def test_a_host_polls_while_a_read_waits_and_not_when_idle() -> None:
    cfg = HostConfig(data_paths=("tcp",), busy_poll_us=50_000)
    async with host_pair(cfg, handlers={PROTO: _echo}) as (a, b, peer):
        poller = a._busy_poll  # noqa: SLF001 - the host's poller
        assert poller is not None and a.connection(peer).busy_poll is poller
        s = await a.open_stream(peer, PROTO)
        for msg in (b"one", b"two" * 30):  # readinto (lent buffer) and read paths
            await s.write(msg)
            assert await s.readexactly(len(msg)) == msg
        await _until_idle(poller)  # (the reads above kicked it)
        got = bytearray(10)
        reader = asyncio.ensure_future(s.readinto(got))
        await asyncio.sleep(0)
        assert poller.active  # the waiting read kicked it
        await _until_idle(poller)  # nothing came within the budget: the loop may sleep
        assert not reader.done()
        await s.write(b"late")
        assert await asyncio.wait_for(reader, 10) == 4 and bytes(got[:4]) == b"late"
        await _until_idle(poller)
        reader = asyncio.ensure_future(s.read(10))  # the read() path waits elsewhere
        await asyncio.sleep(0)
        assert poller.active
        await s.write(b"x")
        assert await asyncio.wait_for(reader, 10) == b"x"
        await s.aclose()
    assert not poller.active
    poller.kick()  # closed with its host
    assert not poller.active


async def test_no_poller_by_default() -> None:
    async with host_pair(HostConfig(data_paths=("tcp",))) as (a, _b, peer):
        assert a._busy_poll is None  # noqa: SLF001
        assert a.connection(peer).busy_poll is None


async def test_the_budget_halves_after_long_waits_and_comes_back_after_a_short_one() -> None:
    bp = BusyPoller(asyncio.get_running_loop(), 20_000)
    bp.kick()  # the first kick polls the whole budget
    assert bp.budget_us == 20_000 and bp.active
    budgets = []
    for _ in range(14):  # reads that each waited longer than the budget
        await asyncio.sleep(0.025)
        bp.kick()
        budgets.append(bp.budget_us)
    assert budgets[:3] == [10_000, 5_000, 2_500]
    assert budgets[-1] == 0  # halved down to none
    await asyncio.sleep(0.025)
    assert not bp.active
    spins = bp.spins
    bp.kick()  # (a long gap again: still none)
    assert not bp.active
    bp.kick()  # right after the previous kick: a short wait, polling pays again
    assert bp.budget_us == 20_000 and bp.active
    await asyncio.sleep(0.001)
    assert bp.spins > spins
    bp.close()


class _Kicks:
    """A poller that counts its kicks."""

    def __init__(self) -> None:
        self.n = 0

    def kick(self) -> None:
        self.n += 1


async def test_each_side_of_the_upgrade_kicks_the_poller_while_it_waits() -> None:
    from fastp2p.keys import Ed25519PrivateKey
    from fastp2p.multiaddr import Multiaddr
    from fastp2p.transport.tcp import TcpTransport
    from fastp2p.transport.upgrader import secure_inbound, secure_outbound

    cfg = HostConfig(data_paths=("tcp",))
    dialer, listener = _Kicks(), _Kicks()
    inbound: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def on_raw(raw) -> None:  # type: ignore[no-untyped-def]
        inbound.set_result(await secure_inbound(raw, Ed25519PrivateKey.generate(), cfg,
                                                busy_poll=listener))  # type: ignore[arg-type]

    t = TcpTransport()
    lst = await t.listen(Multiaddr("/ip4/127.0.0.1/tcp/0"), on_raw)
    try:
        raw = await t.dial(lst.addrs[0])
        chan = await secure_outbound(raw, Ed25519PrivateKey.generate(), cfg,
                                     busy_poll=dialer)  # type: ignore[arg-type]
        other = await asyncio.wait_for(inbound, 10)
        # the dialer waits for the answer to its proposal and message 1 (message 2),
        # the listener for message 1, then message 3: a kick before each wait
        assert dialer.n >= 1 and listener.n >= 2
        for c in (chan, other):
            c.raw.abort()  # type: ignore[attr-defined]
    finally:
        await lst.aclose()


async def test_the_host_reports_its_polling_in_metrics() -> None:
    cfg = HostConfig(data_paths=("tcp",), busy_poll_us=50_000)
    async with host_pair(cfg, handlers={PROTO: _echo}) as (a, _b, peer):
        s = await a.open_stream(peer, PROTO)
        await s.write(b"ping")
        assert await s.readexactly(4) == b"ping"
        await s.aclose()
        reg = a.metrics_registry
        assert reg.value("fastp2p_busy_poll_spins_total") == a._busy_poll.spins > 0  # noqa: SLF001
        assert reg.value("fastp2p_busy_poll_budget_us") == a._busy_poll.budget_us > 0  # noqa: SLF001
        assert "fastp2p_busy_poll_spins_total" in a.metrics()
    async with host_pair(HostConfig(data_paths=("tcp",))) as (a, _b, _peer):
        assert "fastp2p_busy_poll" not in a.metrics()
