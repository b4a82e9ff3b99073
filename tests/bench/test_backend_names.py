"""Bench backend names: the pinned cipher and the serial variant are read from every
part of a fastp2p backend's name, and ``benchsuite.parallel`` runs."""

from __future__ import annotations

import json

import pytest

from fastp2p import _accel
from fastp2p.benchsuite import ceiling
from fastp2p.benchsuite.backends import all_backends
from fastp2p.benchsuite.backends.fastp2p_tcp import parse_name


def test_names_give_muxer_cipher_and_serial() -> None:
    assert parse_name("fastp2p-yamux") == ("yamux", None, False)
    assert parse_name("fastp2p-mplex-aesgcm") == ("mplex", "AESGCM", False)
    assert parse_name("fastp2p-yamux-chacha-serial") == ("yamux", "ChaChaPoly", True)
    assert parse_name("fastp2p-yamux-serial") == ("yamux", None, True)
    # the ceiling counts a pinned backend against its own cipher only
    assert ceiling._pinned("fastp2p-yamux-chacha-serial") == "ChaChaPoly"
    assert ceiling._pinned("tcp-uvloop-proto") is None
    names = {b.name for b in all_backends()}
    assert {"fastp2p-yamux-serial", "fastp2p-yamux-chacha-serial"} <= names
    for name in names:
        if name.startswith("fastp2p-"):
            muxer, _, serial = parse_name(name)
            assert muxer in ("yamux", "mplex") and serial == name.endswith("-serial")


@pytest.mark.skipif(_accel.native is None, reason="pure build: no native cipher to time")
def test_parallel_tool_reports_every_thread_count(tmp_path, capsys) -> None:
    from fastp2p.benchsuite import parallel

    out = tmp_path / "p.json"
    assert parallel.main(["--size", "256KiB", "--threads", "0", "1", "--seconds", "0.05",
                          "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["cipher"], r["threads"]) for r in rows] == [
        ("AESGCM", 0), ("AESGCM", 1), ("ChaChaPoly", 0), ("ChaChaPoly", 1)]
    assert all(r["seal B/s"] > 0 and r["open B/s"] > 0 for r in rows)
    assert rows[0]["seal x serial"] == 1.0
    assert "| AESGCM |" in capsys.readouterr().out
