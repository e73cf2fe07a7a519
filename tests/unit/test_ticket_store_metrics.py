"""The ticket consumer's gauges (outbox, agent coverage): read from the store at scrape time, served over HTTP."""

from __future__ import annotations

import socket
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import start_http_server

from fleetpulse.alerts.metrics import store_registry
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.models import OutboxRow
from fleetpulse.alerts.store.repository import NEEDS_ATTENTION, TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from tests.alerts_support import make_inventory

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _store(tmp_path: Path) -> TicketStore:
    store = TicketStore.open(f"sqlite:///{tmp_path / 'tickets.db'}")
    with store.session() as session:
        for n, (target, age_h) in enumerate([("webhook", 5), ("webhook", 1), ("servicenow", 2), ("webhook", 9)]):
            queued = NOW - timedelta(hours=age_h)
            session.add(
                OutboxRow(
                    target=target,
                    dedup_key=f"k{n}",
                    subject="ticket",
                    payload={"n": n},
                    created_at=queued,
                    attempts=0,
                    next_attempt_at=queued,
                )
            )
    rows = {r.dedup_key: r for r in store.outbox()}
    store.mark_delivered(rows["k3"].id, NOW, None)  # delivered rows do not count, however old
    store.mark_failed(rows["k2"].id, NEEDS_ATTENTION + "401 from servicenow", NOW + timedelta(hours=1))
    return store


def test_backlog_per_target_counts_pending_attention_and_oldest_age(tmp_path: Path) -> None:
    store = _store(tmp_path)
    registry = store_registry(store, timedelta(hours=48), clock=lambda: NOW)

    def value(name: str, target: str) -> float | None:
        sample: float | None = registry.get_sample_value(name, {"target": target})
        return sample

    assert value("fleetpulse_tickets_outbox_pending", "webhook") == 2
    assert value("fleetpulse_tickets_outbox_pending", "servicenow") == 1
    assert value("fleetpulse_tickets_outbox_needs_attention", "webhook") == 0
    assert value("fleetpulse_tickets_outbox_needs_attention", "servicenow") == 1
    assert value("fleetpulse_tickets_outbox_oldest_pending_seconds", "webhook") == 5 * 3600
    assert value("fleetpulse_tickets_outbox_oldest_pending_seconds", "servicenow") == 2 * 3600
    store.close()


def test_gauges_are_served_over_http(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, thread = start_http_server(port, "127.0.0.1", registry=store_registry(store, timedelta(hours=48)))
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        thread.join(5)
        store.close()
    assert 'fleetpulse_tickets_outbox_pending{target="webhook"} 2.0' in body


def test_coverage_counts_devices_whose_daily_inventory_stopped_per_site(tmp_path: Path) -> None:
    store = TicketStore.open(f"sqlite:///{tmp_path / 'tickets.db'}")
    service = TicketService(store, AlertSettings())
    last_inventory_h = {"pc-1": 1, "pc-2": 30, "pc-3": 50, "pc-4": 200, "pc-5": 2}
    for device, hours in last_inventory_h.items():
        site = "town-hall" if device in ("pc-1", "pc-2", "pc-3") else "library"
        inventory = make_inventory(device, site=site, updated_at=NOW - timedelta(hours=hours))
        assert service.apply_inventory(inventory)
    registry = store_registry(store, timedelta(hours=48), clock=lambda: NOW)

    def value(name: str, site: str) -> float | None:
        sample: float | None = registry.get_sample_value(name, {"site": site})
        return sample

    assert value("fleetpulse_tickets_devices", "town-hall") == 3
    assert value("fleetpulse_tickets_devices_silent", "town-hall") == 1  # pc-3; pc-2 missed one inventory only
    assert value("fleetpulse_tickets_devices", "library") == 2
    assert value("fleetpulse_tickets_devices_silent", "library") == 1
    silent = store.silent_devices(NOW - timedelta(hours=48))
    assert [(d.device_id, d.site) for d in silent] == [("pc-4", "library"), ("pc-3", "town-hall")]
    store.close()
