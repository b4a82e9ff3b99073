#!/usr/bin/env python3
"""CI suites: which tests belong to which suite, run them, and gate on the counts.

``ci/test.sh`` drives it; every suite leaves ``<out>/<suite>.json`` (how it ran:
exit code, seconds, counts) and pytest suites also ``<out>/<suite>.xml`` (JUnit).
``report`` prints one table and FAILS the job when a required suite

* did not run at all (no result file),
* ran zero tests (nothing passed, failed, errored or xfailed: all skipped, or
  pytest exit code 5 "no tests collected", or a suite with no files),
* had a failure or an error, or crashed (pytest exit code other than 0/1/5,
  a missing JUnit file, a signal),
* skipped tests although it must run all of them (``no_skip`` suites: interop,
  conformance, hostile). Tests marked ``slow`` (conftest: opt in with
  ``--runslow``) are the one exception and are printed as such.

Opting out is explicit and printed loudly: ``FASTP2P_CI_OPTOUT="interop,rdma"``
(comma or space separated suite names; an unknown name is an error). An opted-out
suite still runs where it can; its result just does not gate.

Pytest suites own test files by path pattern, first match wins, in the order of
``SUITES``; ``unit`` is the catch-all, so a test file added anywhere under
``tests/`` lands in some suite and runs exactly once per pass. ``pure`` reruns the
files of the suites it names (``rerun``) with ``FASTP2P_NO_EXTENSIONS=1`` (the
pure-Python twins).

Adding a required suite:

* a pytest suite: add ``Suite("name", "pytest", globs=(...))`` before the suites
  whose patterns would otherwise claim its files (e.g. before ``integration``
  for a file under tests/integration/); ``ci/test.sh`` runs every pytest suite
  listed by ``summary.py list --kind pytest`` of the native pass by itself;
* anything else (the RDMA VM, the netns testbed): add ``Suite("name", "counts")``
  and have its step write ``<out>/<name>.json`` with ``record`` (or print
  ``N passed, M failed`` and call ``record`` with those numbers). Until that step
  exists, keep ``required="no"`` so the table shows it as planned.

Commands::

    summary.py list [--kind pytest|counts]     suite names
    summary.py optouts                         validate and print FASTP2P_CI_OPTOUT
    summary.py files SUITE                     the test files a pytest suite owns
    summary.py run SUITE [-- PYTEST_ARGS...]   run one pytest suite, record its result
    summary.py record SUITE --passed N --failed N [--skipped N] [--errors N]
                      [--seconds S] [--rc RC] [--detail TEXT]
    summary.py report                          table + gate (exit 1 on failure)

``--out DIR`` (default ``$FASTP2P_CI_OUT`` or ``build/ci-results``) goes before
the command. ``FASTP2P_CI_PATHS_<SUITE>="path ..."`` (e.g.
``FASTP2P_CI_PATHS_CONFORMANCE=/tmp/empty``) points a pytest suite at other
paths, to see the gate fail on a suite that runs nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLOW_SKIP = "slow test: pass --runslow to run it"  # tests/conftest.py


@dataclass(frozen=True)
class Suite:
    name: str
    kind: str  # "pytest" (owns files under tests/) or "counts" (a step writes its counts)
    globs: tuple[str, ...] = ()  # pytest: file patterns relative to the repo root
    # "yes" | "no" | "if-files" (required once it owns a file) |
    # "env:NAME" (required when $NAME is 1, i.e. when ci/test.sh was asked to run that step)
    required: str = "yes"
    no_skip: bool = False  # every collected test must run
    env: dict[str, str] = field(default_factory=dict)
    #: pytest: a second pass over these native-pass suites' files (it owns none)
    rerun: tuple[str, ...] = ()
    what: str = ""


SUITES: tuple[Suite, ...] = (
    # --- native pass: each test file in exactly one of these (first match wins)
    Suite("shm", "pytest", ("tests/integration/test_shm*.py", "tests/native/test_shm*.py",
                            "tests/integration/test_regions.py", "tests/native/test_region.py",
                            "tests/shm/*"), required="if-files",
          what="shared-memory rings and grants"),
    Suite("hostile", "pytest", ("tests/integration/test_bad_input*.py",), no_skip=True,
          what="hostile raw-socket peers against a real Host"),
    Suite("interop", "pytest", ("tests/interop/*",), no_skip=True,
          what="py-libp2p and js-libp2p reference peers"),
    Suite("conformance", "pytest", ("tests/conformance/*",), no_skip=True,
          what="stream/muxer conformance kit"),
    Suite("netns", "pytest", ("tests/integration/test_files_netns.py",
                              "tests/integration/test_netns_lab.py", "tests/netns/*"),
          required="env:FASTP2P_CI_NETNS", no_skip=True,
          what="network-namespace testbed (veth, bridge, tc); needs root: on by default there"),
    Suite("dask", "pytest", ("tests/integrations/*",), no_skip=True,
          what="Dask comm backend: distributed's comm behaviours and a real cluster over fastp2p://"),
    Suite("integration", "pytest", ("tests/integration/*",), what="hosts, CLI, demo"),
    Suite("native", "pytest", ("tests/native/*",), what="C kernels through the bindings"),
    Suite("proto", "pytest", ("tests/proto/*",), what="sans-IO protocol state machines"),
    Suite("unit", "pytest", ("tests/*",), what="everything else under tests/ (catch-all)"),
    # --- second pass over everything
    # interop, netns and dask run once (native): they drive the same wire code, which
    # the parity tests (tests/native, tests/proto) prove byte-for-byte equal on both
    # twins, and together they took 215 s of a 450 s pure pass
    Suite("pure", "pytest", env={"FASTP2P_NO_EXTENSIONS": "1"},
          rerun=("shm", "hostile", "conformance", "integration", "native", "proto", "unit"),
          what="the pure-Python twins (native-only cases skip) over shm, hostile, conformance, "
               "integration, native, proto, unit"),
    # --- non-pytest steps
    Suite("c", "counts", what="C unit tests under ASan/UBSan (one test per binary)"),
    Suite("fuzz", "counts", what="fuzz smoke, one run per harness"),
    Suite("asan", "counts", what="tests/native against the Cython extensions built with "
                                  "AddressSanitizer (ci/asan_native.sh)"),
    Suite("bench-smoke", "counts", what="bench --quick runs every backend without an error "
                                         "(numbers not gated)"),
    Suite("wheel", "counts", what="sdist + manylinux wheel, installed --no-index without a "
                                   "compiler, demo run (ci/wheel_smoke.sh)"),
    Suite("docs", "counts", what="Sphinx docs with -W and their doctest examples (ci/docs.sh)"),
    # --- required when their step runs: ci/test.sh runs it by default as root
    Suite("rdma", "counts", required="env:FASTP2P_CI_RDMA", no_skip=True,
          what="RDMA verbs in the Soft-RoCE VM (ci/vm_tests.sh; on by default as root)"),
    Suite("testbed", "counts", required="env:FASTP2P_CI_TESTBED", no_skip=True,
          what="20-host DHT testbed under netem, in a VM (ci/vm_tests.sh, the same boot; on by default as root)"),
)
BY_NAME = {s.name: s for s in SUITES}
for _s in SUITES:  # a second pass names native-pass pytest suites only
    for _r in _s.rerun:
        if _r not in BY_NAME or BY_NAME[_r].kind != "pytest" or BY_NAME[_r].rerun:
            raise SystemExit(f"summary.py: suite {_s.name} reruns {_r!r}, not a native-pass pytest suite")


# --------------------------------------------------------------------------- ownership


def _test_files() -> list[str]:
    """Every file pytest would collect under tests/ (default python_files patterns)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT / "tests"):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and d not in ("node_modules", "__pycache__"))
        for f in sorted(filenames):
            if f.endswith(".py") and (f.startswith("test_") or f.endswith("_test.py")):
                out.append(Path(dirpath, f).relative_to(ROOT).as_posix())
    return out


def _match(path: str, pattern: str) -> bool:
    # "dir/*" owns the whole subtree; other patterns match the path itself
    if pattern.endswith("/*") and path.startswith(pattern[:-1]):
        return True
    return fnmatch.fnmatchcase(path, pattern)


def ownership() -> dict[str, list[str]]:
    owned: dict[str, list[str]] = {s.name: [] for s in SUITES if s.kind == "pytest" and not s.rerun}
    for path in _test_files():
        for s in SUITES:
            if s.name in owned and any(_match(path, g) for g in s.globs):
                owned[s.name].append(path)
                break
        else:  # cannot happen while "unit" owns tests/*; keep the promise loud anyway
            raise SystemExit(f"summary.py: {path} belongs to no suite")
    return owned


def suite_files(s: Suite) -> list[str]:
    if s.rerun:
        owned = ownership()
        return [f for name in s.rerun for f in owned[name]]
    override = os.environ.get(f"FASTP2P_CI_PATHS_{s.name.upper().replace('-', '_')}")
    if override is not None:  # for trying the gate: point a suite somewhere else
        return override.split()
    return ownership()[s.name]


# --------------------------------------------------------------------------- results


def out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out or os.environ.get("FASTP2P_CI_OUT") or ROOT / "build" / "ci-results")


def optouts() -> set[str]:
    raw = os.environ.get("FASTP2P_CI_OPTOUT", "")
    names = {x for x in re.split(r"[,\s]+", raw) if x}
    bad = names - set(BY_NAME)
    if bad:
        raise SystemExit(f"FASTP2P_CI_OPTOUT names unknown suite(s): {', '.join(sorted(bad))}; "
                         f"known: {', '.join(BY_NAME)}")
    return names


def parse_junit(path: Path) -> dict[str, Any]:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0, "slow_skipped": 0}
    reasons: dict[str, int] = {}
    failures: list[str] = []
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        tid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        kids = {c.tag: c for c in tc}
        if "failure" in kids:
            counts["failed"] += 1
            failures.append(tid)
        elif "error" in kids:
            counts["errors"] += 1
            failures.append(tid)
        elif "skipped" in kids:
            sk = kids["skipped"]
            if sk.get("type") == "pytest.xfail":
                counts["xfailed"] += 1
                continue
            msg = (sk.get("message") or "").strip()
            if msg in ("", "collection skipped", "skipped"):  # module-level skip: reason in the text
                text = (sk.text or "").strip()
                msg = text.split("Skipped: ", 1)[-1] if text else msg
            if msg == SLOW_SKIP:
                counts["slow_skipped"] += 1
            counts["skipped"] += 1
            reasons[msg[:160]] = reasons.get(msg[:160], 0) + 1
        else:
            counts["passed"] += 1
    return {**counts, "skip_reasons": reasons, "failures": failures[:20]}


def write_result(out: Path, name: str, data: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out / f"{name}.json")


# --------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    for s in SUITES:
        if args.kind in (None, s.kind) and not (args.kind == "pytest" and args.native_pass and s.rerun):
            print(s.name)
    return 0


def cmd_optouts(args: argparse.Namespace) -> int:
    print(" ".join(sorted(optouts())))
    return 0


def cmd_files(args: argparse.Namespace) -> int:
    s = BY_NAME[args.suite]
    if s.kind != "pytest":
        raise SystemExit(f"{s.name} is not a pytest suite")
    print("\n".join(suite_files(s)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    s = BY_NAME[args.suite]
    if s.kind != "pytest":
        raise SystemExit(f"{s.name} is not a pytest suite")
    out = out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    files = suite_files(s)
    xml = out / f"{s.name}.xml"
    xml.unlink(missing_ok=True)
    extra = [a for a in args.pytest_args if a != "--"]
    env = dict(os.environ)
    env.update(s.env)
    flags = " ".join(f"{k}={v}" for k, v in s.env.items())
    print(f"== suite {s.name}: {s.what} ({len(files)} path(s)){' ' + flags if flags else ''}",
          flush=True)
    t0 = time.monotonic()
    if not files:
        print(f"   {s.name}: no test files", flush=True)
        rc = 5  # what pytest says for "no tests collected"
    else:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={xml}", "-o", "junit_family=xunit2", *extra, *files]
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
    data: dict[str, Any] = {"suite": s.name, "kind": "pytest", "rc": rc,
                               "seconds": round(time.monotonic() - t0, 1), "files": len(files)}
    if xml.exists():
        try:
            data.update(parse_junit(xml))
        except ET.ParseError as e:
            data["detail"] = f"unreadable JUnit XML: {e}"
    write_result(out, s.name, data)
    return 0  # the gate is `report`; the exit code is recorded


def cmd_record(args: argparse.Namespace) -> int:
    s = BY_NAME[args.suite]
    data = {"suite": s.name, "kind": "counts", "rc": args.rc, "seconds": args.seconds,
            "passed": args.passed, "failed": args.failed, "skipped": args.skipped,
            "errors": args.errors, "xfailed": 0, "slow_skipped": 0, "detail": args.detail}
    write_result(out_dir(args), s.name, data)
    return 0


def cmd_junit_counts(args: argparse.Namespace) -> int:
    """Print "passed failed skipped errors" of a JUnit file (0 0 0 1 when unreadable)."""
    try:
        c = parse_junit(Path(args.xml))
    except (OSError, ET.ParseError):
        print(0, 0, 0, 1)
        return 0
    print(c["passed"], c["failed"], c["skipped"], c["errors"])
    return 0


def is_required(s: Suite, owned: int | None) -> bool:
    if s.required.startswith("env:"):
        return os.environ.get(s.required[4:], "0") == "1"
    return s.required == "yes" or (s.required == "if-files" and (owned or 0) > 0)


def judge(s: Suite, r: dict[str, Any] | None, owned: int | None, opted: bool) -> tuple[str, bool]:
    """(status text, gate failure?) for one suite."""
    required = is_required(s, owned)
    if s.required == "if-files" and not owned:
        return "no test files yet (required once there are)", False
    if r is None:
        if not required:
            return "not run (not required yet)", False
        return ("OPTED OUT, did not run" if opted else "FAIL: did not run"), not opted
    problems = []
    rc = int(r.get("rc", 0) or 0)
    ran = sum(int(r.get(k, 0) or 0) for k in ("passed", "failed", "errors", "xfailed"))
    if s.kind == "pytest" and rc not in (0, 1, 5):
        problems.append(f"pytest exit code {rc} (crash, interrupt or usage error)")
    if s.kind == "pytest" and "passed" not in r:
        problems.append("no JUnit results")
    if int(r.get("failed", 0) or 0) or int(r.get("errors", 0) or 0):
        problems.append(f"{r.get('failed', 0)} failed, {r.get('errors', 0)} errors")
    elif s.kind == "counts" and rc != 0:
        problems.append(f"exit code {rc}")
    if ran == 0:
        problems.append("ran zero tests" + (" (pytest exit 5: none collected)" if rc == 5 else ""))
    skipped = int(r.get("skipped", 0) or 0)
    slow = int(r.get("slow_skipped", 0) or 0)
    if s.no_skip and skipped - slow > 0:
        problems.append(f"skipped {skipped - slow} test(s) it must run")
    if not problems:
        return ("ok" if required else "ok (not gated)"), False
    text = "; ".join(problems)
    if opted:
        return f"OPTED OUT ({text})", False
    if not required:
        return f"not gated: {text}", False
    return f"FAIL: {text}", True


def cmd_report(args: argparse.Namespace) -> int:
    out = out_dir(args)
    opted = optouts()
    owned = {k: len(v) for k, v in ownership().items()}
    rows = []
    failed = []
    totals = {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0, "errors": 0}
    details: list[str] = []
    for s in SUITES:
        p = out / f"{s.name}.json"
        r = json.loads(p.read_text()) if p.exists() else None
        status, bad = judge(s, r, owned.get(s.name), s.name in opted)
        if bad:
            failed.append(s.name)
        req = {"yes": "yes", "if-files": "if files", "no": "no"}.get(s.required, "")
        if s.required.startswith("env:"):
            req = "yes" if is_required(s, None) else f"if {s.required[4:]}=1"
        if s.name in opted:
            req = "OPTED OUT"
        elif s.no_skip:
            req += ", no skips"
        if r is None:
            rows.append([s.name, req, "-", "-", "-", "-", "-", "-", status])
            continue
        for k in totals:
            totals[k] += int(r.get(k, 0) or 0)
        sk = str(r.get("skipped", 0))
        if r.get("slow_skipped"):
            sk += f" ({r['slow_skipped']} slow)"
        rows.append([s.name, req, str(r.get("passed", 0)), str(r.get("failed", 0)), sk,
                     str(r.get("xfailed", 0)), str(r.get("errors", 0)),
                     f"{float(r.get('seconds', 0) or 0):.1f}", status])
        if bad or (s.no_skip and r.get("skip_reasons")):
            for reason, n in list((r.get("skip_reasons") or {}).items())[:5]:
                details.append(f"  {s.name}: {n} skipped: {reason}")
            for tid in list(r.get("failures") or [])[:10]:
                details.append(f"  {s.name}: failed: {tid}")
        if r.get("detail"):
            details.append(f"  {s.name}: {r['detail']}")
    head = ["suite", "required", "passed", "failed", "skipped", "xfail", "errors", "seconds", "status"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print()
    print("=" * 78)
    print("CI summary (results in", os.path.relpath(out, ROOT) if out.is_relative_to(ROOT) else out, ")")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    if details:
        print("\n".join(details))
    if opted:
        print()
        print("!" * 78)
        print(f"!! OPTED OUT by FASTP2P_CI_OPTOUT: {', '.join(sorted(opted))}")
        print("!! these suites do NOT gate this run; a green result says nothing about them")
        print("!" * 78)
    print()
    print(f"total: {totals['passed']} passed, {totals['failed'] + totals['errors']} failed, "
          f"{totals['skipped']} skipped")
    if failed:
        print(f"CI GATE FAILED: {', '.join(failed)}")
        return 1
    print("CI gate: every required suite ran its tests and passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ci/summary.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="results folder (default $FASTP2P_CI_OUT or build/ci-results)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("--kind", choices=("pytest", "counts"))
    p.add_argument("--native-pass", action="store_true", help="pytest suites of the native pass only")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("optouts", help="validate and print FASTP2P_CI_OPTOUT")
    p.set_defaults(func=cmd_optouts)
    p = sub.add_parser("files")
    p.add_argument("suite", choices=list(BY_NAME))
    p.set_defaults(func=cmd_files)
    p = sub.add_parser("run")
    p.add_argument("suite", choices=list(BY_NAME))
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("record")
    p.add_argument("suite", choices=list(BY_NAME))
    p.add_argument("--passed", type=int, required=True)
    p.add_argument("--failed", type=int, required=True)
    p.add_argument("--skipped", type=int, default=0)
    p.add_argument("--errors", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--rc", type=int, default=0)
    p.add_argument("--detail", default="")
    p.set_defaults(func=cmd_record)
    p = sub.add_parser("junit-counts", help="passed failed skipped errors of a JUnit file (VM steps)")
    p.add_argument("xml")
    p.set_defaults(func=cmd_junit_counts)
    p = sub.add_parser("report")
    p.set_defaults(func=cmd_report)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
