"""The fastp2p:// Dask comm backend against distributed's comm contract.

These checks cover what ``distributed/comm/tests/test_comms.py``'s ``check_*``
helpers check for a scheme (client/server and addresses, implicit and explicit
close, connect timeout, many listeners, many concurrent comms, large messages,
the deserialize flags). distributed's wheels and sdists ship no tests, so the
helpers cannot be imported here; these are written for this backend.
Not applicable: the inproc- and TLS-certificate-specific tests (fastp2p's
counterpart, a wrong PeerId, is tested below), the tests that patch tornado
streams or subclass distributed's TCP classes, and UCX.
"""

from __future__ import annotations

import asyncio
import time

import pytest

distributed = pytest.importorskip("distributed")
np = pytest.importorskip("numpy")

import dask  # noqa: E402
from distributed.comm import (  # noqa: E402
    CommClosedError,
    connect,
    get_address_host,
    get_local_address_for,
    listen,
    parse_address,
    resolve_address,
)
from distributed.comm.core import FatalCommClosedError  # noqa: E402
from distributed.comm.registry import get_backend  # noqa: E402
from distributed.protocol import Serialized, deserialize, serialize, to_serialize  # noqa: E402
from distributed.utils import get_ip  # noqa: E402

from fastp2p import _accel  # noqa: E402
from fastp2p.integrations import dask as fdask  # noqa: E402
from fastp2p.peer import Ed25519PrivateKey, PeerID  # noqa: E402

pytestmark = pytest.mark.timeout(60)

LOCAL = "fastp2p:///ip4/127.0.0.1/tcp/0"


@pytest.fixture(params=["tcp", "shm"])
async def data_path(request: pytest.FixtureRequest):
    """Every check on both data paths; each test gets (and closes) a fresh Host."""
    if request.param == "shm" and not _accel.HAVE_NATIVE:
        pytest.skip("the shared-memory path needs the native core (FASTP2P_NO_EXTENSIONS set)")
    paths = ["tcp"] if request.param == "tcp" else ["shm", "tcp"]
    with dask.config.set({"distributed.comm.fastp2p.data-paths": paths}):
        yield request.param
        await fdask.close_hosts()


async def comm_pair(addr: str = LOCAL, listen_args=None, connect_args=None):
    q: asyncio.Queue = asyncio.Queue()

    async def handle_comm(comm):
        await q.put(comm)

    async with listen(addr, handle_comm, **(listen_args or {})) as listener:
        comm = await connect(listener.contact_address, **(connect_args or {}))
    return comm, await q.get()


def test_entry_point_registered():
    from importlib.metadata import entry_points

    names = [ep.name for ep in entry_points(group="distributed.comm.backends")]
    assert "fastp2p" in names, "pip install -e .[dask] registers the entry point"
    assert isinstance(get_backend("fastp2p"), fdask.FastP2PBackend)


async def check_client_server(addr: str, check_contact=None, n_clients: int = 20) -> None:
    served: list[str] = []

    async def handle_comm(comm):
        try:
            assert parse_address(comm.peer_address)[0] == "fastp2p"
            served.append(comm.peer_address)
            msg = await comm.read()
            assert msg["op"] == "ping"
            msg["op"] = "pong"
            await comm.write(msg)
            assert (await comm.read())["op"] == "foobar"
        finally:
            await comm.close()

    listener = await listen(addr, handle_comm, xxx="ignored")
    try:
        scheme, loc = parse_address(listener.listen_address)
        assert scheme == "fastp2p" and "/p2p/" in loc
        contact = listener.contact_address
        if check_contact is not None:
            check_contact(parse_address(contact)[1])
        got: list[int] = []

        async def client(key: int, delay: float = 0) -> None:
            comm = await connect(contact, xxx="ignored")
            try:
                assert comm.peer_address == contact
                await comm.write({"op": "ping", "data": key})
                await comm.write({"op": "foobar"})
                if delay:
                    await asyncio.sleep(delay)
                assert await comm.read() == {"op": "pong", "data": key}
                got.append(key)
            finally:
                await comm.close()

        await client(1234)
        await asyncio.gather(*(client(i, 0.02) for i in range(n_clients)))
        assert set(got) == {1234} | set(range(n_clients))
    finally:
        listener.stop()


def _host_is(expected: str):
    def check(loc: str) -> None:
        assert get_backend("fastp2p").get_address_host(loc) == expected

    return check


async def test_client_server(data_path):
    await check_client_server(LOCAL, _host_is("127.0.0.1"))
    await check_client_server("fastp2p://127.0.0.1", _host_is("127.0.0.1"))
    # Dask's host:port forms (what `dask scheduler --protocol fastp2p` passes)
    await check_client_server("fastp2p://", _host_is(get_ip()), n_clients=3)
    await check_client_server("fastp2p://:0", _host_is(get_ip()), n_clients=3)


async def test_comms_share_one_connection(data_path):
    """Every comm to a peer is a stream on one connection, with the data path it uses."""

    async def echo(comm):
        try:
            while True:
                await comm.write(await comm.read())
        except CommClosedError:
            pass

    async with listen(LOCAL, echo) as listener:
        comms = await asyncio.gather(*(connect(listener.contact_address) for _ in range(30)))
        replies = await asyncio.gather(*(c.write({"i": i}) for i, c in enumerate(comms)))
        assert all(r > 0 for r in replies)
        assert [await c.read() for c in comms] == [{"i": i} for i in range(30)]
        info = comms[0].extra_info
        assert info["data_path"] == data_path
        assert info["peer_id"] == parse_address(listener.contact_address)[1].rsplit("/", 1)[1]
        st = await fdask._state()
        dialer = await st.dialer_for(PeerID.from_string(info["peer_id"]), None)
        assert len(dialer.connections) == 1
        for c in comms:
            await c.close()


async def test_comm_closed_implicit(data_path):
    async def handle_comm(comm):
        await comm.close()

    async with listen(LOCAL, handle_comm) as listener:
        comm = await connect(listener.contact_address)
        with pytest.raises(CommClosedError):
            await comm.write({})
            await comm.read()
        comm = await connect(listener.contact_address)
        with pytest.raises(CommClosedError):
            await comm.read()


async def test_comm_closed_explicit(data_path):
    a, b = await comm_pair()
    a_read = asyncio.ensure_future(a.read())
    b_read = asyncio.ensure_future(b.read())
    await asyncio.sleep(0)
    await a.close()
    with pytest.raises(CommClosedError):
        await a_read
    with pytest.raises(CommClosedError):
        await b_read
    with pytest.raises(CommClosedError):
        await a.read()
    with pytest.raises(CommClosedError):
        await b.read()
    with pytest.raises(CommClosedError):
        await a.write({})
    with pytest.raises(CommClosedError):
        await b.write({})
    assert a.closed() and b.closed()
    await b.close()
    await b.close()


async def test_data_before_close_is_delivered(data_path):
    a, b = await comm_pair()
    await a.write({"last": b"words"})
    await a.close()
    assert await b.read() == {"last": b"words"}
    with pytest.raises(CommClosedError):
        await b.read()


async def test_connect_timeout(data_path):
    t0 = time.monotonic()
    with pytest.raises(OSError):
        await connect("fastp2p:///ip4/127.0.0.1/tcp/9/p2p/" + str(_other_peer()), timeout=0.3)
    assert time.monotonic() - t0 < 3


async def test_many_listeners(data_path):
    async def handle_comm(comm):
        await comm.close()

    listeners = [await listen(LOCAL, handle_comm) for _ in range(20)]
    assert len({lst.listen_address for lst in listeners}) == 20
    assert len({lst.contact_address for lst in listeners}) == 20
    # each listener gets its own comms although they share a host
    for lst in listeners[:3]:
        comm = await connect(lst.contact_address)
        with pytest.raises(CommClosedError):
            await comm.read()
    for lst in listeners:
        lst.stop()


@pytest.mark.parametrize("nbytes", [0, 1, 100_000, 48 << 20])
async def test_large_and_odd_messages(data_path, nbytes):
    a, b = await comm_pair()
    arr = np.random.default_rng(0).integers(0, 255, nbytes, dtype="u1")
    msg = {"arr": to_serialize(arr), "raw": b"x" * (nbytes // 3), "many": [to_serialize(np.arange(i)) for i in range(50)]}
    n, got = await asyncio.gather(a.write(msg), b.read())
    assert n >= nbytes
    np.testing.assert_array_equal(got["arr"], arr)
    assert got["raw"] == b"x" * (nbytes // 3)
    assert all((m == np.arange(i)).all() for i, m in enumerate(got["many"]))
    # and back, while the other direction is busy too
    _, back, _, fwd = await asyncio.gather(b.write({"arr": to_serialize(arr)}), a.read(),
                                           a.write(b"ping"), b.read())
    np.testing.assert_array_equal(back["arr"], arr)
    assert fwd == b"ping"
    await a.close()
    await b.close()


async def test_deserialize_flags(data_path):
    msg = {"op": "update", "x": b"abc", "to_ser": [to_serialize(123)], "ser": Serialized(*serialize(456))}

    def check_out_false(out):
        assert out["op"] == "update" and out["x"] == b"abc"
        (to_ser,) = out["to_ser"]
        assert isinstance(to_ser, Serialized) and deserialize(to_ser.header, to_ser.frames) == 123
        assert isinstance(out["ser"], Serialized) and deserialize(out["ser"].header, out["ser"].frames) == 456

    def check_out_true(out):
        out = {**out, "to_ser": list(out["to_ser"])}  # msgpack hands lists back as tuples
        assert out == {"op": "update", "x": b"abc", "to_ser": [123], "ser": 456}

    for deser, check in ((False, check_out_false), (True, check_out_true)):
        # listener side flag
        q: asyncio.Queue = asyncio.Queue()

        async def handle_comm(comm, q=q):
            try:
                q.put_nowait(await comm.read())
            finally:
                await comm.close()

        async with listen(LOCAL, handle_comm, deserialize=deser) as listener:
            comm = await connect(listener.contact_address)
        await comm.write(msg)
        check(await q.get())
        await comm.close()

        # connector side flag
        done = asyncio.Event()

        async def handle_comm2(comm, done=done):
            try:
                await comm.write(msg)
                await done.wait()
            finally:
                await comm.close()

        async with listen(LOCAL, handle_comm2) as listener:
            comm = await connect(listener.contact_address, deserialize=deser)
        out = await comm.read()
        done.set()
        await comm.close()
        check(out)


def _other_peer() -> PeerID:
    return PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())


async def test_wrong_peer_id_is_refused(data_path):
    async def handle_comm(comm):  # pragma: no cover - never reached
        await comm.close()

    async with listen(LOCAL, handle_comm) as listener:
        good = listener.contact_address
        real = good.rsplit("/", 1)[1]
        other = str(_other_peer())
        bad = good[: -len(real)] + other
        t0 = time.monotonic()
        with pytest.raises(FatalCommClosedError, match="refusing") as ei:
            await connect(bad, timeout=10)
        assert time.monotonic() - t0 < 5, "a wrong peer is fatal, not retried until the timeout"
        assert other in str(ei.value) and real in str(ei.value)


def test_address_helpers():
    pid = str(_other_peer())
    addr = f"fastp2p:///ip4/10.1.2.3/tcp/8786/p2p/{pid}"
    assert get_address_host(addr) == "10.1.2.3"
    assert get_backend("fastp2p").get_address_host_port(addr.split("://", 1)[1]) == ("10.1.2.3", 8786)
    assert resolve_address(addr) == addr
    assert resolve_address(f"fastp2p:///dns4/localhost/tcp/1/p2p/{pid}") == f"fastp2p:///ip4/127.0.0.1/tcp/1/p2p/{pid}"
    assert get_local_address_for("fastp2p:///ip4/127.0.0.1/tcp/1").startswith("fastp2p:///ip4/127.0.0.1/")
    with pytest.raises(ValueError):
        get_address_host("fastp2p:///not/a/multiaddr")


async def test_identity_file_keeps_peer_id(tmp_path):
    key = tmp_path / "dask.key"
    ids = []
    for _ in range(2):
        with dask.config.set({"distributed.comm.fastp2p.identity": str(key)}):
            async def handle_comm(comm):
                await comm.close()

            async with listen(LOCAL, handle_comm) as listener:
                ids.append(listener.contact_address.rsplit("/", 1)[1])
            await fdask.close_hosts()
    assert key.exists() and ids[0] == ids[1]


async def test_busy_poll_from_the_dask_config():
    assert fdask._host_config().busy_poll_us == 0
    with dask.config.set({"distributed.comm.fastp2p.busy-poll-us": 150,
                          "distributed.comm.fastp2p.data-paths": ["tcp"]}):
        cfg = fdask._host_config()
        assert cfg.busy_poll_us == 150 and cfg.data_paths == ("tcp",)
        comm, peer = await comm_pair()
        await comm.write({"x": 1})
        assert await peer.read() == {"x": 1}
        loop = asyncio.get_running_loop()  # (other tests' loops may have left hosts)
        hosts = [f.result().host for lp, f in fdask._states.values() if lp is loop and f.done()]
        assert hosts and all(h._busy_poll is not None for h in hosts)  # noqa: SLF001
        await comm.close()
        await peer.close()
        await fdask.close_hosts()


async def test_two_event_loops_in_one_process(data_path):
    """A loop in another thread (as Client's sync loop) gets its own Host and works."""
    import threading

    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    main_loop = asyncio.get_running_loop()
    stop = threading.Event()

    def serve() -> None:
        async def run() -> None:
            async def echo(comm):
                await comm.write(await comm.read())
                await comm.close()

            async with listen(LOCAL, echo) as listener:
                main_loop.call_soon_threadsafe(ready.set_result, listener.contact_address)
                while not stop.is_set():
                    await asyncio.sleep(0.02)
            await fdask.close_hosts()

        asyncio.run(run())

    t = threading.Thread(target=serve)
    t.start()
    try:
        addr = await asyncio.wait_for(ready, 10)
        assert fdask.local_host() is None or str(fdask.local_host().peer_id) not in addr
        comm = await connect(addr)
        await comm.write({"from": "main loop"})
        assert await comm.read() == {"from": "main loop"}
        await comm.close()
    finally:
        stop.set()
        await asyncio.to_thread(t.join, 10)
