"""``fastp2p doctor``, ``fastp2p --version`` and the global logging options."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from fastp2p import _accel, doctor
from fastp2p.cli import main

NAMES = {
    "native core",
    "OpenSSL",
    "parallel seal/open",
    "uvloop",
    "shared memory",
    "RDMA verbs",
    "huge pages",
    "RLIMIT_MEMLOCK",
    "network namespaces",
    "multicast (mDNS)",
}


def test_doctor_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("no "):  # every "no" is followed by its reason
            assert lines[i + 1].strip().startswith("why: ")


def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in checks} == NAMES
    for c in checks:
        assert c["status"] in ("ok", "no", "info")
        assert c["detail"]
        if c["status"] == "no":
            assert c["why_not"], c
    native = next(c for c in checks if c["name"] == "native core")
    assert native["status"] == ("ok" if _accel.HAVE_NATIVE else "no")
    shm = next(c for c in checks if c["name"] == "shared memory")
    assert shm["status"] == ("ok" if _accel.HAVE_NATIVE else "no")


def test_a_failing_check_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def check_broken() -> doctor.Check:
        raise RuntimeError("odd machine")

    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_native, check_broken))
    checks = doctor.run_checks()
    assert checks[1] == doctor.Check("broken", "no", "check failed", "RuntimeError: odd machine")


def test_multicast_without_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_multicast_interfaces", lambda: [])
    c = doctor.check_multicast()
    assert c.status == "no" and "mDNS" in c.why_not


def test_hugepages_and_memlock_report_numbers() -> None:
    hp = doctor.check_hugepages()
    assert "reserved" in hp.detail
    if hp.status == "no":
        assert "nr_hugepages" in hp.why_not
    ml = doctor.check_memlock()
    assert "soft" in ml.detail and "hard" in ml.detail


def test_netns_without_ip_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    monkeypatch.setattr(doctor.os.path, "exists", lambda p: p == "/proc/self/ns/net")
    c = doctor.check_netns()
    assert c.status == "no" and "iproute2" in c.why_not


def test_verbs_reason_when_libibverbs_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _accel.HAVE_NATIVE:
        pytest.skip("needs the native core")
    monkeypatch.setattr(_accel, "HAVE_VERBS", False)
    monkeypatch.setattr(
        _accel, "VERBS_IMPORT_ERROR", ImportError("libibverbs.so.1: cannot open shared object file")
    )
    c = doctor.check_verbs()
    assert c.status == "no" and "libibverbs1" in c.why_not


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"fastp2p {__import__('fastp2p').__version__}"
    assert out[1] == ("native core: loaded" if _accel.HAVE_NATIVE else out[1])
    assert out[2].startswith("verbs: ")
    assert out[3].startswith("OpenSSL: ")
    if _accel.HAVE_NATIVE:
        assert out[3].endswith("(from native aead)")
        from fastp2p._native import aead

        assert aead.openssl_version().startswith("OpenSSL ")


def test_version_pure_build_says_where_openssl_comes_from() -> None:
    env = dict(os.environ, FASTP2P_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-m", "fastp2p", "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "native core: not loaded (FASTP2P_NO_EXTENSIONS is set" in out.stdout
    assert "Python's ssl module; the native core is not loaded" in out.stdout


def test_log_options(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger("fastp2p")
    before = list(root.handlers), root.level
    try:
        assert main(["--log-level", "debug", "--log-json", "id"]) == 0
        handlers = [h for h in root.handlers if getattr(h, "_fastp2p_cli", False)]
        assert len(handlers) == 1 and root.level == logging.DEBUG
        assert main(["--log-level", "nonsense", "id"]) == 2
        assert "unknown log level" in capsys.readouterr().err
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])


def test_log_json_end_to_end() -> None:
    # A real run: records on stderr are JSON objects carrying peer and conn_id.
    listen = subprocess.Popen(
        [sys.executable, "-m", "fastp2p", "listen", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert listen.stdout is not None
        addr = listen.stdout.readline().strip()
        out = subprocess.run(
            [sys.executable, "-m", "fastp2p", "--log-level", "debug", "--log-json", "ping", addr,
             "--count", "1"],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        listen.terminate()
        listen.wait(timeout=10)
    assert out.returncode == 0, out.stderr[-2000:]
    recs = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert recs, out.stderr[-2000:]
    for r in recs:
        assert {"time", "level", "logger", "message"} <= set(r)
        assert r["logger"].startswith("fastp2p")
    conn_recs = [r for r in recs if r["logger"] in ("fastp2p.host", "fastp2p.conn")]
    assert conn_recs and all("peer" in r and "conn_id" in r for r in conn_recs)


def test_wakeup_check_measures_both_ways_and_leaves_no_process() -> None:
    before = _children()
    c = doctor.check_wakeup(rounds=100)
    assert c.name == "wake-up latency" and c.status == "info"
    sleeping, polling = (float(x) for x in re.findall(r"([\d.]+) us (?:sleeping|polling)", c.detail))
    assert 0 < sleeping < 100_000 and 0 < polling < 100_000
    assert ("waking a sleeping CPU is most of it" in c.detail) == (
        sleeping >= 2 * polling and sleeping - polling >= 10)
    assert not _children() - before  # both echo processes ended and were reaped (no zombie)


def test_a_stuck_echo_process_fails_the_check_and_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "_ECHO", "import time; time.sleep(60)")  # never answers
    monkeypatch.setattr(doctor, "_WAKE_TIMEOUT_S", 0.3)
    before = _children()
    c = doctor.check_wakeup(rounds=10)
    assert (c.name, c.status) == ("wake-up latency", "no")
    assert c.why_not.startswith("TimeoutError: ") and "did not answer" in c.why_not
    assert not _children() - before


def test_doctor_latency_adds_the_check(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "check_wakeup", lambda: doctor.Check("wake-up latency", "info", "x"))
    assert main(["doctor", "--latency", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in checks} == NAMES | {"wake-up latency"}

    def broken(rounds: int) -> tuple[float, float]:
        raise OSError("no socketpair")

    monkeypatch.undo()
    monkeypatch.setattr(doctor, "measure_wakeup", broken)
    assert main(["doctor", "--latency", "--json"]) == 0
    lat = next(c for c in json.loads(capsys.readouterr().out) if c["name"] == "wake-up latency")
    assert lat["status"] == "no" and "no socketpair" in lat["why_not"]


def _children() -> set[int]:
    """This process's children, running or zombie."""
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        out.add(int(pid))
            except (OSError, IndexError, ValueError):
                pass
    return out
