"""The simulator's disk constants, checked against the real Backblaze 2013 fleet they were taken from."""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from fleetpulse.agents.simulator import (
    DISK_AFR,
    DISK_BENIGN_NONZERO,
    DISK_PREDICTABLE,
    FleetMix,
    FleetSimulator,
)
from fleetpulse.compat import UTC
from fleetpulse.contract import Component, DiskKind

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class BackblazeFacts:
    afr: float
    failed_flagged: float
    """Failed drives with SMART 5 or 197 raw > 0 on some day of the window (the naive rule's recall)."""
    healthy_flagged: float


@pytest.fixture(scope="module")
def backblaze(shared_data: Path) -> BackblazeFacts:
    path = shared_data / "backblaze" / "backblaze_2013-04-10_2013-05-19_all_drives.csv.gz"
    drive_days = 0
    drives: set[str] = set()
    failed: set[str] = set()
    flagged: set[str] = set()
    with gzip.open(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        serial, failure = header.index("serial_number"), header.index("failure")
        s5, s197 = header.index("smart_5_raw"), header.index("smart_197_raw")
        for row in reader:
            drive_days += 1
            drives.add(row[serial])
            if row[failure] == "1":
                failed.add(row[serial])
            if (row[s5] and int(row[s5]) > 0) or (row[s197] and int(row[s197]) > 0):
                flagged.add(row[serial])
    healthy = drives - failed
    return BackblazeFacts(
        afr=len(failed) / drive_days * 365,
        failed_flagged=len(failed & flagged) / len(failed),
        healthy_flagged=len(healthy & flagged) / len(healthy),
    )


def test_backblaze_facts_are_what_the_data_readme_says(backblaze: BackblazeFacts) -> None:
    assert backblaze.afr == pytest.approx(0.050, abs=0.001)
    assert backblaze.failed_flagged == pytest.approx(80 / 120)
    assert backblaze.healthy_flagged == pytest.approx(2013 / 22772)


def test_disk_constants_follow_backblaze(backblaze: BackblazeFacts) -> None:
    # PC drives run fewer hours under lighter load than Backblaze pods: a lower, same-order AFR.
    assert 0.5 * backblaze.afr <= DISK_AFR[DiskKind.HDD] <= backblaze.afr
    assert DISK_AFR[DiskKind.NVME] < DISK_AFR[DiskKind.SSD] < DISK_AFR[DiskKind.HDD]
    assert DISK_PREDICTABLE[DiskKind.HDD] == pytest.approx(backblaze.failed_flagged, abs=0.01)
    assert DISK_BENIGN_NONZERO[DiskKind.HDD] == pytest.approx(backblaze.healthy_flagged, abs=0.005)


def test_simulated_desktops_show_the_naive_rule_rates_of_backblaze(backblaze: BackblazeFacts) -> None:
    """Healthy HDDs flagged by 'SMART 5 or 197 > 0' in the simulated data, as in the real fleet."""
    sim = FleetSimulator(15_000, 13, datetime(2025, 1, 1, tzinfo=UTC), 40, mix=FleetMix(0, 1, 0, 0))
    failing = {g.component_id for g in sim.ground_truth() if g.component is Component.DISK}
    healthy = flagged = 0
    for index in range(len(sim)):
        report = sim.report_at(index, datetime(2025, 1, 20, tzinfo=UTC))
        for disk in report.disks if report else []:
            if disk.kind is DiskKind.HDD and disk.serial_hash not in failing:
                healthy += 1
                flagged += (disk.reallocated_sectors or 0) > 0 or (disk.current_pending_sectors or 0) > 0
    assert healthy > 3000
    assert flagged / healthy == pytest.approx(backblaze.healthy_flagged, abs=0.015)
