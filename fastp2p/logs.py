"""Logging: the logger names fastp2p uses, connection context, and the CLI's set-up.

fastp2p logs through the standard :mod:`logging` module and never configures
it itself (a library must not); the ``fastp2p`` command line does, through
:func:`configure`. Every logger is a child of ``fastp2p`` (see
:data:`LOGGER_NAMES`), so ``logging.getLogger("fastp2p").setLevel(...)``
controls them all.

Records about a connection carry two extra attributes, ``peer`` (the remote
PeerId) and ``conn_id`` (the process-unique ``Connection.id``); use them in a
format string (``%(peer)s``, ``%(conn_id)s``) with :class:`ContextFilter`
installed on the handler, which fills ``-`` into records that have none.

What is never logged: private keys, the shared-memory hand-off secret, grant
tokens, the host's grant-signing secret, Noise keys. Log messages name peers,
addresses, protocols, sizes and exception types only
(``tests/test_logging_secrets.py`` checks it).

Example:

    >>> import logging, io
    >>> from fastp2p.logs import ContextFilter, JsonFormatter
    >>> buf = io.StringIO()
    >>> h = logging.StreamHandler(buf)
    >>> h.addFilter(ContextFilter()); h.setFormatter(JsonFormatter())
    >>> lg = logging.getLogger("fastp2p.doc_example"); lg.addHandler(h); lg.propagate = False
    >>> lg.warning("hello %s", "world", extra={"peer": "12D3KooW...", "conn_id": 7})
    >>> import json; rec = json.loads(buf.getvalue())
    >>> rec["message"], rec["peer"], rec["conn_id"], rec["logger"]
    ('hello world', '12D3KooW...', 7, 'fastp2p.doc_example')
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

__all__ = [
    "LOGGER_NAMES",
    "ContextFilter",
    "JsonFormatter",
    "TEXT_FORMAT",
    "configure",
    "conn_extra",
]

#: The loggers fastp2p writes to (stable names: configure them by name; every one is
#: a literal ``fastp2p.<name>``, checked by tests/test_logging_secrets.py).
LOGGER_NAMES: tuple[str, ...] = (
    "fastp2p.host",         # connections opened/closed, handler failures, inbound upgrades
    "fastp2p.conn",         # connection failures (protocol/security errors), stalled readers
    "fastp2p.identify",     # identify and identify-push failures
    "fastp2p.datapaths",    # shared-memory / RDMA upgrade attempts and their outcome
    "fastp2p.shm",          # shared-memory hand-off socket (refused local processes)
    "fastp2p.rdma",         # RDMA data path
    "fastp2p.memory",       # memory regions (huge-page fallbacks)
    "fastp2p.pubsub",       # gossipsub driver (validators, malformed RPCs, PX)
    "fastp2p.dht",          # Kademlia DHT
    "fastp2p.bootstrap",    # bootstrap peers
    "fastp2p.files",        # file sharing / fetching
)

#: The CLI's text format: time, level, logger, connection context, message.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [peer=%(peer)s conn=%(conn_id)s] %(message)s"


def conn_extra(conn: Any) -> dict[str, Any]:
    """``extra=`` for a log record about ``conn``: its ``peer`` and ``conn_id``."""
    extra = getattr(conn, "log_extra", None)
    if extra is not None:
        return dict(extra)
    return {"peer": str(getattr(conn, "remote_peer", "-")), "conn_id": getattr(conn, "id", "-")}


class ContextFilter(logging.Filter):
    """Give every record ``peer`` and ``conn_id`` (``-`` when it is not about a connection)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "peer"):
            record.peer = "-"
        if not hasattr(record, "conn_id"):
            record.conn_id = "-"
        return True


_STD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, exception.

    Extra attributes passed with ``extra=`` (``peer``, ``conn_id``, ...) become
    keys of the object; values that are not JSON types are written as ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def configure(
    level: str | int = "WARNING", *, json_format: bool = False, stream: IO[str] | None = None
) -> logging.Handler:
    """Send fastp2p's records at ``level`` and above to ``stream`` (stderr).

    Installs one handler on the ``fastp2p`` logger (replacing one installed by
    an earlier call), with :class:`ContextFilter` and either :data:`TEXT_FORMAT`
    or :class:`JsonFormatter`. Returns the handler.

    Raises:
        ValueError: ``level`` is not a logging level name or number.
    """
    if isinstance(level, str):
        lv = logging.getLevelName(level.upper())
        if not isinstance(lv, int):
            raise ValueError(f"unknown log level {level!r}")
        level = lv
    root = logging.getLogger("fastp2p")
    for h in list(root.handlers):
        if getattr(h, "_fastp2p_cli", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._fastp2p_cli = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    return handler
