"""Speed of ``fleetpulse audit verify`` next to a plain paged read of the same rows.

Fills a SQLite ticket store (or a scratch schema of ``--postgres URL``) with N audit records
in one transaction per 10,000, then times, side by side: reading every record in the same
key-range pages without checking anything (the floor: what the database and driver cost),
and the full verify walk. Prints both rates and their ratio, for N and 2N records: verify is
linear when the 2N time is about twice the N time.

    python benchmarks/audit_verify.py --records 100000
    python benchmarks/audit_verify.py --records 100000 --postgres postgresql+psycopg://fleetpulse@127.0.0.1:5432/fleetpulse
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack

from fleetpulse.alerts.store.audit import AuditActor, AuditContext, AuditKind, stage
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.store.scratch import scratch_schema

ANNA = AuditActor("https://idp.example.org/realms/city", "5f1c-anna", "Anna Berg", "fleet_manager")


def fill(store: TicketStore, count: int) -> None:
    context = AuditContext(ANNA, "0f8e6a3c-request", "192.0.2.10")
    payload = {"filter": {"site": "Town Hall", "states": ["open"]}, "rows": 120}
    done = 0
    while done < count:
        batch = min(10_000, count - done)
        with store.session() as session:
            for _ in range(batch):
                stage(session, AuditKind.CSV_EXPORT, context, payload)
        done += batch


def measure(store: TicketStore) -> tuple[float, float]:
    started = time.perf_counter()
    with store.audit._snapshot() as conn:
        read = sum(1 for _ in store.audit._pages(conn, 5000))
    floor = time.perf_counter() - started
    started = time.perf_counter()
    result = store.audit.verify()
    walk = time.perf_counter() - started
    if not result.ok or result.checked != read:
        raise SystemExit(f"verify disagrees with the read: {result}")
    return floor, walk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--postgres", help="PostgreSQL URL (a scratch schema is used and dropped)")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(scratch_schema(args.postgres, prefix="bench"))
        else:
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/tickets.db"
        store = TicketStore.open(url)
        stack.callback(store.close)
        print(f"{'records':>10} {'read floor /s':>14} {'verify /s':>12} {'verify/floor':>13}")
        filled = 0
        for target in (args.records, 2 * args.records):
            fill(store, target - filled)
            filled = target
            floor, walk = measure(store)
            print(f"{target:>10} {target / floor:>14,.0f} {target / walk:>12,.0f} {walk / floor:>13.2f}")


if __name__ == "__main__":
    main()
