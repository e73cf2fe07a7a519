"""Throughput of the ticket side: alerts -> tickets, score history, and the queue page, on SQLite or PostgreSQL.

Prints alerts/s through ``TicketService.apply_alert`` (one durable transaction each, with the dedup
check, storm query, audit event and outbox rows), and beside it the baseline: a bare INSERT of one
row per transaction into the same database, the floor of any durable per-alert write. Then score
history rows/s in 500-record batches (what the consumer does per poll), and the latency of the API
queue and the HTML page with the resulting number of open tickets.

    python benchmarks/ticket_store.py --alerts 5000
    python benchmarks/ticket_store.py --url postgresql+psycopg://fleetpulse@127.0.0.1:15433/fleetpulse
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import text

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.auth import hash_secret
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.store.scratch import scratch_schema
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from fleetpulse.contract.v1 import Alert, AlertState, Component, DeviceInventory, DeviceKind, Factor, RiskScore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def alert(n: int) -> Alert:
    return Alert(
        alert_id=f"pc-{n:06d}:disk::1:x",
        device_id=f"pc-{n:06d}",
        component=Component.DISK,
        state=AlertState.RAISED,
        risk=0.5 + (n % 50) / 100,
        days_to_failure=30.0,
        model_name="m",
        model_version="1",
        factors=[Factor(feature=f"f{n % 7}", contribution=0.3, text="signal")],
        at=T0 + timedelta(seconds=n * 97),  # spread out: no storm
        report_seq=n,
    )


@contextmanager
def own_schema(url: str | None) -> Iterator[str | None]:
    """On PostgreSQL, work in a fresh schema that is dropped afterwards (never touch existing tables)."""
    if url is None or not url.startswith("postgresql"):
        yield url
        return
    with scratch_schema(url, prefix="bench") as scratch_url:
        yield scratch_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=3000)
    parser.add_argument("--scores", type=int, default=50_000)
    parser.add_argument("--url", default=None, help="store URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, own_schema(args.url) as url_or_none:
        url = url_or_none or f"sqlite:///{tmp}/bench.db"
        settings = AlertSettings.model_validate(
            {
                "store_url": url,
                "api": {"users": [{"name": "b", "role": "admin", "password_hash": hash_secret("b")}]},
                "connectors": [{"kind": "webhook", "name": "hook", "url": "http://127.0.0.1:9/"}],
            }
        )
        store = TicketStore.open(url)
        with store.session() as session:
            session.execute(text("CREATE TABLE IF NOT EXISTS bench_baseline (id INTEGER PRIMARY KEY, v TEXT)"))
            session.execute(text("DELETE FROM bench_baseline"))
        svc = TicketService(store, settings)
        svc.apply_inventories(
            [
                DeviceInventory(
                    device_id=f"pc-{n:06d}",
                    kind=DeviceKind.LAPTOP,
                    model=f"model-{n % 5}",
                    site=f"site-{n % 9}",
                    updated_at=T0,
                )
                for n in range(args.alerts)
            ]
        )

        t0 = time.perf_counter()
        for n in range(args.alerts):
            with store.session() as session:
                session.execute(text("INSERT INTO bench_baseline (id, v) VALUES (:i, :v)"), {"i": n, "v": "x" * 200})
        base_s = time.perf_counter() - t0
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        for n in range(args.alerts):
            svc.apply_alert(alert(n), now)
        apply_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        dupes = sum(svc.apply_alert(alert(n), now) == "duplicate" for n in range(args.alerts))
        dup_s = time.perf_counter() - t0
        print(f"store: {store.engine.url.render_as_string(hide_password=True)}")
        print(
            f"apply_alert: {args.alerts / apply_s:,.0f} alerts/s (new tickets); replays {dupes / dup_s:,.0f} alerts/s; "
            f"baseline bare INSERT per transaction {args.alerts / base_s:,.0f} rows/s "
            f"(ratio {apply_s / base_s:.1f}x the floor)"
        )

        scores = [
            RiskScore(
                device_id=f"pc-{i % args.alerts:06d}",
                component=Component.BATTERY,
                risk=0.2,
                model_name="m",
                model_version="1",
                report_seq=i,
                collected_at=T0 + timedelta(hours=i // args.alerts),
                scored_at=T0,
            )
            for i in range(args.scores)
        ]
        t0 = time.perf_counter()
        kept = sum(svc.record_scores(scores[i : i + 500]) for i in range(0, len(scores), 500))
        hist_s = time.perf_counter() - t0
        print(f"record_scores: {len(scores) / hist_s:,.0f} scores/s in batches of 500 ({kept:,} history rows kept)")

        from fastapi.testclient import TestClient

        client = TestClient(create_app(settings, store))
        for label, path in (("API queue (100)", "/api/v1/tickets?limit=100"), ("HTML page (500 rows)", "/")):
            timings = []
            for _ in range(15):
                t0 = time.perf_counter()
                response = client.get(path, auth=("b", "b"))
                timings.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
            print(f"{label} with {args.alerts:,} open tickets: median {statistics.median(timings):.0f} ms")
        store.close()


if __name__ == "__main__":
    main()
