"""Every real smartctl output in ../shared/data/smartctl goes through the parsers without crashing."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fleetpulse.agents.parsers import ParseError
from fleetpulse.agents.parsers.smartctl import parse_smartctl_json, parse_smartctl_text
from fleetpulse.contract import DiskHealth, DiskKind, HealthReport, Priority
from tests.harness import SHARED_DATA, unavailable

CORPUS = SHARED_DATA / "smartctl"


def _manifest() -> list[dict[str, str]]:
    manifest = CORPUS / "manifest.csv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


ROWS = _manifest()


def _parse(root: Path, row: dict[str, str]) -> DiskHealth:
    path = root / "smartctl" / row["file"]
    data = path.read_bytes()
    if row["format"] == "json":
        return parse_smartctl_json(data, name=path.name, hasher=lambda s: f"h{len(s)}")
    return parse_smartctl_text(data.decode("utf-8", errors="replace"), name=path.name, hasher=lambda s: f"h{len(s)}")


@pytest.mark.parametrize(
    "row",
    ROWS or [pytest.param({}, id="corpus-absent")],
    ids=lambda r: r.get("file", "none"),
)
def test_every_real_output_parses_or_is_refused_cleanly(shared_data: Path, row: dict[str, str]) -> None:
    if not row:
        unavailable(f"smartctl corpus manifest not found at {CORPUS / 'manifest.csv'}")
    try:
        disk = _parse(shared_data, row)
    except ParseError:
        # listings, probes and git-symlink stubs hold no device data; all are pysmart/scrutiny fixtures
        assert row["category"] not in ("failed_health", "passed_with_errors", "passed_clean", "no_health_line")
        return
    assert isinstance(disk, DiskHealth)
    if row["health"].startswith("FAILED"):
        assert disk.smart_passed is False
    elif row["health"] == "PASSED":
        assert disk.smart_passed is True
    if row["category"] in ("failed_health", "passed_with_errors", "passed_clean", "no_health_line"):
        assert disk.model
        expected = {"HDD": DiskKind.HDD, "SSD": DiskKind.SSD, "NVMe": DiskKind.NVME}[row["device_kind"]]
        # NVMe drives behind a SCSI translation layer (Dell DC) report as solid-state SCSI disks
        assert disk.kind in (expected, DiskKind.UNKNOWN) or (expected is DiskKind.NVME and disk.kind is DiskKind.SSD)
    if row["category"] == "passed_with_errors":
        report = HealthReport.model_validate(
            {
                "device_id": "d1",
                "seq": 0,
                "collected_at": "2026-01-01T00:00:00Z",
                "kind": "desktop",
                "platform": "linux",
                "disks": [disk],
            }
        )
        assert report.priority is Priority.EVENT, "an early-warning counter must make the report an event"


def test_corpus_is_complete(shared_data: Path) -> None:
    assert len(ROWS) == 359
    failing = [r for r in ROWS if r["health"].startswith("FAILED")]
    assert len(failing) >= 60


HAND_CHECKED = {
    # brief (-x) ATA table, failing Hitachi: values read off the file by hand
    "linuxhw_enterprisedrive/HDD/Hitachi__HDS721010DLE630__1F34AC99E66A.txt": {
        "kind": DiskKind.HDD,
        "model": "HDS721010DLE630",
        "serial_hash": None,  # anonymised "--"
        "capacity_bytes": 1_000_204_886_016,
        "smart_passed": False,
        "reallocated_sectors": 1966,
        "power_on_hours": 23214,
        "temperature_c": 34.0,
        "current_pending_sectors": 264,
        "offline_uncorrectable": 0,
        "udma_crc_errors": 0,
    },
    # classic -a 10-column ATA table
    "pysmart_testdata/singletests/sata_hdd_0_issue42/smartctl_-d_ata_--all__dev_sdau.txt": {
        "kind": DiskKind.HDD,
        "model": "OOS12000G",
        "capacity_bytes": 12_000_138_625_024,
        "smart_passed": True,
        "reallocated_sectors": 0,
        "power_on_hours": 252,
        "reported_uncorrect": 0,
        "command_timeout": 0,
        "temperature_c": 38.0,
        "current_pending_sectors": 0,
    },
    # NVMe health log as text
    "linuxhw_enterprisedrive/NVMe/Corsair__Force_MP510_1.9TB__DC7A786E26C8.txt": {
        "kind": DiskKind.NVME,
        "model": "Force MP510",
        "capacity_bytes": 1_920_383_410_176,
        "smart_passed": True,
        "critical_warning": 0,
        "temperature_c": 28.0,
        "available_spare_pct": 100.0,
        "available_spare_threshold_pct": 5.0,
        "percentage_used": 10.0,
        "power_on_hours": 13066,
        "unsafe_shutdowns": 6,
        "media_errors": 0,
        "num_err_log_entries": 18,
    },
    # SAS: grown defects and uncorrected errors
    "pysmart_testdata/singletests/sas_hdd_0_issue_51/smartctl_-d_scsi_--all__dev_sdc.txt": {
        "model": "HUH721212AL4204",
        "capacity_bytes": 12_000_138_625_024,
        "smart_passed": True,
        "temperature_c": 32.0,
        "reallocated_sectors": 0,
        "reported_uncorrect": 0,
    },
    # smartctl --json, NVMe
    "scrutiny_testdata/models/smart-nvme.json": {
        "name": "/dev/testfoobarpass",
        "kind": DiskKind.NVME,
        "model": "INTEL SSDPEKNW010T8",
        "serial_hash": "h16",
        "smart_passed": True,
        "power_on_hours": 2401,
        "temperature_c": 36.0,
        "available_spare_threshold_pct": 10.0,
        "unsafe_shutdowns": 43,
        "media_errors": 0,
    },
    # smartctl --json, ATA
    "scrutiny_testdata/models/smart-ata-failed-scrutiny.json": {
        "kind": DiskKind.SSD,
        "model": "Samsung SSD 840 Series",
        "capacity_bytes": 500_107_862_016,
        "smart_passed": True,
        "power_on_hours": 19497,
        "temperature_c": 33.0,
        "reallocated_sectors": 0,
        "udma_crc_errors": 108,
    },
}


@pytest.mark.parametrize("file", sorted(HAND_CHECKED))
def test_hand_checked_values(shared_data: Path, file: str) -> None:
    row = next(r for r in ROWS if r["file"] == file)
    disk = _parse(shared_data, row)
    for field, expected in HAND_CHECKED[file].items():
        assert getattr(disk, field) == expected, field
