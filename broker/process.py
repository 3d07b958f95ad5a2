"""Broker processes: start one beside its log, wait until it logs that it is ready, stop.

Shared by :mod:`broker.mosquitto` and :mod:`broker.nats`. Logs are only appended
to, so "ready" means the needle was logged after the byte offset the log had when
the process was started (an earlier run's line does not count).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = ["log_size", "logged_since", "spawn", "stop_all", "tail", "wait_logged"]


def _die_with_parent() -> None:
    """Linux: SIGTERM the broker if the thread that started it dies (no orphans when a
    test run or `entitle demo` is killed). Start brokers from a long-lived thread."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def spawn(argv: Sequence[str], out_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` with no stdin, its stdout and stderr appended to ``out_path``,
    dying with the thread that started it."""
    with open(out_path, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,
        )


def log_size(path: Path) -> int:
    """The log's size now (0 before it exists): the offset to pass to :func:`logged_since`."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def logged_since(path: Path, offset: int, needle: str) -> bool:
    """Whether ``needle`` was logged after byte ``offset`` (the log is only appended to)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return needle.encode() in f.read()
    except FileNotFoundError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, or ``(no log)``."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_logged(
    process: subprocess.Popen[bytes],
    path: Path,
    offset: int,
    needle: str,
    *,
    timeout: float,
    ready: Callable[[], bool] = lambda: True,
    interval: float = 0.05,
) -> bool:
    """Until ``needle`` is logged after ``offset`` and ``ready()`` holds: True; False if
    the process exits or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if logged_since(path, offset, needle) and ready():
            return True
        time.sleep(interval)
    return False


def stop_all(
    processes: Iterable[subprocess.Popen[bytes] | None], timeout: float
) -> list[subprocess.Popen[bytes]]:
    """SIGTERM every running process, then wait for each; SIGKILL those still running
    after ``timeout`` seconds. Returns the processes that had to be killed."""
    started = [p for p in processes if p is not None]
    for process in started:
        if process.poll() is None:
            process.terminate()
    killed = []
    for process in started:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed.append(process)
    return killed
