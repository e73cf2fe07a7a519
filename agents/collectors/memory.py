"""Memory errors: EDAC counters on Linux, WHEA-Logger events on Windows."""

from __future__ import annotations

from pathlib import Path

from fleetpulse.agents.collectors.base import CollectorContext, Section, run_tool
from fleetpulse.agents.parsers.memory import parse_edac_counts, parse_whea_events
from fleetpulse.contract import Platform

EDAC_MC = Path("/sys/devices/system/edac/mc")
WHEA_QUERY = "*[System[Provider[@Name='Microsoft-Windows-WHEA-Logger']]]"


class MemoryCollector:
    name = "memory"

    def __init__(self, ctx: CollectorContext, timeout_s: float, edac_root: Path = EDAC_MC) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s
        self.edac_root = edac_root

    def collect(self) -> Section:
        if self.ctx.platform == Platform.WINDOWS:
            out = run_tool(["wevtutil", "qe", "System", f"/q:{WHEA_QUERY}", "/f:text", "/c:1000"], self.timeout_s)
            return {"memory": parse_whea_events(out.stdout)}
        files = {}
        for path in self.edac_root.glob("mc*/[cu]e_count"):
            try:
                files[f"{path.parent.name}/{path.name}"] = path.read_text()
            except OSError:
                continue
        memory = parse_edac_counts(files)
        return {"memory": memory} if memory is not None else {}
