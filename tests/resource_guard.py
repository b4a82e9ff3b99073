"""Leak and resource checks for every integration, conformance and interop test.

``tests/{integration,conformance,interop}/conftest.py`` import :func:`resource_guard`
(an autouse fixture). Around each test it checks that

* file descriptors (``/proc/self/fd``) return to the set they were,
* no asyncio task created during the test is left pending (found through the
  garbage collector, so it works after pytest-asyncio closed the test's loop),
* threads return to the set they were,

each after a short bounded settle wait (``SETTLE`` seconds: executors and
transports close asynchronously), and that the test caused

* no ``ResourceWarning`` (an unclosed socket, file or transport),
* no ERROR record on the ``asyncio`` logger: "Task was destroyed but it is pending",
  "Task exception was never retrieved", "Future exception was never retrieved",
  "Unhandled exception in client_connected_cb", exceptions in callbacks.

A test that cannot meet this yet is marked ``@pytest.mark.leaks_ok("why")``; the
reason is printed in the test report and should name the leak precisely.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator

import pytest

SETTLE = 2.0  # seconds to wait for fds, tasks and threads to return


class _AsyncioErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is still an error
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        self.records.append(text.splitlines()[0] if text else "?")


def _fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own fd, or closed meanwhile
    return out


def _pending_tasks() -> set[int]:
    return {id(o) for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()}


def _task_names(ids: set[int]) -> list[str]:
    out = []
    for o in gc.get_objects():
        if id(o) in ids and isinstance(o, asyncio.Task):
            coro = o.get_coro()
            out.append(f"{o.get_name()}: {getattr(coro, '__qualname__', coro)!s}")
    return sorted(out)[:10]


def _threads() -> set[threading.Thread]:
    # fastp2p-seal-*: the process-wide parallel-sealing pool (fastp2p/_native/aead.pyx),
    # made once on machines with >= 4 cores and kept, like a process singleton
    return {t for t in threading.enumerate() if t.is_alive() and not t.name.startswith("fastp2p-seal")}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "leaks_ok(reason): opt this test out of the fd/task/thread/warning checks "
        "(tests/resource_guard.py); the reason names the leak",
    )


@pytest.fixture(scope="session", autouse=True)
def _process_singletons() -> None:
    """Create what a process creates once and keeps (not a per-test leak) before the
    first check: libuv's global signal pipe, made by the first uvloop loop, and the
    pipe to multiprocessing's resource tracker, made by the first "spawn" child."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    try:
        import uvloop
    except ImportError:
        return
    loop = uvloop.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


@pytest.fixture(autouse=True)
def resource_guard(_process_singletons: None, request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("leaks_ok")
    if marker is not None:
        yield
        return
    gc.collect()
    fds0 = _fds()
    tasks0 = _pending_tasks()
    threads0 = _threads()
    handler = _AsyncioErrors()
    alog = logging.getLogger("asyncio")
    alog.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            yield
        finally:
            deadline = time.monotonic() + SETTLE
            while True:
                gc.collect()
                new_fds = {fd: t for fd, t in _fds().items() if fds0.get(fd) != t}
                new_tasks = _pending_tasks() - tasks0
                new_threads = _threads() - threads0
                if not (new_fds or new_tasks or new_threads) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            alog.removeHandler(handler)
    problems = []
    if new_fds:
        problems.append(
            f"{len(new_fds)} file descriptor(s) left open: {sorted(new_fds.values())[:10]}"
        )
    if new_tasks:
        problems.append(f"{len(new_tasks)} asyncio task(s) left pending: {_task_names(new_tasks)}")
    if new_threads:
        problems.append(f"thread(s) left running: {sorted(t.name for t in new_threads)[:10]}")
    rw = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    if rw:
        problems.append(f"ResourceWarning: {rw[:5]}")
    if handler.records:
        problems.append(f"asyncio logged errors: {handler.records[:5]}")
    if problems:
        pytest.fail(
            "resource check (tests/resource_guard.py): " + "; ".join(problems), pytrace=False
        )
