"""A simulated year of a fleet unlike Backblaze's: the worker logs features, tickets close with the
simulator's ground truth, ``fleetpulse train --fleet`` trains a challenger, the gate promotes it, and the
worker serves it without a restart.

The fleet: laptops and desktops whose "ThinkPad L14 Gen 2" SSDs have a firmware defect
(:class:`~fleetpulse.agents.simulator.FirmwareFault`): a share of them logs a few media errors that
never grow, and a share dies after weeks of rising media errors. The shipped champion reads any
media error as the drive declaring itself failing, so at a 1 % false-alarm rate its alarms are a
lottery among those drives; the fleet's outcomes teach the challenger that rising counts fail.

Every step runs the production code: the stream processor with the shipped champion (disk scorer
only: the other components are not what this year is about, and each one would double the run
time), the feature log into the ticket store, tickets opened by the alert policy and closed by a
technician who finds what the ground truth says (confirmed fault on the failure day, no fault
found two weeks after opening), failures no ticket predicted recorded as failure reports, then
the CLI. The numbers are written to ``.local/reports/fleet-year.md``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetpulse.agents.signing import enrolment_record, signed_report
from fleetpulse.agents.simulator import FirmwareFault, FleetMix, FleetSimulator
from fleetpulse.alerts.fleetlog import FleetLog
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.audit import AuditActor, AuditContext
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.cli import app as cli_app
from fleetpulse.compat import UTC
from fleetpulse.contract import Component, Topics, encode
from fleetpulse.contract.v1 import TicketState
from fleetpulse.models.fleet import FleetDiskScorer
from fleetpulse.models.index import read_registry
from fleetpulse.models.registry import ScorerSet, load_scorers
from fleetpulse.models.settings import SHIPPED_REGISTRY, ModelSettings
from fleetpulse.serving import serving_policy
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord
from fleetpulse.streams.settings import StreamSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]

START = datetime(2025, 1, 6, tzinfo=UTC)
DAYS = 365
DEVICES = 800
SEED = 18
FAULT = FirmwareFault(afr=0.5, model_share=0.4)
INTERVAL = timedelta(days=2)
"""One report every other day: a year of the fleet in minutes; the feature log gets a row per report."""
REPORT = Path(".local/reports/fleet-year.md")
NO_FAULT_AFTER = timedelta(days=14)
"""A technician who finds nothing closes the ticket as no_fault_found this long after it opened."""
CONFIRM_WITHIN = timedelta(days=60)
"""A ticket whose disk fails this soon after opening stays open and is closed as confirmed_fault on that day."""
MANAGER = AuditContext(AuditActor.local("fleet-manager", "fleet_manager"), "sim", "simulator")


@dataclass
class Year:
    store_url: str
    disk_rows: int
    tickets_confirmed: int
    tickets_no_fault: int
    missed_failures: int
    failures: int
    firmware_failures: int


def _settings(store_url: str) -> AlertSettings:
    return AlertSettings.model_validate({"store_url": store_url})


def run_year(store_url: str, devices: int = DEVICES, days: int = DAYS) -> Year:
    """The year through the stream processor and the ticket store, day by day (one batch per day)."""
    sim = FleetSimulator(
        devices,
        SEED,
        START,
        days,
        report_interval=INTERVAL,
        mix=FleetMix(laptop=0.85, desktop=0.15, phone=0.0, tablet=0.0),
        firmware_fault=FAULT,
    )
    truth = {(g.device_id, g.component_id): g for g in sim.ground_truth() if g.component is Component.DISK}
    store = TicketStore.open(store_url)
    service = TicketService(store, _settings(store_url))
    log = FleetLog(store)
    full = load_scorers(ModelSettings())
    scorers = ScorerSet(champions=[s for s in full.champions if s.component is Component.DISK])
    topics = Topics(prefix="year.")
    processor = Processor(StreamSettings(), topics, scorers, serving_policy(ServerSettings(), scorers))
    table: dict[str, DeviceRecord] = {}
    inventory = sim.inventory()
    service.apply_inventories(inventory, not_after=START + timedelta(days=days + 1))
    first = [RawRecord(topics.inventory, 0, i, d.device_id.encode(), encode(d)) for i, d in enumerate(inventory)]
    table.update(processor.process_batch(first, lambda _i, d: table.get(d), START).records)
    ticketed: set[tuple[str, str]] = set()
    counts = {"confirmed": 0, "no_fault": 0, "rows": 0}

    def close_due(today: datetime) -> None:
        for ticket in store.open_tickets():
            failure = truth.get((ticket.device_id, ticket.component_id))
            if failure is not None and failure.fails_at <= ticket.opened_at + CONFIRM_WITHIN:
                if failure.fails_at <= today:
                    for state in (TicketState.APPROVED, TicketState.ORDERED):
                        service.transition([ticket.ticket_id], state, "technician", failure.fails_at)
                    service.transition(
                        [ticket.ticket_id], TicketState.DONE, "technician", failure.fails_at, "", "confirmed_fault"
                    )
                    counts["confirmed"] += 1
            elif ticket.opened_at + NO_FAULT_AFTER <= today:
                closed_at = ticket.opened_at + NO_FAULT_AFTER
                service.transition(
                    [ticket.ticket_id], TicketState.DISMISSED, "technician", closed_at, "", "no_fault_found"
                )
                counts["no_fault"] += 1

    def run_day(batch: list[RawRecord], now: datetime) -> None:
        result = processor.process_batch(batch, lambda _i, d: table.get(d), now)
        table.update(result.records)
        counts["rows"] += log.record_features(result.features)
        for alert in result.alerts:
            service.apply_alert(alert, alert.at)
            ticketed.add((alert.device_id, alert.component_id))
        close_due(now)

    batch: list[RawRecord] = []
    day: date | None = None
    enrolled: set[str] = set()
    for offset, report in enumerate(sim.reports()):
        if day is not None and report.collected_at.date() != day:
            run_day(batch, report.collected_at)
            batch = []
        day = report.collected_at.date()
        key = sim.device_key(report.device_id)
        if report.device_id not in enrolled:  # as the agent does before its first report
            enrolment = enrolment_record(report.device_id, key, report.collected_at)
            batch.append(RawRecord(topics.health, 0, offset, enrolment.key, enrolment.value, enrolment.headers))
            enrolled.add(report.device_id)
        signed = signed_report(report, key)
        batch.append(RawRecord(topics.health, 0, offset, signed.key, signed.value, signed.headers))
    end = START + timedelta(days=days)
    run_day(batch, end)
    missed = 0
    for (device_id, component_id), failure in truth.items():
        if (device_id, component_id) not in ticketed:
            log.record_failure(
                device_id, Component.DISK, component_id, failure.fails_at.date(), "failed", "", MANAGER, end
            )
            missed += 1
    store.close()
    return Year(
        store_url,
        counts["rows"],
        counts["confirmed"],
        counts["no_fault"],
        missed,
        len(truth),
        sum(1 for g in truth.values() if g.cause.endswith("firmware")),
    )


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Year:
    return run_year(f"sqlite:///{tmp_path_factory.mktemp('year')}/tickets.db")


def cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args), env=env, catch_exceptions=False)


def test_the_promoted_fleet_challenger_beats_the_shipped_champion_and_is_served_without_restart(
    year: Year, tmp_path: Path
) -> None:
    registry = tmp_path / "models"
    env = {"FLEETPULSE_ALERTS__STORE_URL": year.store_url, "FLEETPULSE_MODELS__REGISTRY_DIR": str(SHIPPED_REGISTRY)}
    trained = cli(env, "train", "--fleet", "--out", str(registry), "--report", str(REPORT))
    assert trained.exit_code == 0, trained.output
    challenger_id = read_registry(registry).challengers["disk"][0]
    meta = json.loads((registry / challenger_id / "metadata.json").read_text())
    evaluation = meta["evaluation"]
    point = evaluation["comparison"]["cap 1%"]
    assert evaluation["wins"], evaluation
    assert point["challenger_detection"] > point["champion_detection"]

    # the worker, started on the registry before the promotion, serves the shipped champion
    served = {**env, "FLEETPULSE_MODELS__REGISTRY_DIR": str(registry)}
    settings = ServerSettings.model_validate(
        {"models": {"registry_dir": str(registry)}, "streams": {"tsdb": {"kind": "none"}}}
    )
    from fleetpulse.streams.app import create_app
    from fleetpulse.streams.reload import RegistryWatch

    worker = create_app(settings).fleetpulse  # type: ignore[attr-defined]
    watch = RegistryWatch(registry)
    before = worker.processor.scorers.champions[0]
    assert not isinstance(before, FleetDiskScorer)

    promoted = cli(served, "models", "promote", challenger_id)
    assert promoted.exit_code == 0, promoted.output
    assert asyncio.run(worker.reload_models(settings, watch)) is True
    after = worker.processor.scorers.champions[0]
    assert isinstance(after, FleetDiskScorer)
    assert after.version == meta["version"]
    exposition = worker.metrics.exposition().decode()
    assert f'model_version="{meta["version"]}"' in exposition
    assert f'model_version="{before.version}"' in exposition  # the old champion, now a challenger

    store = TicketStore.open(year.store_url)
    try:
        (record,) = store.audit.records(kind="model.promoted")
    finally:
        store.close()
    assert record.payload["artifact"] == challenger_id
    REPORT.write_text(
        REPORT.read_text()
        + f"\nSimulated year: {DEVICES} PCs (seed {SEED}), {year.failures} disk failures ({year.firmware_failures} "
        f"firmware), {year.disk_rows:,} disk feature-log rows, {year.tickets_confirmed} tickets confirmed, "
        f"{year.tickets_no_fault} closed no fault found, {year.missed_failures} failures recorded without a ticket.\n"
    )
