"""Shared helpers for the litwatch benchmarks: loopback-only network guard, the
machine description, markdown tables, timing, and child processes for fair peak-RSS.

Generated corpora go to $LITWATCH_BENCH_DIR (default /tmp/litwatch-bench), never into
the repository."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TESTS = ROOT / "tests"
SHARED_DATA = Path(os.environ.get("LITWATCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
WORK = Path(os.environ.get("LITWATCH_BENCH_DIR", Path(tempfile.gettempdir()) / "litwatch-bench"))
PG_URL = os.environ.get("LITWATCH_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# tests/helpers/ too: issue 15 moves the fakes (fake_eutils, feedhost) there
for p in (str(ROOT / "src"), str(TESTS), str(TESTS / "helpers"), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)


# ----------------------------------------------------------------------------- no internet

_LOOPBACK = ("127.", "::1", "localhost", "/")


def guard_network() -> None:
    """Benchmarks never touch the internet: any connect to a non-loopback address
    raises (this also stops Biopython from fetching a DTD it lacks)."""
    if getattr(socket.socket.connect, "_bench_guard", False):
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def _check(addr: Any) -> None:
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        if not str(host).startswith(_LOOPBACK):
            raise OSError(f"benchmark network guard: refusing to connect to {addr!r}")

    def connect(self: socket.socket, addr: Any) -> None:
        _check(addr)
        return real_connect(self, addr)

    def connect_ex(self: socket.socket, addr: Any) -> int:
        _check(addr)
        return real_connect_ex(self, addr)

    connect._bench_guard = True  # type: ignore[attr-defined]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


guard_network()


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, str]:
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    libs = [
        "litwatch",
        "lxml",
        "biopython",
        "feedparser",
        "sqlalchemy",
        "psycopg",
        "jinja2",
        "css-inline",
        "pyinstrument",
    ]
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    info.update({lib: version(lib) for lib in libs})
    try:
        import lxml.etree as et

        info["libxml2"] = ".".join(map(str, et.LIBXML_VERSION))
    except ImportError:
        pass
    return info


def machine_table() -> str:
    return table("Machine", ["what", "value"], [[k, v] for k, v in machine().items()])


# ----------------------------------------------------------------------------- output


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> str:
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [f"### {title}", ""]
    for j, r in enumerate(cells):
        lines.append(
            "| "
            + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            + " |"
        )
        if j == 0:
            lines.append("|" + "|".join(("-" * (w + 1) + ("-" if i == 0 else ":")) for i, w in enumerate(widths)) + "|")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a: float, b: float) -> str:
    """'a is N× b' for display."""
    if not b:
        return "-"
    return f"{a / b:.2f}×"


# ----------------------------------------------------------------------------- children


def rss_now_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_kb() -> int:
    """This process's peak RSS since its exec: VmHWM. (ru_maxrss is not reset by exec on
    Linux, so a child spawned by a parent that had grown big reports the parent's peak.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_child(args: Sequence[str], timeout: float = 900) -> dict[str, Any]:
    """Run `python <args>` in a fresh interpreter; it prints one JSON line last."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT)
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
