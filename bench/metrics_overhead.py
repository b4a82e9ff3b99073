"""1 GiB over one TCP stream between two Hosts in this process: the figure the
metrics hooks must not move (``python -m bench.metrics_overhead [--gib N] [--runs R]``).

Counting happens per connection and stream event, never per frame in Python;
this measures the bulk path end to end so a before/after comparison shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import fastp2p

CHUNK = 1 << 20


async def _sink(stream: fastp2p.Stream) -> None:
    buf = bytearray(CHUNK)
    total = 0
    while n := await stream.readinto(buf):
        total += n
    await stream.write(total.to_bytes(8, "big"))
    await stream.close_write()


def _count_metric_calls() -> list[int]:
    """Count every Counter.inc / Histogram.observe from now on (None: no metrics module)."""
    calls = [0]
    try:
        from fastp2p import metrics
    except ImportError:
        return calls
    for cls, name in ((metrics.Counter, "inc"), (metrics.Histogram, "observe")):
        orig = getattr(cls, name)

        def wrapped(self: object, *a: object, _orig: object = orig, **kw: object) -> None:
            calls[0] += 1
            _orig(self, *a, **kw)  # type: ignore[operator]

        setattr(cls, name, wrapped)
    return calls


CALLS = _count_metric_calls()


async def one_run(nbytes: int) -> tuple[float, float, int]:
    cfg = fastp2p.HostConfig(data_paths=("tcp",))
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as server, \
            fastp2p.Host(config=cfg) as client:
        server.set_handler("/sink/1.0.0", _sink)
        peer = await client.connect(server.full_addrs[0])
        stream = await client.open_stream(peer, "/sink/1.0.0")
        data = memoryview(bytearray(CHUNK))
        calls0 = CALLS[0]
        c0 = time.process_time()
        t0 = time.perf_counter()
        sent = 0
        while sent < nbytes:
            await stream.write(data)
            sent += CHUNK
        await stream.close_write()
        got = int.from_bytes(await stream.read_exactly(8), "big")
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        calls = CALLS[0] - calls0
        await stream.aclose()
        assert got == sent, (got, sent)
        return sent / dt / 1e9, cpu / (sent / (1 << 30)), calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    rates, cpus, calls = [], [], []
    for _ in range(args.runs):
        with asyncio.Runner(loop_factory=factory) as r:
            rate, cpu, n = r.run(one_run(int(args.gib * (1 << 30))))
        rates.append(rate)
        cpus.append(cpu)
        calls.append(n)
    print("GB/s per run:", " ".join(f"{x:.3f}" for x in rates))
    print(f"median {statistics.median(rates):.3f} GB/s  best {max(rates):.3f} GB/s  "
          f"CPU {statistics.median(cpus):.3f} s/GiB (median; both hosts, one process)  "
          f"metric calls during the transfer: {max(calls)}")


if __name__ == "__main__":
    main()
