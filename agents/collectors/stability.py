"""Crashes, unexpected shutdowns, boot duration and uptime.

Unexpected shutdowns are detected without reading any logs of user activity: the agent stores
the boot id it runs under and marks a clean stop when the service is stopped (which the OS does
on an orderly shutdown). A new boot id without a clean-stop mark means the machine went down
hard (power loss, hang, hard reset). Crashes are counted as new kernel crash dumps (pstore,
kdump, Windows minidumps, macOS panic reports): counts only, never names or contents.

A crash folder may be writable by every user (``/var/crash`` on Ubuntu), so on POSIX only entries
owned by root or the agent count, and an mtime later than now neither counts nor moves the
"seen until" watermark: a planted file dated 2099 would otherwise hide every later crash. A folder
is read as a stream and at most :data:`MAX_CRASH_DIR_ENTRIES` of its entries are examined per probe:
a million planted files would otherwise cost every probe seconds and hundreds of MiB.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from fleetpulse.agents.collectors.base import CollectorContext, Section, StateFile, collector_error, run_tool
from fleetpulse.agents.parsers import ParseError
from fleetpulse.agents.parsers.boot import WINDOWS_BOOT_QUERY, parse_systemd_analyze, parse_windows_boot_event
from fleetpulse.contract import Platform, StabilityHealth

CRASH_DIRS = {
    Platform.LINUX: (Path("/var/lib/systemd/pstore"), Path("/sys/fs/pstore"), Path("/var/crash")),
    Platform.WINDOWS: (Path(r"C:\Windows\Minidump"), Path(r"C:\Windows\LiveKernelReports")),
    Platform.MACOS: (Path("/Library/Logs/DiagnosticReports"),),
}
MAX_CRASHES_PER_REPORT = 1000
MAX_CRASH_DIR_ENTRIES = 10_000
"""Crash tools keep a handful of dumps; a folder holding more is being flooded, and reported as such."""

log = logging.getLogger(__name__)


def crash_dump_owners() -> frozenset[int] | None:
    """Owners whose entries are crash dumps: root (the kernel's dump tools) and the agent itself.

    None on Windows, where ``st_uid`` is always 0 and the minidump folders are administrators' alone.
    """
    if sys.platform == "win32":
        return None
    return frozenset({0, os.geteuid()})


def current_boot_id() -> str:
    """Linux has a kernel boot id; elsewhere the boot time identifies the boot well enough."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"boot-{int(psutil.boot_time())}"


class StabilityCollector:
    name = "stability"
    event_source = True
    """Run by the agent's event probe between reports (see :mod:`fleetpulse.agents.events`)."""

    def __init__(self, ctx: CollectorContext, timeout_s: float, crash_dirs: tuple[Path, ...] | None = None) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.crash_dirs = crash_dirs if crash_dirs is not None else CRASH_DIRS.get(ctx.platform, ())
        self.crash_owners = crash_dump_owners()
        self._future_logged = 0
        self.state = StateFile(ctx.state_dir / "stability.json")
        self.boot_id = current_boot_id()
        self._pending_unexpected = self._check_previous_boot()

    def _check_previous_boot(self) -> int:
        state = self.state.load()
        previous_boot = state.get("boot_id")
        unexpected = 1 if previous_boot not in (None, self.boot_id) and not state.get("clean_stop") else 0
        if previous_boot != self.boot_id:
            state.pop("boot_duration_s", None)
        state.update(boot_id=self.boot_id, clean_stop=False)
        state.setdefault("crash_seen_until", time.time())
        self.state.save(state)
        return unexpected

    def close(self) -> None:
        """Called on an orderly service stop: the next boot was not preceded by a crash."""
        state = self.state.load()
        state["clean_stop"] = True
        self.state.save(state)

    def collect(self) -> Section:
        state = self.state.load()
        seen = dict(state)
        now = time.time()
        since = min(float(state.get("crash_seen_until", now)), now)  # a future mark (older agents) would blind it
        crashes, newest, flooded = self._new_crash_dumps(since, now)
        state["crash_seen_until"] = max(since, newest)
        if "boot_duration_s" not in state:
            state["boot_duration_s"] = self._boot_duration()
        unexpected, self._pending_unexpected = self._pending_unexpected, 0
        if state != seen:  # the event probe runs this every minute: no fsync when nothing changed
            self.state.save(state)
        section: Section = {
            "stability": StabilityHealth(
                crashes=crashes,
                unexpected_shutdowns=unexpected,
                boot_duration_s=state["boot_duration_s"],
                uptime_s=max(0.0, time.time() - psutil.boot_time()),
            )
        }
        if flooded:
            section["collector_errors"] = [
                collector_error(
                    self.name,
                    f"crash folder {folder} holds more than {MAX_CRASH_DIR_ENTRIES} entries: only that many are "
                    "examined, so crashes may go uncounted; are other users filling it?",
                )
                for folder in flooded
            ]
        return section

    def _new_crash_dumps(self, since: float, now: float) -> tuple[int, float, list[Path]]:
        """Entries dated in ``(since, now]``: the count (capped), the newest such mtime, the folders
        holding more than :data:`MAX_CRASH_DIR_ENTRIES` entries (the rest of each is not examined)."""
        count, newest, foreign, future = 0, since, 0, 0
        flooded: list[Path] = []
        for folder in self.crash_dirs:
            try:
                with os.scandir(folder) as entries:  # streamed: a flooded folder is never held in memory
                    for examined, entry in enumerate(entries):
                        if examined == MAX_CRASH_DIR_ENTRIES:
                            flooded.append(folder)
                            break
                        try:
                            info = entry.stat(follow_symlinks=False)  # a user's link to a root file is the user's
                        except OSError:
                            continue
                        if info.st_mtime > now:
                            future += 1  # counted once the clock reaches it, if it is genuine
                        elif info.st_mtime > since:
                            newest = max(newest, info.st_mtime)
                            if self.crash_owners is None or info.st_uid in self.crash_owners:
                                count += 1
                            else:
                                foreign += 1
            except OSError:
                continue  # not on this machine, or gone while read
        more_future, self._future_logged = future > self._future_logged, future
        if foreign or more_future:  # logged once per entry, though the probe looks every minute
            log.warning(
                "crash folder entries not counted",
                extra={"fields": {"owned_by_other_users": foreign, "dated_in_the_future": future}},
            )
        return min(count, MAX_CRASHES_PER_REPORT), newest, flooded

    def _boot_duration(self) -> float | None:
        try:
            if self.ctx.platform == Platform.WINDOWS:
                seconds = parse_windows_boot_event(run_tool(WINDOWS_BOOT_QUERY, self.timeout_s).stdout)
            elif self.ctx.platform == Platform.LINUX:
                seconds = parse_systemd_analyze(run_tool(["systemd-analyze", "time"], self.timeout_s).stdout)
            else:
                return None
        except (OSError, RuntimeError, ParseError, subprocess.SubprocessError):
            return None  # not systemd, or boot still in progress: try again next boot
        return seconds if seconds <= 3600 else None
