"""The simulator's SSD firmware defect: a failure signature the shipped model never saw, and nothing else changed."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fleetpulse.agents.simulator import FirmwareFault, FleetMix, FleetSimulator, stable_digest
from fleetpulse.compat import UTC
from fleetpulse.contract import Component

START = datetime(2025, 1, 6, tzinfo=UTC)
PCS = FleetMix(laptop=0.9, desktop=0.1, phone=0.0, tablet=0.0)


def test_without_the_fault_the_fleet_is_unchanged() -> None:
    plain = FleetSimulator(120, 3, START, 10)
    assert stable_digest(plain.reports()) == stable_digest(
        FleetSimulator(120, 3, START, 10, firmware_fault=None).reports()
    )


def test_firmware_failures_show_rising_media_errors_only() -> None:
    fault = FirmwareFault(afr=0.9, model_share=0.6)
    sim = FleetSimulator(300, 5, START, 120, mix=PCS, firmware_fault=fault)
    firmware = [g for g in sim.ground_truth() if g.cause == "nvme_firmware"]
    assert len(firmware) >= 10
    index = {device_id: i for i, device_id in enumerate(sim.device_ids())}
    for failure in firmware[:5]:
        assert failure.component is Component.DISK
        assert failure.signal_from is not None
        reports = [
            sim.report_at(index[failure.device_id], failure.fails_at - timedelta(days=days)) for days in (60, 10, 1)
        ]
        disks = [next(d for d in r.disks if d.serial_hash == failure.component_id) for r in reports if r is not None]
        counts = [d.media_errors or 0 for d in disks]
        assert counts == sorted(counts)
        assert counts[-1] > counts[0]
        assert all(d.critical_warning == 0 and d.smart_passed and d.available_spare_pct == 100.0 for d in disks)
    models = {inv.model for inv in sim.inventory() if inv.device_id in {f.device_id for f in firmware}}
    assert models == {fault.laptop_model}


@pytest.mark.parametrize(
    "bad", [{"afr": 0.0}, {"spurious_share": 1.5}, {"model_share": -0.1}, {"lead_days": (30.0, 10.0)}]
)
def test_invalid_fault_parameters_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        FirmwareFault(**bad)  # type: ignore[arg-type]
