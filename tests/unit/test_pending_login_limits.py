"""The bounds on single sign-on logins in progress hold under concurrent starts.

Anyone can start a login. A script firing many starts at the same moment, from several threads
and against several API replicas (each with its own engine on one database), must not get more
rows than ``max_pending_logins_per_address`` for its address or ``max_pending_logins`` in all.
Runs on SQLite and, with integration tests, on real PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import func, select

from fleetpulse.alerts.store.models import PendingLogin
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.store.sessions import StoredPendingLogin, WebSessions
from tests.alerts_support import NOW, store_url

__all__ = ["store_url"]  # fixture
STARTS = 40
REPLICAS = 4
EXPIRES = NOW + timedelta(minutes=10)


@contextmanager
def replicas(url: str) -> Iterator[list[WebSessions]]:
    stores = [TicketStore.open(url) for _ in range(REPLICAS)]
    try:
        yield [WebSessions(store) for store in stores]
    finally:
        for store in stores:
            store.close()


def at_once(start: Callable[[int], bool]) -> list[bool]:
    """``start(i)`` for every i on its own thread, all released together."""
    gate = threading.Barrier(STARTS)
    results: list[bool | BaseException] = [False] * STARTS

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = start(i)
        except BaseException as exc:  # reported below, with the others
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(STARTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return [r is True for r in results]


def rows_by_source(logins: WebSessions) -> dict[str | None, int]:
    with logins.store.session() as session:
        rows = session.execute(select(PendingLogin.source_key, func.count()).group_by(PendingLogin.source_key))
        return {key: count for key, count in rows}


def test_attack_concurrent_starts_from_one_address_keep_at_most_its_cap(store_url: str) -> None:
    """40 starts at once from one address on four replicas, cap 10: every start is kept at first (each drops
    the address's oldest), and the table holds 10 of them, not 10 plus those in flight."""
    per_source = 10
    with replicas(store_url) as logins:
        pending = StoredPendingLogin("state", "nonce", "verifier", "/")
        started = at_once(
            lambda i: logins[i % REPLICAS].start_login(
                f"login-{i}", pending, NOW, EXPIRES, "script", per_source, total=10_000
            )
        )
        assert all(started)
        assert rows_by_source(logins[0]) == {"script": per_source}


def test_attack_concurrent_starts_from_many_addresses_stop_at_the_global_cap(store_url: str) -> None:
    """40 starts at once from 40 addresses on four replicas, 10 in all: 10 are kept and 30 refused."""
    total = 10
    with replicas(store_url) as logins:
        pending = StoredPendingLogin("state", "nonce", "verifier", "/")
        started = at_once(
            lambda i: logins[i % REPLICAS].start_login(
                f"login-{i}", pending, NOW, EXPIRES, f"source-{i}", 10, total=total
            )
        )
        assert started.count(True) == total
        assert sum(rows_by_source(logins[0]).values()) == total
