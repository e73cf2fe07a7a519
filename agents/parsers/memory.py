"""Memory error counters: Linux EDAC sysfs and Windows WHEA-Logger events, to :class:`MemoryHealth`."""

from __future__ import annotations

import re
from collections.abc import Mapping

from fleetpulse.agents.parsers.common import ParseError
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
        if not re.fullmatch(r"\d+", value):
            raise ParseError(f"{path}: not a counter: {value[:40]!r}")
        seen = True
        if leaf == "ce_count":
            ce += int(value)
        else:
            ue += int(value)
    return MemoryHealth(correctable_errors=ce, uncorrectable_errors=ue) if seen else None


def parse_whea_events(text: str) -> MemoryHealth:
    """``wevtutil qe System /q:"*[System[Provider[@Name='Microsoft-Windows-WHEA-Logger']]]" /f:text``.

    Counts the events wevtutil printed; the collector bounds the query (``/c:``) and its time window.
    """
    ids = [int(m) for m in re.findall(r"^\s*Event ID:\s*(\d+)\s*$", text, flags=re.MULTILINE)]
    if not ids and text.strip() and "Event[" not in text:
        raise ParseError("not wevtutil text output")
    return MemoryHealth(
        correctable_errors=sum(1 for i in ids if i in WHEA_CORRECTED),
        uncorrectable_errors=sum(1 for i in ids if i in WHEA_FATAL),
    )
