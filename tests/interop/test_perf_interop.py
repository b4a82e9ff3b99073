"""libp2p perf (/perf/1.0.0) between fastp2p and js-libp2p, both directions (issue 12).

js side: tests/interop/js/perf_peer.mjs, a js-libp2p 3.x peer implementing the perf
protocol from the spec (@libp2p/perf is not on the npm registry). Each test checks
the byte counts both ends report and prints the throughput figures (``-s`` shows
them); sizes stay small so the test is about correctness, not speed.
"""

from __future__ import annotations

import asyncio

import pytest

import fastp2p
from fastp2p.config import HostConfig
from fastp2p.services.perf import perf, serve_perf

from .peers import JS_DIR, spawn

JS_PERF = JS_DIR / "perf_peer.mjs"
SIZE = 16 * 1024 * 1024
STEP = 60.0
CFG = HostConfig(muxers=("/yamux/1.0.0",), data_paths=("tcp",))


def _gbps(n: int, s: float) -> float:
    return n * 8 / s / 1e9 if s > 0 else 0.0


@pytest.mark.timeout(180)
async def test_fastp2p_client_against_js_perf_server() -> None:
    async with spawn("js", "--listen", js_script=JS_PERF) as ref, fastp2p.Host(
        fastp2p.Ed25519PrivateKey.generate(), config=CFG
    ) as host:
        async with asyncio.timeout(STEP):
            peer = await host.connect(ref.addr)
            res = await perf(host, peer, SIZE, SIZE)  # raises if the download size differs
        assert (res.upload_bytes, res.download_bytes) == (SIZE, SIZE)
        served = await ref.next_event("perf_served", timeout=STEP)
        assert served == {"event": "perf_served", "uploaded": SIZE, "downloaded": SIZE}, served
        # upload only and download only, as the spec's throughput tests
        async with asyncio.timeout(STEP):
            up = await perf(host, peer, SIZE, 0)
            down = await perf(host, peer, 0, SIZE)
        assert (up.download_bytes, down.upload_bytes, down.download_bytes) == (0, 0, SIZE)
        print(f"\nfastp2p -> js perf server: upload {up.upload_gbps:.2f} Gbit/s, "
              f"download {down.download_gbps:.2f} Gbit/s ({SIZE} bytes)")


@pytest.mark.timeout(180)
async def test_js_perf_client_against_fastp2p_server() -> None:
    async with fastp2p.Host(
        fastp2p.Ed25519PrivateKey.generate(), listen=["/ip4/127.0.0.1/tcp/0"], config=CFG
    ) as host:
        serve_perf(host)
        addr = f"{host.addrs[0]}/p2p/{host.peer_id}"
        figures = {}
        for up, down in ((SIZE, SIZE), (SIZE, 0), (0, SIZE)):
            async with spawn("js", "--dial", addr, "--upload", str(up), "--download", str(down),
                             js_script=JS_PERF) as ref:
                rc = await ref.wait_exit(timeout=STEP)
                assert rc == 0, ref.diagnostics()
                (ev,) = ref.find("perf")
                assert (ev["upload_bytes"], ev["download_bytes"]) == (up, down), ev
                figures[(up, down)] = ev
        print(f"\njs -> fastp2p perf server: "
              f"upload {_gbps(SIZE, figures[(SIZE, 0)]['upload_s']):.2f} Gbit/s, "
              f"download {_gbps(SIZE, figures[(0, SIZE)]['download_s']):.2f} Gbit/s ({SIZE} bytes)")
