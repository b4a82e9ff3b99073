"""Conformance: fastp2p.testing.check_stream / check_muxer over every muxer on TCP loopback.

Each sub-check is its own test (``only=[name]``), so a known bug marks exactly
one case ``xfail(strict=True)``. The default event loop runs every case;
uvloop runs the whole suites once per muxer. The pure-Python twins are covered
by CI's second pass (``FASTP2P_NO_EXTENSIONS=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import pytest

from fastp2p.config import HostConfig
from fastp2p.stream import Stream
from fastp2p.testing import (
    MUXER_SUBTESTS,
    STREAM_CHECKS,
    check_muxer,
    check_stream,
    host_pair,
    stream_pair,
)

MUXERS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}

# Known bugs, keyed by (sub-check, muxer); the tests stay, marked xfail(strict=True).
KNOWN_STREAM_BUGS: dict[tuple[str, str], str] = {}
KNOWN_MUXER_BUGS: dict[tuple[str, str], str] = {}


def _cases(names: tuple[str, ...], bugs: dict[tuple[str, str], str]) -> list[object]:
    out: list[object] = []
    for name in names:
        for mux in MUXERS:
            reason = bugs.get((name, mux))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(name, mux, id=f"{mux}-{name}", marks=marks))
    return out


def _config(mux: str) -> HostConfig:
    return HostConfig(muxers=(MUXERS[mux],))


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.mark.parametrize(("check", "mux"), _cases(STREAM_CHECKS, KNOWN_STREAM_BUGS))
async def test_check_stream(check: str, mux: str) -> None:
    await check_stream(functools.partial(stream_pair, _config(mux)), only=[check])


@pytest.mark.parametrize(("subtest", "mux"), _cases(MUXER_SUBTESTS, KNOWN_MUXER_BUGS))
async def test_check_muxer(subtest: str, mux: str) -> None:
    await check_muxer(functools.partial(host_pair, _config(mux)), only=[subtest])


@pytest.mark.parametrize("mux", list(MUXERS))
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_whole_suites_per_event_loop(loop: str, mux: str) -> None:
    """Both suites end to end under an explicitly chosen event loop (uvloop's
    transports and timers differ from the default loop's); known bugs skipped."""
    stream_bugs = [n for (n, m) in KNOWN_STREAM_BUGS if m == mux]
    muxer_bugs = [n for (n, m) in KNOWN_MUXER_BUGS if m == mux]
    with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
        runner.run(
            check_stream(
                functools.partial(stream_pair, _config(mux)),
                large_size=1 << 20,
                skip=stream_bugs,
            )
        )
        runner.run(check_muxer(functools.partial(host_pair, _config(mux)), skip=muxer_bugs))


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
