"""``fastp2p share``, ``fastp2p files ls`` and ``fastp2p get`` as processes on loopback."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from fastp2p.proto.manifest import Manifest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastp2p", *args], capture_output=True, text=True,
                          env=_env(), timeout=90, **kw)  # type: ignore[call-overload]


@pytest.fixture
def sharer(tmp_path: pathlib.Path) -> Iterator[tuple[str, list[dict[str, object]], list[bytes]]]:
    datas = [os.urandom(3 * 1024 * 1024 + 5), os.urandom(1000)]
    paths = []
    for i, d in enumerate(datas):
        p = tmp_path / f"file{i}.bin"
        p.write_bytes(d)
        paths.append(str(p))
    proc = subprocess.Popen([sys.executable, "-m", "fastp2p", "share", *paths, "--timeout", "80"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        addr = proc.stdout.readline().strip()
        assert "/p2p/12D3KooW" in addr, proc.stderr.read() if proc.poll() is not None else addr
        infos = [json.loads(proc.stdout.readline()) for _ in paths]
        yield addr, infos, datas
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -15), proc.returncode


def test_share_prints_addr_then_one_json_line_per_file(sharer: tuple[str, list[dict[str, object]], list[bytes]]) -> None:
    _, infos, datas = sharer
    assert [i["name"] for i in infos] == ["file0.bin", "file1.bin"]
    assert [i["size"] for i in infos] == [len(d) for d in datas]
    assert [i["cid"] for i in infos] == [Manifest.from_bytes(d).cid for d in datas]


def test_files_ls_hears_announcements(sharer: tuple[str, list[dict[str, object]], list[bytes]]) -> None:
    addr, infos, _ = sharer
    r = _cli("files", "ls", "--connect", addr, "--count", "2", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert {x["cid"] for x in lines} == {i["cid"] for i in infos}
    assert all(x["peer"] == addr.rsplit("/", 1)[1] and x["addrs"] for x in lines)


def test_get_by_announcement_names_the_file(sharer: tuple[str, list[dict[str, object]], list[bytes]],
                                            tmp_path: pathlib.Path) -> None:
    addr, infos, datas = sharer
    work = tmp_path / "out"
    work.mkdir()
    r = _cli("get", str(infos[0]["cid"]), "--connect", addr, "--timeout", "60", cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "file0.bin").read_bytes() == datas[0]
    assert "verified" in r.stdout and f"{len(datas[0])} bytes" in r.stdout
    assert addr.rsplit("/", 1)[1] in r.stdout  # bytes from each provider
    assert "\r[" not in r.stderr  # no progress bar when stderr is not a terminal


def test_get_json_with_explicit_provider(sharer: tuple[str, list[dict[str, object]], list[bytes]],
                                         tmp_path: pathlib.Path) -> None:
    addr, infos, datas = sharer
    out = tmp_path / "x.bin"
    r = _cli("get", str(infos[1]["cid"]), "--provider", addr, "--out", str(out), "--json", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["verified"] is True and res["size"] == len(datas[1]) and out.read_bytes() == datas[1]


def test_get_fails_cleanly(tmp_path: pathlib.Path) -> None:
    r = _cli("get", "not-a-cid", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "error" in r.stderr
    cid = Manifest.from_bytes(b"nobody has this").cid
    r = _cli("get", cid, "--out", str(tmp_path / "x"), "--timeout", "3")
    assert r.returncode == 1 and "timed out" in r.stderr


def test_share_missing_file_fails(tmp_path: pathlib.Path) -> None:
    r = _cli("share", str(tmp_path / "missing"), "--timeout", "1")
    assert r.returncode == 1 and "no such file" in r.stderr
