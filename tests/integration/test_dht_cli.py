"""``fastp2p listen --dht`` and ``fastp2p dht ...`` as processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from fastp2p.cli_dht import provider_key, record_key
from fastp2p.multibase import b58encode, cid_v1_encode, multihash_digest

T = "20"


def fastp2p(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastp2p", *args], capture_output=True, text=True, timeout=90)


@pytest.fixture
def dht_servers() -> Iterator[list[str]]:
    procs: list[subprocess.Popen[str]] = []
    addrs: list[str] = []
    try:
        for i in range(3):
            cmd = [sys.executable, "-m", "fastp2p", "listen", "--dht", "server", "--timeout", "120"]
            if i:
                cmd += ["--bootstrap", addrs[0]]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None
            addrs.append(p.stdout.readline().strip())
            assert "/p2p/12D3KooW" in addrs[-1]
        yield addrs
    finally:
        for p in procs:
            p.kill()
            p.communicate()


def test_dht_commands_end_to_end(dht_servers: list[str]) -> None:
    boot = ["--bootstrap", dht_servers[0], "--timeout", T]
    r = fastp2p("dht", "put", "cli-key", "cli value ✓", *boot)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["peers"] >= 1
    r = fastp2p("dht", "get", "cli-key", "--bootstrap", dht_servers[2], "--timeout", T)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) | {"value_hex": None} == {
        "key": "/fastp2p/cli-key", "value": "cli value ✓", "value_hex": None}
    last = dht_servers[2].rsplit("/p2p/", 1)[1]
    r = fastp2p("dht", "find-peer", last, *boot)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout)
    assert line["peer_id"] == last and line["addrs"]
    cid = cid_v1_encode(0x55, multihash_digest(b"some file"))
    prov = subprocess.Popen(
        [sys.executable, "-m", "fastp2p", "dht", "provide", cid, "--listen", "/ip4/127.0.0.1/tcp/0",
         "--linger", "30", *boot], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert prov.stdout is not None
        announced = json.loads(prov.stdout.readline())
        assert announced["peers"] >= 1 and announced["multihash"] == multihash_digest(b"some file").hex()
        r = fastp2p("dht", "find-providers", cid, "--limit", "1", "--bootstrap", dht_servers[1], "--timeout", T)
        assert r.returncode == 0, r.stderr
        found = json.loads(r.stdout.splitlines()[0])
        assert found["peer_id"] == announced["provider"][0].rsplit("/p2p/", 1)[1]
    finally:
        prov.kill()
        prov.communicate()


def test_dht_errors_are_one_line(dht_servers: list[str]) -> None:
    r = fastp2p("dht", "get", "missing-key", "--bootstrap", dht_servers[0], "--timeout", "10")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "ValueNotFoundError" in r.stderr
    r = fastp2p("dht", "find-providers", "nothing", "--bootstrap", dht_servers[0], "--timeout", "10")
    assert r.returncode == 1 and "no providers" in r.stderr
    r = fastp2p("dht", "get", "k")
    assert r.returncode == 1 and "--bootstrap" in r.stderr


def test_key_parsing() -> None:
    mh = multihash_digest(b"x")
    assert provider_key(cid_v1_encode(0x70, mh)) == mh
    assert provider_key(b58encode(mh)) == mh  # CIDv0
    assert provider_key("not a cid") == b"not a cid"
    assert record_key("a") == b"/fastp2p/a" and record_key("/pk/x") == b"/pk/x"
