"""Metrics: the registry (counters, histograms, collectors), the Host's figures,
and the Prometheus export (text format and the ``--metrics`` HTTP endpoint)."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import urllib.request

import pytest

import fastp2p
from fastp2p.config import HostConfig
from fastp2p.metrics import Counter, Histogram, MetricFamily, MetricsRegistry

# -- registry ----------------------------------------------------------------------------


def test_counter_labels_and_value() -> None:
    reg = MetricsRegistry()
    c = reg.counter("x_total", "help", ("kind", "where"))
    c.inc("a", "here")
    c.inc("a", "here", amount=2)
    c.inc("b", "there")
    assert reg.value("x_total") == 4
    assert reg.value("x_total", kind="a") == 3
    assert reg.value("x_total", kind="c") == 0
    with pytest.raises(ValueError):
        c.inc("only-one")
    with pytest.raises(ValueError):
        c.inc("a", "here", amount=-1)
    assert reg.counter("x_total", "again", ("kind", "where")) is c


def test_name_registered_as_another_type() -> None:
    reg = MetricsRegistry()
    reg.counter("dup", "h")
    with pytest.raises(ValueError):
        reg.histogram("dup", "h")


def test_histogram_buckets_are_cumulative_with_inf() -> None:
    h = Histogram("lat_seconds", "h", ("dir",), buckets=(0.01, 0.1, 1.0))
    assert h.buckets[-1] == math.inf
    for v in (0.005, 0.01, 0.05, 0.5, 7.0):
        h.observe(v, "in")
    hv = h.collect().samples[("in",)]
    assert hv.counts == [2, 3, 4, 5]  # le=0.01 is inclusive
    assert hv.count == 5
    assert hv.sum == pytest.approx(7.565)
    with pytest.raises(ValueError):
        Histogram("bad", "h", buckets=(1.0, 1.0))


def test_collectors_merge_and_snapshot_shape() -> None:
    reg = MetricsRegistry()
    reg.counter("ev_total", "events", ("k",)).inc("a")

    def coll() -> list[MetricFamily]:
        return [
            MetricFamily("ev_total", "counter", "events", ("k",), {("a",): 2, ("b",): 1}),
            MetricFamily("mesh_peers", "gauge", "mesh size", ("topic",), {("t",): 3}),
        ]

    reg.add_collector(coll)
    snap = reg.snapshot()
    assert snap["ev_total"]["type"] == "counter"
    assert {tuple(s["labels"].items()): s["value"] for s in snap["ev_total"]["samples"]} == {
        (("k", "a"),): 3,
        (("k", "b"),): 1,
    }
    assert snap["mesh_peers"] == {
        "type": "gauge",
        "help": "mesh size",
        "samples": [{"labels": {"topic": "t"}, "value": 3}],
    }
    reg.remove_collector(coll)
    assert "mesh_peers" not in reg.snapshot()


def test_counter_inc_is_cheap() -> None:
    # The hooks run per connection/stream event; still, keep them trivially cheap.
    c = Counter("c_total", "h", ("a",))
    import time

    t0 = time.perf_counter()
    for _ in range(100_000):
        c.inc("x")
    assert (time.perf_counter() - t0) / 100_000 < 20e-6


# -- the Host's figures ---------------------------------------------------------------------


async def _echo(stream: fastp2p.Stream) -> None:
    await stream.write(await stream.read())
    await stream.close_write()


async def _boom(stream: fastp2p.Stream) -> None:
    raise RuntimeError("handler bug")


@pytest.mark.parametrize("paths", [("tcp",), ("shm", "tcp")], ids=["tcp", "shm"])
async def test_host_metrics_count_events(paths: tuple[str, ...]) -> None:
    cfg = HostConfig(data_paths=paths)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as server, fastp2p.Host(
        config=cfg
    ) as client:
        server.set_handler("/echo/1.0.0", _echo)
        server.set_handler("/boom/1.0.0", _boom)
        peer = await client.connect(server.full_addrs[0])
        path = client.connection(peer).data_path  # type: ignore[union-attr]
        for _ in range(3):
            async with await client.open_stream(peer, "/echo/1.0.0") as s:
                await s.write(b"x" * 10_000)
                await s.close_write()
                assert len(await s.read()) == 10_000
        s = await client.open_stream(peer, "/boom/1.0.0")
        with pytest.raises(fastp2p.StreamResetError):
            await s.read()
        await s.aclose()
        await asyncio.sleep(0.05)

        cm, sm = client.metrics_registry, server.metrics_registry
        assert cm.value("fastp2p_connections_opened_total", direction="outbound") == 1
        assert sm.value("fastp2p_connections_opened_total", direction="inbound") == 1
        assert cm.value("fastp2p_connections", direction="outbound", data_path=path) == 1
        assert cm.value("fastp2p_streams_opened_total", direction="outbound", protocol="/echo/1.0.0") == 3
        assert sm.value("fastp2p_streams_opened_total", direction="inbound", protocol="/echo/1.0.0") == 3
        assert cm.value("fastp2p_handshake_seconds", direction="outbound") == 1
        assert sm.value("fastp2p_handshake_seconds", direction="inbound") == 1
        assert cm.value("fastp2p_dial_seconds", result="ok") == 1
        assert sm.value("fastp2p_errors_total", type="RuntimeError", where="handler") == 1
        sent = cm.value("fastp2p_bytes_total", direction="sent")
        assert sent >= 30_000
        assert cm.value("fastp2p_muxer_frames_total", direction="sent") > 0

        await client.disconnect(peer)
        await asyncio.sleep(0.05)
        assert cm.value("fastp2p_connections") == 0
        assert cm.value("fastp2p_connections_closed_total", direction="outbound", data_path=path) == 1
        # a closed connection's bytes stay in the totals
        assert cm.value("fastp2p_bytes_total", direction="sent") >= sent

        snap = client.metrics()
        assert snap["fastp2p_dial_seconds"]["type"] == "histogram"
        assert snap["fastp2p_dial_seconds"]["samples"][0]["value"]["buckets"]["+Inf"] == 1


async def test_dial_errors_counted_by_type() -> None:
    async with fastp2p.Host() as h:
        with pytest.raises(fastp2p.DialError):
            await h.connect("/ip4/127.0.0.1/tcp/1")
        assert h.metrics_registry.value("fastp2p_errors_total", where="dial") == 1
        assert h.metrics_registry.value("fastp2p_dial_seconds", result="error") == 1
        with pytest.raises(fastp2p.NegotiationError):
            async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as other:
                await h.open_stream(await h.connect(other.full_addrs[0]), "/nope/1.0.0")
        assert h.metrics_registry.value(
            "fastp2p_errors_total", type="NegotiationError", where="negotiation"
        ) == 1


async def test_services_register_their_figures() -> None:
    async with fastp2p.Host() as h:
        c = h.metrics_registry.counter("fastp2p_pubsub_deliveries_total", "deliveries", ("topic",))
        c.inc("news")
        h.metrics_registry.add_collector(
            lambda: [MetricFamily("fastp2p_dht_routing_table_peers", "gauge", "peers", (), {(): 7})]
        )
        m = h.metrics()
        assert m["fastp2p_pubsub_deliveries_total"]["samples"][0]["value"] == 1
        assert m["fastp2p_dht_routing_table_peers"]["samples"][0]["value"] == 7


# -- Prometheus ---------------------------------------------------------------------------


async def test_prometheus_text_and_endpoint() -> None:
    pytest.importorskip("prometheus_client")
    from fastp2p.metrics import prometheus_text, serve_prometheus

    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as a, fastp2p.Host() as b:
        await b.connect(a.full_addrs[0])
        text = prometheus_text(b.metrics_registry).decode()
        assert 'fastp2p_connections_opened_total{direction="outbound"} 1.0' in text
        assert "# TYPE fastp2p_dial_seconds histogram" in text
        assert 'fastp2p_dial_seconds_bucket{le="+Inf",result="ok"} 1.0' in text
        assert "# TYPE fastp2p_connections gauge" in text

        server = await serve_prometheus(b.metrics_registry, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            for path, status in (("/metrics", b"200"), ("/other", b"404")):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                body = await r.read()
                w.close()
                assert body.split(b" ", 2)[1] == status
            assert b"fastp2p_connections_opened_total" in body or status == b"404"
        finally:
            server.close()
            await server.wait_closed()


def test_cli_listen_serves_metrics() -> None:
    pytest.importorskip("prometheus_client")
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastp2p", "listen", "--timeout", "20", "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        line = proc.stderr.readline()
        assert line.startswith("metrics: http://127.0.0.1:"), line
        url = line.split(" ", 1)[1].strip()
        addr = proc.stdout.readline()
        assert addr.startswith("/ip4/127.0.0.1/tcp/")
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "# TYPE fastp2p_connections_opened_total counter" in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_metrics_address_is_validated() -> None:
    from fastp2p.cli import _host_port

    assert _host_port("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert _host_port(":9100") == ("0.0.0.0", 9100)
    assert _host_port("[::1]:9100") == ("::1", 9100)
    with pytest.raises(ValueError):
        _host_port("9100x")


def test_cli_metrics_without_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastp2p import metrics
    from fastp2p.cli import main

    async def missing(*a: object) -> None:
        raise ImportError("No module named 'prometheus_client'")

    monkeypatch.setattr(metrics, "serve_prometheus", missing)
    assert main(["listen", "--metrics", "127.0.0.1:0", "--timeout", "0.1"]) == 1
    assert 'pip install "fastp2p[metrics]"' in capsys.readouterr().err


async def test_pubsub_figures_in_host_metrics() -> None:
    from dataclasses import replace

    from fastp2p.config import GossipsubConfig

    fast = GossipsubConfig(heartbeat_interval=0.1, heartbeat_initial_delay=0.01)
    cfg = HostConfig(data_paths=("tcp",), pubsub=replace(fast))
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as a, fastp2p.Host(
        listen=["/ip4/127.0.0.1/tcp/0"], config=cfg
    ) as b:
        await b.connect(a.full_addrs[0])
        sa = await a.pubsub.subscribe("t")
        await b.pubsub.subscribe("t")
        await b.pubsub.wait_for_peers("t", 1)
        await b.pubsub.publish("t", b"hello")
        async with asyncio.timeout(5):
            await sa.get()
            while a.pubsub.mesh("t") != [b.peer_id]:
                await asyncio.sleep(0.01)
        reg = a.metrics_registry
        assert reg.value("fastp2p_pubsub_events_total", event="delivered") >= 1
        assert reg.value("fastp2p_pubsub_events_total", event="messages_received") >= 1
        assert reg.value("fastp2p_pubsub_mesh_peers", topic="t") == 1
        assert reg.value("fastp2p_pubsub_peers_by_score") == 1
        assert "fastp2p_pubsub_events_total" in a.metrics()
