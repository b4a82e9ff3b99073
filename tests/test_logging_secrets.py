"""No secret is ever logged, and connection records carry peer and conn_id.

A host pair runs with every fastp2p logger at DEBUG while it connects (Noise),
upgrades to shared memory (the one-time hand-off secret), grants a region and
does put/get with the token (and with a forged and a revoked one). Then no log
output -- the text format, the JSON format and the raw record attributes --
may contain any secret in any common encoding: private keys, Noise transport
keys, the shm hand-off secret, the host's grant-signing secret, grant tokens.

The hosts run in a private network (pnet): its pre-shared key is on the list, and
so is the key of an intruder whose connection attempt fails (and is logged).
"""

from __future__ import annotations

import base64
import logging
import secrets as _secrets
import types

import pytest

import fastp2p
from fastp2p import _accel
from fastp2p.logs import TEXT_FORMAT, ContextFilter, JsonFormatter
from fastp2p.transport import shm

CONN_LOGGERS = ("fastp2p.host", "fastp2p.conn", "fastp2p.datapaths", "fastp2p.identify", "fastp2p.shm")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _forms(secret: bytes) -> list[str]:
    """The ways a byte string could show up in a log line."""
    out = [
        secret.hex(),
        secret.hex().upper(),
        repr(secret)[2:-1],
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        secret[:8].hex(),  # a truncated secret is still a leak
        repr(secret[:12])[2:-1],
    ]
    raw = secret.decode("latin-1")
    if raw.isprintable():
        out.append(raw)
    return [f for f in out if len(f) >= 8]


@pytest.fixture
def captured() -> types.SimpleNamespace:
    root = logging.getLogger("fastp2p")
    cap = _Capture()
    old = root.level
    root.addHandler(cap)
    root.setLevel(logging.DEBUG)
    try:
        yield types.SimpleNamespace(records=cap.records)
    finally:
        root.removeHandler(cap)
        root.setLevel(old)


def _render(records: list[logging.LogRecord]) -> str:
    text = logging.Formatter(TEXT_FORMAT)
    js = JsonFormatter()
    filt = ContextFilter()
    parts = []
    for r in records:
        filt.filter(r)
        parts.append(text.format(r))
        parts.append(js.format(r))
        parts.append(repr(r.args))
        parts.append(repr(vars(r)))
    return "\n".join(parts)


async def _sink(stream: fastp2p.Stream) -> None:
    await stream.write(await stream.read())
    await stream.close_write()


async def test_no_secret_in_debug_logs(
    captured: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    found: list[bytes] = []

    real_cipher = _accel.NoiseCipher

    def recording_cipher(key: bytes, *a: object) -> object:
        found.append(bytes(key))
        return real_cipher(key, *a)

    monkeypatch.setattr(_accel, "NoiseCipher", recording_cipher)

    def token_bytes(n: int | None = None) -> bytes:
        b = _secrets.token_bytes(n)
        found.append(b)
        return b

    monkeypatch.setattr(
        shm, "secrets", types.SimpleNamespace(token_bytes=token_bytes, token_hex=_secrets.token_hex)
    )

    psk, intruder_psk = _secrets.token_bytes(32), _secrets.token_bytes(32)
    cfg = fastp2p.HostConfig(psk=psk)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as owner, fastp2p.Host(
        config=cfg
    ) as user:
        async with fastp2p.Host(config=fastp2p.HostConfig(psk=intruder_psk)) as intruder:
            with pytest.raises(fastp2p.PnetError):
                await intruder.connect(owner.full_addrs[0])
        owner.set_handler("/sink/1.0.0", _sink)
        peer = await user.connect(owner.full_addrs[0])
        conn = user.connection(peer)
        assert conn is not None
        if _accel.HAVE_NATIVE:
            assert conn.data_path == "shm", conn.data_path_reason

        region = owner.alloc(1 << 16)
        token = region.grant(user.peer_id, read=True, write=True, expires=60)
        local = user.alloc(1 << 16)
        local.view()[:11] = b"hello world"
        await conn.put(local, token, offset=0, length=11)
        back = user.alloc(1 << 16)
        await conn.get(back, token, offset=0, length=11)
        assert bytes(back.view(0, 11)) == b"hello world"

        # failure paths log too: a forged token, then a revoked one
        forged = bytearray(token)
        forged[-1] ^= 1
        with pytest.raises(fastp2p.AccessDeniedError):
            await conn.put(local, bytes(forged), offset=0, length=4)
        region.revoke(token)
        with pytest.raises(fastp2p.AccessDeniedError):
            await conn.get(back, token, offset=0, length=4)

        async with await user.open_stream(peer, "/sink/1.0.0") as s:
            await s.write(b"x" * 1000)
            await s.close_write()
            assert len(await s.read()) == 1000

        secret_list = [
            ("identity seed (owner)", owner.identity.to_bytes()),
            ("identity seed (user)", user.identity.to_bytes()),
            ("identity protobuf (owner)", owner.identity.to_protobuf()),
            ("grant secret (owner)", owner.memory._secret),
            ("grant secret (user)", user.memory._secret),
            ("grant token", token),
            ("forged token", bytes(forged)),
            ("pnet PSK", psk),
            ("pnet PSK (intruder)", intruder_psk),
            *(("noise key / shm secret", b) for b in found),
        ]
        await user.disconnect(peer)

    assert len([k for k, _ in secret_list if k.startswith("noise")]) >= 4  # 2 keys per side
    if _accel.HAVE_NATIVE:
        assert len(found) >= 5  # + the shm hand-off secret

    records = captured.records
    assert records, "nothing was logged at DEBUG: the check would be vacuous"
    out = _render(records)
    for what, secret in secret_list:
        for form in _forms(secret):
            assert form not in out, f"{what} appears in the log output ({form[:12]}...)"

    # every record from a connection-related module names its peer and connection
    for r in records:
        if r.name in CONN_LOGGERS:
            assert hasattr(r, "peer") and hasattr(r, "conn_id"), (r.name, r.getMessage())
    if _accel.HAVE_NATIVE:
        upgraded = [r for r in records if "upgraded to shared memory" in r.getMessage()]
        assert upgraded and upgraded[0].conn_id == conn.id
        assert upgraded[0].peer == str(owner.peer_id)


def test_logger_names_are_stable() -> None:
    """Every logger is created with a literal ``fastp2p.<name>`` (stable, configurable by name)."""
    import pathlib
    import re

    from fastp2p.logs import LOGGER_NAMES

    root = pathlib.Path(fastp2p.__file__).parent
    names = {}
    for path in root.rglob("*.py"):
        if path.name == "logs.py":  # configures the parent "fastp2p" logger (and a doctest's)
            continue
        for m in re.finditer(r"logging\.getLogger\(([^)]*)\)", path.read_text()):
            names[m.group(1)] = path.relative_to(root).as_posix()
    assert names, "no loggers found"
    for arg, where in names.items():
        assert re.fullmatch(r'"fastp2p\.[a-z_.]+"', arg), f"{where}: logging.getLogger({arg})"
    assert all(n.startswith("fastp2p.") for n in LOGGER_NAMES)
    assert {'"fastp2p.host"', '"fastp2p.conn"'} <= set(names)
