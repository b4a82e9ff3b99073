"""Conformance: fastp2p.testing.check_stream / check_muxer over every muxer and data path.

Data paths: ``tcp`` (``HostConfig(data_paths=("tcp",))``: Noise over TCP
loopback) and ``shm`` (the default data paths: the connection upgrades to the
same-host shared-memory rings; every host pair asserts both ends got there).

Each sub-check is its own test (``only=[name]``), so a known bug marks exactly
one case ``xfail(strict=True)``. The default event loop runs every case;
uvloop runs the whole suites once per muxer and data path. The pure-Python
twins are covered by CI's second pass (``FASTP2P_NO_EXTENSIONS=1``), where the
``shm`` cases skip: the shared-memory path needs the native core.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable

import pytest

from fastp2p.config import HostConfig
from fastp2p.host import Host
from fastp2p.peer import PeerID
from fastp2p.stream import Stream
from fastp2p.testing import (
    MUXER_SUBTESTS,
    STREAM_CHECKS,
    check_muxer,
    check_stream,
    host_pair,
    stream_pair,
)
from fastp2p.transport import shm

MUXERS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}
PATHS = ("tcp", "shm")
SHM_OK, SHM_WHY = shm.available()

# Known bugs, keyed by (sub-check, muxer, data path); the tests stay, marked xfail(strict=True).
KNOWN_STREAM_BUGS: dict[tuple[str, str, str], str] = {}
KNOWN_MUXER_BUGS: dict[tuple[str, str, str], str] = {}


def _path_marks(path: str) -> list[pytest.MarkDecorator]:
    if path == "shm" and not SHM_OK:
        return [pytest.mark.skip(reason=SHM_WHY)]
    return []


def _cases(names: tuple[str, ...], bugs: dict[tuple[str, str, str], str]) -> list[object]:
    out: list[object] = []
    for name in names:
        for path in PATHS:
            for mux in MUXERS:
                reason = bugs.get((name, mux, path))
                marks = _path_marks(path)
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                out.append(pytest.param(name, mux, path, id=f"{path}-{mux}-{name}", marks=marks))
    return out


def _config(mux: str, path: str = "tcp") -> HostConfig:
    if path == "tcp":
        return HostConfig(muxers=(MUXERS[mux],), data_paths=("tcp",))
    return HostConfig(muxers=(MUXERS[mux],))  # default data paths: shm, then tcp


async def _assert_data_path(a: Host, b: Host, peer: PeerID, path: str, timeout: float = 5.0) -> None:
    """Both ends of the pair's connection use ``path`` (the listener switches a
    moment after the dialer: bounded poll)."""
    conn = a.connection(peer)
    assert conn is not None and conn.data_path == path, (
        f"dialer on {None if conn is None else conn.data_path!r}, not {path!r}: "
        f"{None if conn is None else conn.data_path_reason}"
    )
    deadline = time.monotonic() + timeout
    while True:
        lconn = b.connection(a.peer_id)
        if lconn is not None and lconn.data_path == path:
            return
        if time.monotonic() > deadline:
            got = None if lconn is None else (lconn.data_path, lconn.data_path_reason)
            raise AssertionError(f"listener not on {path!r} after {timeout} s: {got}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def _host_pair(mux: str, path: str) -> AsyncIterator[tuple[Host, Host, PeerID]]:
    async with host_pair(_config(mux, path)) as (a, b, peer):
        await _assert_data_path(a, b, peer, path)
        yield a, b, peer


def _stream_pair(mux: str, path: str) -> contextlib.AbstractAsyncContextManager[tuple[Stream, Stream]]:
    return stream_pair(make_host_pair=functools.partial(_host_pair, mux, path))


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.mark.parametrize(("check", "mux", "path"), _cases(STREAM_CHECKS, KNOWN_STREAM_BUGS))
async def test_check_stream(check: str, mux: str, path: str) -> None:
    await check_stream(functools.partial(_stream_pair, mux, path), only=[check])


@pytest.mark.parametrize(("subtest", "mux", "path"), _cases(MUXER_SUBTESTS, KNOWN_MUXER_BUGS))
async def test_check_muxer(subtest: str, mux: str, path: str) -> None:
    await check_muxer(functools.partial(_host_pair, mux, path), only=[subtest])


@pytest.mark.parametrize("path", [pytest.param(p, marks=_path_marks(p)) for p in PATHS])
@pytest.mark.parametrize("mux", list(MUXERS))
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_whole_suites_per_event_loop(loop: str, mux: str, path: str) -> None:
    """Both suites end to end under an explicitly chosen event loop (uvloop's
    transports and timers differ from the default loop's); known bugs skipped."""
    stream_bugs = [n for (n, m, p) in KNOWN_STREAM_BUGS if (m, p) == (mux, path)]
    muxer_bugs = [n for (n, m, p) in KNOWN_MUXER_BUGS if (m, p) == (mux, path)]
    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        runner.run(
            check_stream(
                functools.partial(_stream_pair, mux, path),
                large_size=1 << 20,
                skip=stream_bugs,
            )
        )
        runner.run(check_muxer(functools.partial(_host_pair, mux, path), skip=muxer_bugs))


def test_unknown_check_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown sub-check"):
        asyncio.run(check_stream(stream_pair, only=["no_such_check"]))


async def test_check_stream_detects_a_broken_stream() -> None:
    """The suite is not vacuous: a stream that duplicates every write fails it."""

    @contextlib.asynccontextmanager
    async def broken_pair() -> AsyncIterator[tuple[Stream, Stream]]:
        async with stream_pair() as (a, b):
            write = a.write

            async def doubled(data: object) -> None:
                await write(data)
                await write(data)

            a.write = doubled  # type: ignore[method-assign]
            yield a, b

    with pytest.raises(AssertionError):
        await check_stream(broken_pair, only=["send_both_ways"], timeout=5)
