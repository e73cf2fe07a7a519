"""SMART/NVMe health via ``smartctl --json``, polled gently.

Why gently: SMART reads cost I/O and can spin up a sleeping disk, which shortens its life and
annoys users. So: at most once per ``smart_interval_s`` (remembered across restarts), one
smartctl at a time, and ``-n standby`` so a disk in standby is skipped, never woken.

With ``smart_snapshot_dir`` set (the Linux service), the collector runs no ``smartctl`` itself: it
reads what the privileged helper wrote (:mod:`~fleetpulse.agents.collectors.smart_snapshot`).
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from fleetpulse.agents.collectors.base import CollectorContext, Section, StateFile, collector_error
from fleetpulse.agents.collectors.smart_snapshot import STANDBY_EXIT, read_disk, read_snapshot, scan
from fleetpulse.agents.parsers import ParseError
from fleetpulse.agents.parsers.smartctl import parse_smartctl_json
from fleetpulse.compat import UTC
from fleetpulse.contract import CollectorError, DiskHealth

FATAL_EXIT_BITS = 0b011
"""smartctl exit bits 0 (command line) and 1 (device open failed) mean no data; higher bits carry data."""
MIN_HELPER_PERIOD_S = 3600.0
"""``fleetpulse-smart.timer`` runs the helper hourly: a snapshot is judged against at least that period."""
SNAPSHOT_STALE_INTERVALS = 3
"""A snapshot older than three helper periods is reported as stale, not as the disks' current health."""


class SmartCollector:
    name = "smart"
    event_source = True
    """Run by the agent's event probe between reports (see :mod:`fleetpulse.agents.events`)."""

    def __init__(
        self, ctx: CollectorContext, smartctl: str, timeout_s: float, devices: list[str] | None, max_disks: int
    ) -> None:
        self.ctx = ctx
        self.smartctl = smartctl
        self.timeout_s = timeout_s
        self.devices = devices
        self.max_disks = max_disks
        self.state = StateFile(ctx.state_dir / "smart.json")

    def due(self, now: float) -> bool:
        last = self.state.load().get("last_poll", 0.0)
        return not isinstance(last, int | float) or now - last >= self.ctx.smart_interval_s or now < last

    def collect(self) -> Section:
        now = time.time()
        if not self.due(now):
            return {}
        self.state.save({"last_poll": now})
        if self.ctx.smart_snapshot_dir is not None:
            disks, errors = self._from_snapshot(self.ctx.smart_snapshot_dir, now)
        else:
            disks, errors = self._from_smartctl()
        section: Section = {"disks": disks}
        if errors:
            section["collector_errors"] = errors
        return section

    def _from_smartctl(self) -> tuple[list[DiskHealth], list[CollectorError]]:
        per_call = max(1.0, self.timeout_s / 2)
        targets = scan(self.smartctl, per_call) if self.devices is None else [(d, None) for d in self.devices]
        disks: list[DiskHealth] = []
        errors: list[CollectorError] = []
        for name, dev_type in targets[: self.max_disks]:
            dropped: list[str] = []
            try:
                status, output = read_disk(self.smartctl, name, dev_type, per_call)
                disk = self._disk(name, status, output, dropped)
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:  # ValueError: ParseError too
                errors.append(_error(name, str(exc)))
                continue
            self._keep(name, disk, dropped, disks, errors)
        return disks, errors

    def _from_snapshot(self, folder: Path, now: float) -> tuple[list[DiskHealth], list[CollectorError]]:
        """The helper's outputs, read as this collector's own (``devices`` selects among them)."""
        stale_after = timedelta(seconds=SNAPSHOT_STALE_INTERVALS * max(self.ctx.smart_interval_s, MIN_HELPER_PERIOD_S))
        snapshot = read_snapshot(folder, stale_after, datetime.fromtimestamp(now, UTC))
        disks: list[DiskHealth] = []
        errors = [collector_error("smart", error) for error in snapshot.errors]
        chosen = [d for d in snapshot.disks if self.devices is None or d.name in self.devices]
        missing = sorted(set(self.devices or ()) - {d.name for d in snapshot.disks})
        errors += [
            _error(name, "not in the helper's snapshot (it reads what smartctl --scan-open finds)") for name in missing
        ]
        for entry in chosen[: self.max_disks]:
            dropped: list[str] = []
            try:
                if entry.error is not None or entry.output is None:
                    raise RuntimeError(entry.error or "no output")
                disk = self._disk(entry.name, entry.exit_status, entry.output, dropped)
            except (RuntimeError, ParseError) as exc:
                errors.append(_error(entry.name, str(exc)))
                continue
            self._keep(entry.name, disk, dropped, disks, errors)
        return disks, errors

    def _disk(self, name: str, status: int, output: str | bytes, dropped: list[str]) -> DiskHealth | None:
        if status == STANDBY_EXIT:
            return None  # asleep: report it next time rather than wake it
        if status & FATAL_EXIT_BITS or status < 0:
            raise RuntimeError(f"smartctl exit status {status} for {name}")
        return parse_smartctl_json(output, name=name, hasher=self.ctx.hash_serial, problems=dropped)

    @staticmethod
    def _keep(
        name: str, disk: DiskHealth | None, dropped: list[str], disks: list[DiskHealth], errors: list[CollectorError]
    ) -> None:
        if dropped:  # values smartctl printed that could not be used: the rest of the disk is reported
            errors.append(_error(name, "; ".join(dropped)))
        if disk is not None:
            disks.append(disk)


def _error(name: str, message: str) -> CollectorError:
    return collector_error(f"smart:{name}", message)
