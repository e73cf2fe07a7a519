"""SMART/NVMe health via ``smartctl --json``, polled gently.

Why gently: SMART reads cost I/O and can spin up a sleeping disk, which shortens its life and
annoys users. So: at most once per ``smart_interval_s`` (remembered across restarts), one
smartctl at a time, and ``-n standby`` so a disk in standby is skipped, never woken.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from fleetpulse.agents.collectors.base import CollectorContext, Section, StateFile, run_tool
from fleetpulse.agents.parsers import ParseError
from fleetpulse.agents.parsers.smartctl import parse_smartctl_json
from fleetpulse.contract import CollectorError, DiskHealth

STANDBY_EXIT = 3
"""``-n standby,3``: smartctl exits with 3 when it skipped a disk in standby (distinct from its bit flags 1/2/4)."""
FATAL_EXIT_BITS = 0b011
"""smartctl exit bits 0 (command line) and 1 (device open failed) mean no data; higher bits carry data."""


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
        per_call = max(1.0, self.timeout_s / 2)
        targets = self._scan(per_call) if self.devices is None else [(d, None) for d in self.devices]
        disks: list[DiskHealth] = []
        errors: list[CollectorError] = []
        for name, dev_type in targets[: self.max_disks]:
            dropped: list[str] = []
            try:
                disk = self._read(name, dev_type, per_call, dropped)
            except (OSError, RuntimeError, ParseError, subprocess.SubprocessError) as exc:
                errors.append(CollectorError(collector=f"smart:{name}"[:128], error=str(exc)[:2048]))
                continue
            if dropped:  # values smartctl printed that could not be used: the rest of the disk is reported
                errors.append(CollectorError(collector=f"smart:{name}"[:128], error="; ".join(dropped)[:2048]))
            if disk is not None:
                disks.append(disk)
        section: Section = {"disks": disks}
        if errors:
            section["collector_errors"] = errors
        return section

    def _scan(self, timeout_s: float) -> list[tuple[str, str | None]]:
        proc = run_tool([self.smartctl, "--scan-open", "--json"], timeout_s, ok_codes=tuple(range(256)))
        try:
            doc: Any = json.loads(proc.stdout)
        except ValueError as exc:
            raise RuntimeError(f"smartctl --scan-open: not JSON: {exc}") from None
        found: list[tuple[str, str | None]] = []
        for device in doc.get("devices", []) if isinstance(doc, dict) else []:
            if isinstance(device, dict) and isinstance(device.get("name"), str):
                dev_type = device.get("type")
                found.append((device["name"], dev_type if isinstance(dev_type, str) else None))
        return found

    def _read(self, name: str, dev_type: str | None, timeout_s: float, dropped: list[str]) -> DiskHealth | None:
        argv = [self.smartctl, "--json", "-a", "-n", f"standby,{STANDBY_EXIT}"]
        if dev_type:
            argv += ["-d", dev_type]
        proc = run_tool([*argv, name], timeout_s, ok_codes=tuple(range(256)))
        if proc.returncode == STANDBY_EXIT:
            return None  # asleep: report it next time rather than wake it
        if proc.returncode & FATAL_EXIT_BITS:
            raise RuntimeError(f"smartctl exit status {proc.returncode} for {name}")
        return parse_smartctl_json(proc.stdout, name=name, hasher=self.ctx.hash_serial, problems=dropped)
