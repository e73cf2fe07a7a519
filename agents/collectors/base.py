"""The one interface every collector implements, and what they are given to do their job."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fleetpulse.agents.parsers.common import valid_text
from fleetpulse.agents.trust import resolve_tool
from fleetpulse.contract import CollectorError, Platform

Section = dict[str, Any]
"""A partial :class:`~fleetpulse.contract.HealthReport`: field name -> contract value, e.g. ``{"battery": ...}``."""


class CollectorUnavailable(RuntimeError):
    """The signal does not exist on this machine (no battery, no EDAC); reported, not retried harder."""


@runtime_checkable
class Collector(Protocol):
    """Collects one section. Raising is fine: the runner turns it into a ``CollectorError``."""

    name: str
    timeout_s: float

    def collect(self) -> Section: ...


def collector_error(collector: str, message: str) -> CollectorError:
    """A failure as the report carries it: a name that is not UTF-8 (a device, a file in an OS error) holds lone
    surrogates, which the contract refuses; they become U+FFFD instead of costing the whole collection."""
    return CollectorError(collector=valid_text(collector)[:128], error=valid_text(message)[:2048])


@dataclass(frozen=True)
class CollectorContext:
    """What collectors may use beyond their own config; no settings objects leak further."""

    state_dir: Path
    platform: Platform
    hash_serial: Callable[[str], str]
    smart_interval_s: float
    smart_snapshot_dir: Path | None = None
    """Read SMART from the privileged helper's snapshot here instead of running smartctl (Linux service)."""


def run_tool(argv: list[str], timeout_s: float, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    """One bounded subprocess: no shell, C locale (parsers read English), output size capped by the timeout.

    The binary must be one only administrators can replace (:func:`~fleetpulse.agents.trust.resolve_tool`):
    the agent runs it with its own privileges.
    """
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    argv = [resolve_tool(argv[0]), *argv[1:]]
    proc = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False, env=env
    )
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:300]}")
    return proc


class StateFile:
    """A collector's small persistent state (JSON), replaced atomically so a crash leaves old or new."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(self.path, json.dumps(data).encode(), 0o600)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a fresh file beside ``path``, then rename it over: readers see the old or the new file.

    The fresh file is created exclusively and never through a link planted at its name, so a privileged
    writer (the SMART helper runs as root) cannot be made to write elsewhere; ``mode`` is set whatever the umask.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    temporary.unlink(missing_ok=True)  # left by an earlier run of the same pid that died mid-write
    fd = os.open(temporary, flags, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class Throttled:
    """Runs a collector at most every ``interval_s`` (returning nothing in between).

    For signals that change slowly but cost a subprocess on some platforms (``powercfg``,
    ``wevtutil``): a report a minute must not mean a process a minute.
    """

    def __init__(self, inner: Collector, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.name = inner.name
        self.timeout_s = inner.timeout_s
        self.event_source: bool = getattr(inner, "event_source", False)
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def collect(self) -> Section:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return {}
        self._last = now
        return self.inner.collect()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
