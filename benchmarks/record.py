"""Where a benchmark's numbers go: ``benchmarks/results/<name>.json`` with the command, the time,
the revision and the machine, so the docs' tables are rendered from a run (``make results``)
rather than copied by hand, and a reader can see what hardware and load produced them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from fleetpulse.compat import UTC

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The hardware and how busy it was: numbers from a shared 2-core box read differently."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": _cpu_model(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def record(name: str, results: dict[str, Any], started_load: float | None = None) -> Path:
    """Write ``results`` as this run's record of ``name``; ``started_load`` is the load average before the run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    host = machine()
    if started_load is not None:
        host["load_average_1m_at_start"] = round(started_load, 2)
    document = {
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "revision": _revision(),
        "machine": host,
        "results": results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"recorded in {path.relative_to(REPO)}")
    return path
