"""``fastp2p pubsub sub|pub`` as processes."""

from __future__ import annotations

import json
import subprocess
import sys

ENV_TIMEOUT = "20"


def test_cli_sub_pub_roundtrip() -> None:
    sub = subprocess.Popen(
        [sys.executable, "-m", "fastp2p", "pubsub", "sub", "cli-topic", "--count", "2", "--timeout", ENV_TIMEOUT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.stdout is not None
        addr = sub.stdout.readline().strip()
        assert "/p2p/12D3KooW" in addr
        for text in ("hello", "héllo ✓"):
            r = subprocess.run(
                [sys.executable, "-m", "fastp2p", "pubsub", "pub", "cli-topic", text, "--connect", addr, "--timeout", ENV_TIMEOUT],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 0, r.stderr
        out, err = sub.communicate(timeout=60)
        assert sub.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [m["data"] for m in lines] == ["hello", "héllo ✓"]
        assert all(m["topic"] == "cli-topic" and m["from"].startswith("12D3KooW") and isinstance(m["seqno"], int) for m in lines)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def test_cli_pub_times_out_without_peers() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "fastp2p", "pubsub", "pub", "t", "m", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "timed out" in r.stderr
