"""Metrics: counters, histograms and scrape-time collectors, one registry per Host.

Rules:

- Counting happens per connection, stream or operation event, never per frame
  or per byte in Python. Byte and frame totals are read at scrape time from the
  counters each connection and muxer session already keep, and added to the
  totals of closed connections when they close.
- Services (pubsub, DHT, ...) register their own figures on the host's
  registry: ``host.metrics_registry.counter(...)`` for event counts, or
  ``host.metrics_registry.add_collector(fn)`` for values computed when scraped.
- Nothing here needs ``prometheus-client``; :func:`prometheus_text` and
  :func:`serve_prometheus` use it when installed (``pip install "fastp2p[metrics]"``).

Example:

    >>> from fastp2p.metrics import MetricsRegistry
    >>> reg = MetricsRegistry()
    >>> hits = reg.counter("demo_hits_total", "Hits by kind.", ("kind",))
    >>> hits.inc("a"); hits.inc("a"); hits.inc("b", amount=5)
    >>> reg.value("demo_hits_total", kind="a")
    2.0
    >>> lat = reg.histogram("demo_seconds", "Latency.", buckets=(0.1, 1.0))
    >>> lat.observe(0.05)
    >>> reg.snapshot()["demo_seconds"]["samples"][0]["value"]["count"]
    1
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Counter",
    "Histogram",
    "MetricFamily",
    "MetricsRegistry",
    "LATENCY_BUCKETS",
    "prometheus_text",
    "serve_prometheus",
]

#: Default latency buckets in seconds (100 us .. 30 s): loopback handshakes take
#: about a millisecond, dials over the internet up to seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass
class MetricFamily:
    """One named metric with its samples, as a collector returns it.

    ``samples`` maps a tuple of label values (in ``labelnames`` order) to a
    number (counter, gauge) or to a :class:`HistogramValue` (histogram).
    """

    name: str
    kind: Kind
    help: str
    labelnames: tuple[str, ...] = ()
    samples: dict[tuple[str, ...], Any] = field(default_factory=dict)


@dataclass
class HistogramValue:
    """Cumulative bucket counts (``le`` upper bounds, +Inf last), count and sum."""

    buckets: tuple[float, ...]
    counts: list[int]
    count: int = 0
    sum: float = 0.0


class Counter:
    """A monotonically increasing count per label-value tuple.

    ``inc(*labelvalues, amount=1)`` costs a dict lookup and an add; call it per
    event (connection opened, stream negotiated), never per frame.
    """

    __slots__ = ("name", "help", "labelnames", "_values")

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to the sample for ``labelvalues``."""
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labelvalues}")
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def collect(self) -> MetricFamily:
        """The current samples as a ``MetricFamily``."""
        return MetricFamily(self.name, "counter", self.help, self.labelnames, dict(self._values))


class Histogram:
    """Observations counted into fixed buckets (upper bounds, seconds by default)."""

    __slots__ = ("name", "help", "labelnames", "buckets", "_values")

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        b = sorted(float(x) for x in buckets)
        if not b or b != sorted(set(b)):
            raise ValueError("histogram buckets must be distinct and non-empty")
        if b[-1] != math.inf:
            b.append(math.inf)
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(b)
        # per label tuple: [per-bucket (non-cumulative) counts..., count, sum]
        self._values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *labelvalues: str) -> None:
        """Record one observation (e.g. a latency in seconds)."""
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labelvalues}")
        row = self._values.get(labelvalues)
        if row is None:
            row = self._values[labelvalues] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-2] += 1
        row[-1] += value

    def collect(self) -> MetricFamily:
        """The current samples (cumulative buckets) as a ``MetricFamily``."""
        fam = MetricFamily(self.name, "histogram", self.help, self.labelnames)
        nb = len(self.buckets)
        for labels, row in self._values.items():
            cum, acc = [], 0
            for c in row[:nb]:
                acc += int(c)
                cum.append(acc)
            fam.samples[labels] = HistogramValue(self.buckets, cum, int(row[-2]), row[-1])
        return fam


Collector = Callable[[], Iterable[MetricFamily]]


class MetricsRegistry:
    """The metrics of one Host: its own counters and histograms plus collectors.

    Names follow Prometheus conventions (``fastp2p_<what>_<unit>``, counters end
    in ``_total``). A collector is a callable returning ``MetricFamily`` objects;
    it runs at scrape time, on the event loop's thread, so it may read live
    state (open connections, mesh sizes) without locks.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Histogram] = {}
        self._collectors: list[Collector] = []

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """Create (or return the existing) counter ``name``."""
        return self._get(name, lambda: Counter(name, help, labelnames), Counter)

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """Create (or return the existing) histogram ``name``."""
        return self._get(name, lambda: Histogram(name, help, labelnames, buckets), Histogram)

    def _get(self, name: str, make: Callable[[], Any], cls: type) -> Any:
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics[name] = make()
        elif not isinstance(m, cls):
            raise ValueError(f"metric {name} already registered as {type(m).__name__}")
        return m

    def add_collector(self, collector: Collector) -> None:
        """Call ``collector()`` at every scrape; it returns ``MetricFamily`` objects."""
        self._collectors.append(collector)

    def remove_collector(self, collector: Collector) -> None:
        """Stop calling ``collector`` (a service that closed)."""
        if collector in self._collectors:
            self._collectors.remove(collector)

    def collect(self) -> list[MetricFamily]:
        """Every family: own metrics first, then each collector's, merged by name."""
        out: dict[str, MetricFamily] = {}
        for m in self._metrics.values():
            out[m.name] = m.collect()
        for c in list(self._collectors):
            for fam in c():
                prev = out.get(fam.name)
                if prev is None:
                    out[fam.name] = fam
                else:
                    for k, v in fam.samples.items():
                        prev.samples[k] = prev.samples.get(k, 0) + v
        return list(out.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Plain-data view (JSON-friendly) of :meth:`collect`.

        ``{name: {"type", "help", "samples": [{"labels": {...}, "value": v}]}}``
        where a histogram's value is ``{"count", "sum", "buckets": {le: cumulative}}``.
        """
        out: dict[str, dict[str, Any]] = {}
        for fam in self.collect():
            samples = []
            for labels, v in sorted(fam.samples.items()):
                if isinstance(v, HistogramValue):
                    v = {
                        "count": v.count,
                        "sum": v.sum,
                        "buckets": {_fmt_le(le): c for le, c in zip(v.buckets, v.counts, strict=True)},
                    }
                samples.append({"labels": dict(zip(fam.labelnames, labels, strict=True)), "value": v})
            out[fam.name] = {"type": fam.kind, "help": fam.help, "samples": samples}
        return out

    def value(self, name: str, **labels: str) -> Any:
        """Sum of the samples of ``name`` matching ``labels`` (0 when none).

        For a histogram the result is the number of observations.
        """
        total: float = 0
        for fam in self.collect():
            if fam.name != name:
                continue
            for key, v in fam.samples.items():
                lab = dict(zip(fam.labelnames, key, strict=True))
                if all(lab.get(k) == want for k, want in labels.items()):
                    total += v.count if isinstance(v, HistogramValue) else v
        return total


def _fmt_le(le: float) -> str:
    return "+Inf" if le == math.inf else repr(le)


# -- Prometheus export -------------------------------------------------------------------


def _prometheus_collector(registry: MetricsRegistry) -> Any:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    class _Bridge:
        def collect(self) -> Iterable[Any]:
            for fam in registry.collect():
                labels = list(fam.labelnames)
                pm: Any
                if fam.kind == "counter":
                    name = fam.name[: -len("_total")] if fam.name.endswith("_total") else fam.name
                    pm = CounterMetricFamily(name, fam.help, labels=labels)
                    for key, v in fam.samples.items():
                        pm.add_metric(list(key), v)
                elif fam.kind == "gauge":
                    pm = GaugeMetricFamily(fam.name, fam.help, labels=labels)
                    for key, v in fam.samples.items():
                        pm.add_metric(list(key), v)
                else:
                    pm = HistogramMetricFamily(fam.name, fam.help, labels=labels)
                    for key, hv in fam.samples.items():
                        pm.add_metric(
                            list(key),
                            [(_fmt_le(le), c) for le, c in zip(hv.buckets, hv.counts, strict=True)],
                            hv.sum,
                        )
                yield pm

        def describe(self) -> Iterable[Any]:
            return []

    return _Bridge()


def prometheus_text(registry: MetricsRegistry) -> bytes:
    """The registry in the Prometheus text exposition format.

    Raises:
        ImportError: ``prometheus-client`` is not installed (``fastp2p[metrics]``).
    """
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_prometheus_collector(registry))
    out: bytes = generate_latest(reg)
    return out


async def serve_prometheus(registry: MetricsRegistry, host: str, port: int) -> asyncio.Server:
    """Serve ``GET /metrics`` (Prometheus text format) on ``host:port``.

    The page is rendered on the event loop's thread (no scraper thread reads
    the host's state concurrently). Returns the started ``asyncio.Server``;
    close it to stop serving.

    Raises:
        ImportError: ``prometheus-client`` is not installed (``fastp2p[metrics]``).
        OSError: the address cannot be bound.
    """
    from prometheus_client import CONTENT_TYPE_LATEST

    prometheus_text(MetricsRegistry())  # fail now, not at the first scrape

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readuntil(b"\r\n\r\n")
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] in (b"/", b"/metrics"):
                body, status, ctype = prometheus_text(registry), b"200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, ctype = b"not found\n", b"404 Not Found", "text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


# -- the Host's own figures ----------------------------------------------------------------


class HostMetrics:
    """The figures a ``Host`` keeps: hooks called once per connection/stream event.

    Live values (open connections by direction and data path, open streams by
    protocol, wire bytes and muxer frames) are read from the connections at
    scrape time; a closing connection's byte and frame counts are folded into
    running totals, so nothing is counted per frame in Python.
    """

    def __init__(self, registry: MetricsRegistry, connections: Callable[[], Iterable[Any]],
                 peerstore: Any) -> None:
        self.registry = registry
        self._connections = connections
        self._peerstore = peerstore
        r = registry
        self.conns_opened = r.counter(
            "fastp2p_connections_opened_total", "Connections established (after the upgrade).",
            ("direction",))
        self.conns_closed = r.counter(
            "fastp2p_connections_closed_total", "Connections closed, by the data path they ended on.",
            ("direction", "data_path"))
        self.streams_opened = r.counter(
            "fastp2p_streams_opened_total", "Streams whose protocol was negotiated.",
            ("direction", "protocol"))
        self.errors = r.counter(
            "fastp2p_errors_total", "Failures by exception type and where they happened.",
            ("type", "where"))
        self.handshake = r.histogram(
            "fastp2p_handshake_seconds", "Security + muxer upgrade of a raw connection.",
            ("direction",))
        self.dial = r.histogram(
            "fastp2p_dial_seconds", "One address dial: transport connect plus upgrade.", ("result",))
        # totals of closed connections: [wire sent, wire received, frames out, frames in]
        self._closed_io = [0, 0, 0, 0]
        r.add_collector(self._collect_live)

    def error(self, exc: BaseException, where: str) -> None:
        """Count one failure of type ``type(exc).__name__`` at ``where``."""
        self.errors.inc(type(exc).__name__, where)

    def connection_opened(self, conn: Any) -> None:
        self.conns_opened.inc("outbound" if conn.outbound else "inbound")

    def connection_closed(self, conn: Any) -> None:
        self.conns_closed.inc("outbound" if conn.outbound else "inbound", conn.data_path)
        io = _conn_io(conn)
        for i in range(4):
            self._closed_io[i] += io[i]
        err = getattr(conn, "close_error", None)
        cause = err.__cause__ if err is not None else None
        if cause is not None:
            self.error(cause, "connection")

    def stream_opened(self, inbound: bool, protocol: str) -> None:
        self.streams_opened.inc("inbound" if inbound else "outbound", protocol)

    def _collect_live(self) -> list[MetricFamily]:
        conns = MetricFamily("fastp2p_connections", "gauge", "Open connections.",
                             ("direction", "data_path"))
        streams = MetricFamily("fastp2p_streams", "gauge", "Open streams by protocol.", ("protocol",))
        io = list(self._closed_io)
        for c in self._connections():
            key = ("outbound" if c.outbound else "inbound", c.data_path)
            conns.samples[key] = conns.samples.get(key, 0) + 1
            for st in list(c.streams.values()):
                pk = (st.protocol or "",)
                streams.samples[pk] = streams.samples.get(pk, 0) + 1
            for i, v in enumerate(_conn_io(c)):
                io[i] += v
        wire = MetricFamily("fastp2p_bytes_total", "counter",
                            "Bytes on the wire (ciphertext on TCP, frames on shm/rdma).", ("direction",),
                            {("sent",): io[0], ("received",): io[1]})
        frames = MetricFamily("fastp2p_muxer_frames_total", "counter", "Muxer frames.", ("direction",),
                              {("sent",): io[2], ("received",): io[3]})
        ps = self._peerstore
        peers = MetricFamily("fastp2p_peerstore_peers", "gauge", "Peer records in the peerstore.",
                             (), {(): len(ps)})
        evicted = MetricFamily("fastp2p_peerstore_evicted_total", "counter",
                               "Peer records evicted (HostConfig.max_peerstore_peers).", (),
                               {(): ps.evicted})
        return [conns, streams, wire, frames, peers, evicted]


def _conn_io(conn: Any) -> tuple[int, int, int, int]:
    st = conn.statistics()
    mux = st.get("muxer_stats") or {}
    return (
        int(st.get("bytes_sent", 0)),
        int(st.get("bytes_received", 0)),
        int(mux.get("frames_out", 0)),
        int(mux.get("frames_in", 0)),
    )


def busy_poll_collector(poller: Any) -> Collector:
    """Scrape-time figures of a host's ``BusyPoller`` (``HostConfig.busy_poll_us``):
    the loop iterations it spent polling (the CPU it costs) and its current budget."""

    def collect() -> list[MetricFamily]:
        return [
            MetricFamily("fastp2p_busy_poll_spins_total", "counter",
                         "Event-loop iterations spent polling instead of sleeping.", (),
                         {(): poller.spins}),
            MetricFamily("fastp2p_busy_poll_budget_us", "gauge",
                         "The busy-poll budget now (halved after long waits).", (),
                         {(): poller.budget_us}),
        ]

    return collect


def pubsub_collector(pubsub: Any) -> Collector:
    """Scrape-time figures of a pubsub service (gossipsub router counters, mesh sizes).

    Reads only the service's public surface (``router.stats``,
    ``router.subscriptions``, ``router.mesh_peers``, ``pubsub.score``), so the
    router keeps counting as it does and nothing is added to its hot path.
    """

    def collect() -> list[MetricFamily]:
        r = pubsub.router
        events = MetricFamily(
            "fastp2p_pubsub_events_total", "counter",
            "Gossipsub router counts: received, delivered, duplicates, rejected, forwarded, ...",
            ("event",), {(k,): v for k, v in r.stats.as_dict().items()},
        )
        topics = sorted(r.subscriptions)
        mesh = MetricFamily("fastp2p_pubsub_mesh_peers", "gauge", "Mesh peers per subscribed topic.",
                            ("topic",), {(t,): len(r.mesh_peers(t)) for t in topics})
        peers: set[Any] = set()
        for t in topics:
            peers |= set(r.topic_peers(t))
        scores = MetricFamily("fastp2p_pubsub_peers_by_score", "gauge",
                              "Peers in subscribed topics by the sign of their score.", ("sign",),
                              {("negative",): 0, ("zero",): 0, ("positive",): 0})
        for p in peers:
            s = pubsub.score(p)
            scores.samples[("negative" if s < 0 else "positive" if s > 0 else "zero",)] += 1
        return [events, mesh, scores]

    return collect
