"""Boot duration from ``systemd-analyze`` (Linux)."""

from __future__ import annotations

import re

from fleetpulse.agents.parsers.common import ParseError, checked_int, named

_PART = re.compile(r"(\d+(?:\.\d+)?)(min|ms|s|h)\b")
_UNIT_SECONDS = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 0.001}


def parse_systemd_analyze(text: str) -> float:
    """``Startup finished in 2.1s (kernel) + 12.3s (userspace) = 14.4s`` -> 14.4 (seconds).

    Takes the total after ``=``; durations like ``1min 2.5s`` are summed.
    """
    line = next((ln for ln in text.splitlines() if ln.startswith("Startup finished in")), None)
    if line is None or "=" not in line:
        raise ParseError("no 'Startup finished in ... = total' line (boot not finished yet?)")
    total = line.rsplit("=", 1)[1].split("\n")[0]
    parts = _PART.findall(total)
    if not parts:
        raise ParseError(f"no duration in {total!r}")
    return sum(float(value) * _UNIT_SECONDS[unit] for value, unit in parts)


WINDOWS_BOOT_QUERY = [
    "wevtutil",
    "qe",
    "Microsoft-Windows-Diagnostics-Performance/Operational",
    "/q:*[System[(EventID=100)]]",
    "/c:1",
    "/rd:true",
    "/f:xml",
]
"""The latest boot-performance event (ID 100); its ``BootTime`` is the boot duration in ms."""


def parse_windows_boot_event(xml_text: str) -> float:
    """``BootTime`` (ms) of a Diagnostics-Performance event 100, in seconds."""
    match = re.search(r"<Data Name=['\"]BootTime['\"]>\s*(\d+)\s*</Data>", xml_text)
    if match is None:
        raise ParseError("no BootTime in the boot performance event (none recorded yet?)")
    return named("BootTime", checked_int, match.group(1)) / 1000.0
