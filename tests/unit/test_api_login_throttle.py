"""Login throttling attacks against the app: guessing one login, spraying many, across two replicas.

Runs on SQLite and, with integration tests, on real PostgreSQL (two app instances, each with
its own engine, on one database: the deployment's two replicas).
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from pydantic import IPvAnyNetwork, SecretStr
from sqlalchemy import select

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.auth import AuthFailure, LoginThrottle, client_address
from fleetpulse.alerts.api.sessions import SessionCookies
from fleetpulse.alerts.settings import AlertSettings, ApiLimits, SessionSettings
from fleetpulse.alerts.store import make_engine, upgrade
from fleetpulse.alerts.store.logins import LoginRecords
from fleetpulse.alerts.store.models import LoginFailure
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.compat import UTC
from tests.alerts_support import store_url
from tests.unit.test_tickets_api import PASSWORD, TOKEN, api_settings

__all__ = ["store_url"]  # fixture

ATTACKER = "10.0.0.66"
KEY = "session-key-of-the-replicas-0123456789"
HOUR = timedelta(hours=1)
OWNER_DESK = "10.0.0.7"


def seconds(failures: int) -> timedelta:
    return timedelta(seconds=failures)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def throttled_settings(store_url: str, key: str = KEY, **limits: object) -> AlertSettings:
    """The test API with these limits and ``key`` as the session key (shared by the replicas, as deployed)."""
    data = api_settings(store_url).model_dump()
    data["api"]["limits"] |= limits
    data["api"]["session"]["secret_key"] = key
    return AlertSettings.model_validate(data)


@contextmanager
def replica(settings: AlertSettings, clock: FakeClock) -> Iterator[dict[str, TestClient]]:
    """One API instance with its own store engine, and a client per source address."""
    store = TicketStore.open(settings.store_url)
    app = create_app(settings, store, clock=clock)
    try:
        with ExitStack() as stack:
            yield {
                address: stack.enter_context(TestClient(app, client=(address, 40000)))
                for address in (ATTACKER, OWNER_DESK)
            }
    finally:
        store.close()


def tickets(client: TestClient, user: str, password: str) -> int:
    return int(client.get("/api/v1/tickets", auth=(user, password)).status_code)


def test_guessing_backs_off_per_login_and_address_without_locking_out_the_owner(store_url: str) -> None:
    clock = FakeClock()
    settings = throttled_settings(store_url, free_failures_per_login=5, backoff_base="PT1S", backoff_max="PT60S")
    with replica(settings, clock) as clients:
        attacker, owner = clients[ATTACKER], clients[OWNER_DESK]
        assert attacker.get("/api/v1/tickets").status_code == 401  # no credentials: not a failed login
        codes = [tickets(attacker, "fm", f"guess{i}") for i in range(20)]
        assert codes == [401] * 6 + [429] * 14  # 5 free failures, the 6th blocks for 1 s
        assert tickets(attacker, "fm", PASSWORD) == 429  # a throttled try is not even checked: no oracle
        assert tickets(owner, "fm", PASSWORD) == 200  # the owner at their own desk is not locked out
        assert tickets(attacker, "it", PASSWORD) == 200  # other logins from the same address are unaffected

        waits = []
        for _ in range(8):  # each failure past the free ones doubles the wait, up to the cap
            blocked = attacker.get("/api/v1/tickets", auth=("fm", "again"))
            assert blocked.status_code == 429
            waits.append(int(blocked.headers["retry-after"]))
            clock.advance(waits[-1])
            assert tickets(attacker, "fm", "again") == 401
        assert waits == [1, 2, 4, 8, 16, 32, 60, 60]

        clock.advance(60)
        assert tickets(attacker, "fm", PASSWORD) == 200  # the owner at the attacker's address after the wait
        assert tickets(attacker, "fm", "typo") == 401  # and the success cleared the count there
        assert tickets(attacker, "fm", PASSWORD) == 200


def test_spraying_many_logins_from_one_address_is_slowed_down(store_url: str) -> None:
    clock = FakeClock()
    settings = throttled_settings(store_url, free_failures_per_address=20, backoff_base="PT30S", backoff_max="PT900S")
    with replica(settings, clock) as clients:
        attacker, owner = clients[ATTACKER], clients[OWNER_DESK]
        names = ["fm", "it", "root"] + [f"user{i:02d}" for i in range(57)]  # 60 names, one guess each
        codes = [tickets(attacker, name, "Winter2026!") for name in names]
        assert codes == [401] * 21 + [429] * 39
        assert tickets(attacker, "root", PASSWORD) == 429  # the address is blocked, whatever the name
        assert attacker.get("/api/v1/tickets", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
        assert tickets(owner, "root", PASSWORD) == 200  # everyone elsewhere logs in as usual
        clock.advance(30)
        assert tickets(attacker, "root", PASSWORD) == 200


def test_token_guessing_counts_against_the_address(store_url: str) -> None:
    clock = FakeClock()
    settings = throttled_settings(store_url, free_failures_per_address=3)
    with replica(settings, clock) as clients:
        attacker = clients[ATTACKER]
        codes = [
            attacker.get("/api/v1/tickets", headers={"Authorization": f"Bearer guess-{i}"}).status_code
            for i in range(6)
        ]
        assert codes == [401] * 4 + [429] * 2


def test_two_replicas_share_the_throttle(store_url: str) -> None:
    """Guesses spread over two API instances on one database are counted together."""
    clock = FakeClock()
    settings = throttled_settings(store_url, free_failures_per_login=4, backoff_base="PT10S")
    with replica(settings, clock) as first, replica(settings, clock) as second:
        codes = [tickets((first, second)[i % 2][ATTACKER], "fm", f"guess{i}") for i in range(5)]
        assert codes == [401] * 5
        assert tickets(first[ATTACKER], "fm", "guess") == 429
        assert tickets(second[ATTACKER], "fm", PASSWORD) == 429
        assert tickets(second[OWNER_DESK], "fm", PASSWORD) == 200


def test_concurrent_failures_on_two_engines_are_all_counted(store_url: str) -> None:
    """The failure upsert is atomic: 8 threads on two engines, 200 failures, a count of exactly 200."""
    stores = [TicketStore.open(store_url), TicketStore.open(store_url)]
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    try:

        def fail_25(records: LoginRecords) -> None:
            for _ in range(25):
                records.record_failure("k" * 64, now, timedelta(hours=1), lambda _: timedelta(0))

        threads = [threading.Thread(target=fail_25, args=(LoginRecords(stores[i % 2]),)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert LoginRecords(stores[0]).failures(["k" * 64])["k" * 64][0] == 200
    finally:
        for store in stores:
            store.close()


def test_failure_counts_are_forgotten_and_pruned(store_url: str) -> None:
    store = TicketStore.open(store_url)
    records = LoginRecords(store)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    try:
        for second in (0, 10, 20):
            assert records.record_failure("a" * 64, now + timedelta(seconds=second), HOUR, seconds).allowed
        assert records.failures(["a" * 64])["a" * 64] == (3, now + timedelta(seconds=23))
        assert not records.record_failure("a" * 64, now + timedelta(seconds=21), HOUR, seconds).allowed  # blocked
        assert records.failures(["a" * 64])["a" * 64][0] == 3  # a refused attempt is not counted
        later = now + timedelta(hours=2)
        assert records.record_failure("a" * 64, later, HOUR, seconds).failures == 1  # forgotten after an hour
        assert records.prune(later + timedelta(hours=2), HOUR) == 1
        assert records.failures(["a" * 64]) == {}
    finally:
        store.close()


def test_a_burst_of_concurrent_guesses_is_admitted_one_at_a_time(store_url: str) -> None:
    """20 guesses at once on two replicas: only the free ones and one more reach the password check."""
    stores = [TicketStore.open(store_url), TicketStore.open(store_url)]
    limits = ApiLimits(free_failures_per_login=3, backoff_base=timedelta(seconds=30))
    mac = SessionCookies(SessionSettings(secret_key=SecretStr(KEY))).mac
    throttles = [LoginThrottle(LoginRecords(store), limits, mac) for store in stores]
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    admitted: list[int] = []
    try:

        def guess(i: int) -> None:
            try:
                throttles[i % 2].begin("fm", ATTACKER, now)
            except AuthFailure as refused:
                assert refused.status_code == 429
            else:
                admitted.append(i)  # the password would be checked now, and be wrong

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(admitted) == 4
    finally:
        for store in stores:
            store.close()


def test_client_address_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    proxies: list[IPvAnyNetwork] = [ipaddress.ip_network("10.42.0.0/16")]
    assert client_address("203.0.113.9", "1.2.3.4", proxies) == "203.0.113.9"  # not from a proxy: ignored
    assert client_address("10.42.0.5", "198.51.100.7", proxies) == "198.51.100.7"
    assert client_address("10.42.0.5", "6.6.6.6, 198.51.100.7, 10.42.0.9", proxies) == "198.51.100.7"  # forged left
    assert client_address("10.42.0.5", None, proxies) == "10.42.0.5"
    assert client_address("10.42.0.5", "1.2.3.4", []) == "10.42.0.5"  # no trusted proxies configured
    assert client_address(None, None, proxies) == "unknown"


# --- what a copy of the database tells about who failed to log in ------------------------------------


def _stored_keys(store: TicketStore) -> set[str]:
    with store.session() as session:
        return set(session.scalars(select(LoginFailure.key)))


def _plain_digests(network: str, login: str) -> dict[str, str]:
    """Plain SHA-256 throttle keys of every address in ``network``: what anyone can compute without a key."""
    digests = {}
    for ip in ipaddress.ip_network(network):
        for value in (f"address\0{ip}", f"login\0{ip}\0{login}"):
            digests[hashlib.sha256(value.encode()).hexdigest()] = str(ip)
    return digests


def keyed(store: TicketStore, key: str) -> LoginThrottle:
    return LoginThrottle(
        LoginRecords(store), ApiLimits(), SessionCookies(SessionSettings(secret_key=SecretStr(key))).mac
    )


def test_attack_a_copy_of_the_throttle_table_does_not_name_the_addresses(store_url: str) -> None:
    """Someone with a copy of ``login_failures`` hashes every address of a /16 (all of IPv4 is only 2^32) and the
    login name the way a plain digest would be made: none of them is a stored key. The keys are the session
    key's: another key gives other keys for the same address and name."""
    clock = FakeClock()
    with replica(throttled_settings(store_url), clock) as clients:
        for i in range(3):
            assert tickets(clients[ATTACKER], "fm", f"guess{i}") == 401
        assert clients[ATTACKER].get("/api/v1/tickets", headers={"Authorization": "Bearer guess"}).status_code == 401
    store = TicketStore.open(store_url)
    try:
        stored = _stored_keys(store)
        assert len(stored) == 2  # the address, and the login at the address
        guesses = _plain_digests("10.0.0.0/16", "fm")
        assert ATTACKER in guesses.values()  # the search covers the attacker's address
        assert {guesses[key] for key in stored if key in guesses} == set()  # and finds no address
        throttle, other = keyed(store, KEY), keyed(store, "another-session-key-" * 2)
        assert stored == {throttle.address_key(ATTACKER), throttle.login_key("fm", ATTACKER)}
        assert not stored & {other.address_key(ATTACKER), other.login_key("fm", ATTACKER)}
    finally:
        store.close()


def test_the_upgrade_to_0012_drops_plain_digests_and_the_throttle_counts_on(store_url: str) -> None:
    """Counts stored as plain SHA-256 before the upgrade are deleted by it (a block in force ends early), and
    guessing after the upgrade backs off as before."""
    engine = make_engine(store_url)
    upgrade(engine, "0011")
    old = TicketStore(engine)
    plain = hashlib.sha256(f"login\0{ATTACKER}\0fm".encode()).hexdigest()
    clock = FakeClock()
    LoginRecords(old).record_failure(plain, clock.now, HOUR, lambda _: HOUR)
    assert _stored_keys(old) == {plain}
    upgrade(engine)
    assert _stored_keys(old) == set()
    engine.dispose()
    settings = throttled_settings(store_url, free_failures_per_login=5, backoff_base="PT1S")
    with replica(settings, clock) as clients:
        assert [tickets(clients[ATTACKER], "fm", f"guess{i}") for i in range(8)] == [401] * 6 + [429] * 2
        assert tickets(clients[OWNER_DESK], "fm", PASSWORD) == 200
