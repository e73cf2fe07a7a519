"""Factories and store fixtures shared by the alerts/ tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.models import Device, TicketRow
from fleetpulse.alerts.store.repository import TicketStore, open_key
from fleetpulse.alerts.store.scratch import scratch_schema
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from fleetpulse.contract.v1 import Alert, AlertState, Component, DeviceInventory, DeviceKind, Factor

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def make_alert(device_id: str = "pc-0001", i: int = 1, **overrides: object) -> Alert:
    fields: dict[str, object] = {
        "alert_id": f"{device_id}:disk:sn1:{i}:raised",
        "device_id": device_id,
        "component": Component.DISK,
        "component_id": "sn1",
        "state": AlertState.RAISED,
        "risk": 0.8,
        "days_to_failure": 10.0,
        "days_to_failure_low": 4.0,
        "days_to_failure_high": 25.0,
        "model_name": "disk-gbm",
        "model_version": "1.2.0",
        "factors": [
            Factor(feature="reallocated_sectors", value=56, contribution=0.31, text="56 reallocated sectors (rising)"),
            Factor(feature="power_on_hours", value=31000, contribution=0.05, text="31,000 power-on hours"),
        ],
        "at": T0 + timedelta(minutes=i),
        "report_seq": i,
    }
    fields.update(overrides)
    return Alert.model_validate(fields)


def make_inventory(device_id: str = "pc-0001", **overrides: object) -> DeviceInventory:
    fields: dict[str, object] = {
        "device_id": device_id,
        "kind": DeviceKind.LAPTOP,
        "vendor": "Lenovo",
        "model": "ThinkPad T14 Gen 2",
        "purchase_date": date(2022, 3, 1),
        "warranty_end": date(2025, 3, 1),
        "site": "Town Hall",
        "department": "Finance",
        "updated_at": T0,
    }
    fields.update(overrides)
    return DeviceInventory.model_validate(fields)


def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A fresh schema per test, so tests never see each other's tickets; dropped afterwards."""
    with scratch_schema(postgres_url, prefix="t") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store')}/tickets.db"
    else:
        yield from pg_schema_url(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[TicketStore]:
    opened = TicketStore.open(store_url)
    yield opened
    opened.close()


def service(store: TicketStore, **settings: object) -> TicketService:
    return TicketService(store, AlertSettings.model_validate(settings))


def bulk_tickets(store: TicketStore, count: int, sites: Sequence[str] = ("Town Hall", "Library")) -> None:
    """``count`` open tickets, each on its own device at one of ``sites`` in turn, the first made by the
    ticket service and the rest copies of it in a few bulk INSERTs (seconds for 50,000, where the service
    takes minutes): for tests of large stores. Risks and opening times vary, and every seventh device's
    model starts like a spreadsheet formula."""
    svc = service(store)
    svc.apply_inventory(make_inventory("bulk-000000", site=sites[0]))
    svc.apply_alert(make_alert("bulk-000000"), NOW)
    with store.session() as session:
        device = session.get_one(Device, "bulk-000000")
        ticket = session.scalars(select(TicketRow).where(TicketRow.device_id == "bulk-000000")).one()
        device_row = {c.key: getattr(device, c.key) for c in Device.__table__.columns}
        ticket_row = {c.key: getattr(ticket, c.key) for c in TicketRow.__table__.columns if c.key != "id"}
    devices, tickets = [], []
    for i in range(1, count):
        device_id = f"bulk-{i:06d}"
        model = "=cmd|' /C calc'!A0" if i % 7 == 0 else f'ThinkPad T{i % 20}, "Gen" {i % 3}'
        devices.append(device_row | {"device_id": device_id, "site": sites[i % len(sites)], "model": model})
        tickets.append(
            ticket_row
            | {
                "device_id": device_id,
                "open_key": open_key(device_id, ticket_row["component"], ticket_row["component_id"]),
                "risk": round(0.5 + (i * 7919 % 500) / 1000, 3),
                "opened_at": ticket_row["opened_at"] + timedelta(seconds=i % 1000),
            }
        )
    with store.session() as session:
        for start in range(0, len(tickets), 5000):
            session.execute(insert(Device), devices[start : start + 5000])
            session.execute(insert(TicketRow), tickets[start : start + 5000])
