"""Memory error counters: Linux EDAC sysfs and Windows WHEA-Logger events, to :class:`MemoryHealth`."""

from __future__ import annotations

from collections.abc import Mapping

from fleetpulse.agents.parsers.common import MAX_DIGITS, ParseError, bounded_lines, checked_int, named
from fleetpulse.contract import MemoryHealth

# WHEA-Logger event ids: 19 and 47 are corrected errors (machine check / memory); 18 and 20 are fatal.
WHEA_CORRECTED = {17, 19, 47}
WHEA_FATAL = {18, 20, 46}


def parse_edac_counts(files: Mapping[str, str]) -> MemoryHealth | None:
    """``{"mc0/ce_count": "0\\n", "mc0/ue_count": "0\\n", ...}`` read from ``/sys/devices/system/edac/mc``.

    ``None`` when the machine has no EDAC memory controller (most desktops without ECC).
    """
    ce = ue = 0
    seen = False
    for path, text in files.items():
        leaf = path.rsplit("/", 1)[-1]
        if leaf not in ("ce_count", "ue_count"):
            continue
        value = text.strip()
        if not value.isdecimal():
            raise ParseError(f"{path[:200]}: not a counter: {value[:40]!r}")
        seen = True
        count = named(path[:200], checked_int, value)
        if leaf == "ce_count":
            ce += count
        else:
            ue += count
    return MemoryHealth(correctable_errors=ce, uncorrectable_errors=ue) if seen else None


def parse_whea_events(text: str) -> MemoryHealth:
    """``wevtutil qe System /q:"*[System[Provider[@Name='Microsoft-Windows-WHEA-Logger']]]" /f:text``.

    Counts the events wevtutil printed; the collector bounds the query (``/c:``) and its time window.
    """
    ids = [checked_int(v) for v in _event_ids(text) if len(v) <= MAX_DIGITS]
    if not ids and text.strip() and "Event[" not in text:
        raise ParseError("not wevtutil text output")
    return MemoryHealth(
        correctable_errors=sum(1 for i in ids if i in WHEA_CORRECTED),
        uncorrectable_errors=sum(1 for i in ids if i in WHEA_FATAL),
    )


def _event_ids(text: str) -> list[str]:
    """The digits of every ``Event ID: N`` line (per line, so no pattern can backtrack across lines)."""
    found = []
    for line in bounded_lines(text):
        head, colon, value = line.strip().partition(":")
        if colon and head == "Event ID" and value.strip().isdecimal():
            found.append(value.strip())
    return found
