"""Attacks on the API's sessions, audit trail, login throttle and input validation, performed and refused.

A removed or demoted local account keeps no session; refused API logins and token use reach the audit
trail, never their secrets, and only as often as the throttle admits; rotating IPv6 addresses within a
/64 does not escape the throttle; hostile text (lone surrogates, control characters) is a 422, never a
500. Runs on SQLite and, with integration tests, on real PostgreSQL; the hostile-text tests run on
SQLite here, their PostgreSQL case (NUL) is in tests/integration/test_ticket_store.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleetpulse.alerts.api import auth, create_app, passwords
from fleetpulse.alerts.api.auth import LoginThrottle, hash_secret, throttle_scope, token_sha256
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.logins import LoginRecords
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from tests.alerts_support import NOW, make_alert, make_inventory, store_url
from tests.unit.test_tickets_api import HASH, PASSWORD, TOKEN, api_settings

__all__ = ["store_url"]  # fixture
HTML = {"Accept": "text/html"}
KEY = "session-key-" + "k" * 40
LEAD = {"name": "lead-a", "role": "fleet_manager", "password_hash": HASH, "sites": ["Town Hall"]}
ROOT = {"name": "root", "role": "admin", "password_hash": HASH}
ATTACKER = "198.51.100.66"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def configured(store_url: str, users: list[dict[str, Any]], **api: Any) -> AlertSettings:
    """These accounts, the token itsm-bot (it_support, every site), HTTP basic on, a fixed session key."""
    token = {"name": "itsm-bot", "role": "it_support", "token_sha256": token_sha256(TOKEN), "sites": ["*"]}
    values = {
        "users": users,
        "tokens": [token],
        "local_login": True,
        "session": {"cookie_secure": False, "secret_key": KEY},
    }
    return AlertSettings.model_validate({"store_url": store_url, "api": values | api})


@pytest.fixture
def store(store_url: str) -> Iterator[TicketStore]:
    """Ticket 1 (pc-1, Town Hall) and ticket 2 (pc-2, Library), both open."""
    opened = TicketStore.open(store_url)
    svc = TicketService(opened, AlertSettings(store_url=store_url))
    svc.apply_inventory(make_inventory("pc-1", site="Town Hall", department="Finance"))
    svc.apply_inventory(make_inventory("pc-2", site="Library", department="Culture"))
    svc.apply_alert(make_alert("pc-1", risk=0.6), NOW)
    svc.apply_alert(make_alert("pc-2", risk=0.95), NOW)
    yield opened
    opened.close()


def started(store: TicketStore, users: list[dict[str, Any]], clock: FakeClock | None = None, **api: Any) -> FastAPI:
    """The API as (re)started with these accounts, on the same store and session key."""
    settings = configured(store.engine.url.render_as_string(hide_password=False), users, **api)
    return create_app(settings, store, clock=clock or FakeClock())


def from_address(app: FastAPI, address: str) -> TestClient:
    return TestClient(app, client=(address, 40000), follow_redirects=False)


# --- a removed or changed local account keeps no session ------------------------------------------


def log_in(browser: TestClient, name: str) -> str:
    """The login form as a person uses it; returns the page's CSRF token for writes."""
    form = browser.get("/auth/login", headers=HTML).text
    token = form.split('name="csrf" value="')[1].split('"')[0]
    answer = browser.post("/auth/login", data={"username": name, "password": PASSWORD, "csrf": token, "next": "/"})
    assert answer.status_code == 303, answer.text
    return browser.get("/", headers=HTML).text.split('name="csrf-token" content="')[1].split('"')[0]


def with_session(app: FastAPI, cookie: str) -> TestClient:
    browser = from_address(app, "10.0.0.7")
    browser.cookies.set("fleetpulse_session", cookie)
    return browser


CHANGES = {
    "removed": [ROOT],
    "demoted to read-only": [{**LEAD, "role": "it_support"}],
    "sites changed": [{**LEAD, "sites": ["Library"]}],
    "departments narrowed": [{**LEAD, "departments": ["Finance"]}],
    "new password": [{**LEAD, "password_hash": hash_secret("a new passphrase for lead-a")}],
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_or_removed_local_account_loses_its_session_at_the_next_request(
    store: TicketStore, change: str
) -> None:
    before = [LEAD, ROOT]
    browser = from_address(started(store, before), "10.0.0.7")
    csrf = log_in(browser, "lead-a")
    cookie = browser.cookies["fleetpulse_session"]

    after = started(store, CHANGES[change])  # IT changes the account and restarts the API
    stale = with_session(after, cookie)
    assert stale.get("/api/v1/me").status_code == 401
    write = stale.post("/api/v1/tickets/1/transition", json={"to": "approved"}, headers={"X-CSRF-Token": csrf})
    assert write.status_code == 401
    assert stale.get("/", headers=HTML).headers["location"].startswith("/auth/login")
    assert store.get_ticket(1).state.value == "open"  # type: ignore[union-attr]
    # the session was ended, not merely refused: the old configuration does not bring it back
    assert with_session(started(store, before), cookie).get("/api/v1/me").status_code == 401


def test_an_unchanged_account_keeps_its_session_across_restarts(store: TicketStore) -> None:
    browser = from_address(started(store, [LEAD, ROOT]), "10.0.0.7")
    csrf = log_in(browser, "lead-a")
    cookie = browser.cookies["fleetpulse_session"]
    # another account changes, the order of the accounts changes: lead-a's session is unaffected
    restarted = with_session(started(store, [{**ROOT, "role": "it_support"}, LEAD]), cookie)
    me = restarted.get("/api/v1/me").json()
    assert (me["name"], me["role"], me["sites"]) == ("lead-a", "fleet_manager", ["Town Hall"])
    write = restarted.post("/api/v1/tickets/1/transition", json={"to": "approved"}, headers={"X-CSRF-Token": csrf})
    assert write.status_code == 200, write.text
    forged = restarted.post("/api/v1/tickets/1/transition", json={"to": "ordered"}, headers={"X-CSRF-Token": "x.y"})
    assert forged.status_code == 403


# --- refused API logins and token use are recorded ----------------------------------------------


def test_refused_basic_logins_and_tokens_are_recorded_without_their_secrets(
    store: TicketStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    client = from_address(started(store, [ROOT]), ATTACKER)
    guessed_token = "tok-guessed-0123456789-secret"
    typed = "My-Secret-Passw0rd!"
    attempts: list[tuple[str, dict[str, str], tuple[str, str] | None]] = [
        ("req-token", {"Authorization": f"Bearer {guessed_token}"}, None),
        ("req-root", {}, ("root", "Winter2026-guess")),
        ("req-typed", {}, (typed, "x")),  # a password typed into the name field
        ("req-nul", {}, ("ro\x00ot", "x")),  # PostgreSQL cannot store NUL: the name stays out
    ]
    for rid, headers, credentials in attempts:
        answer = client.get("/api/v1/tickets", headers={"X-Request-ID": rid, **headers}, auth=credentials)
        assert answer.status_code == 401
    assert client.get("/api/v1/tickets", auth=("root", PASSWORD)).status_code == 200
    assert client.get("/api/v1/tickets").status_code == 401  # no credentials at all: no failed login

    failures = [r for r in store.audit.records() if r.kind == "login.failure"]
    seen = [(r.request_id, r.actor_subject, r.payload, r.source) for r in failures]
    assert seen == [
        ("req-token", "(unknown)", {"method": "bearer", "reason": "token"}, ATTACKER),
        ("req-root", "root", {"method": "basic", "reason": "password"}, ATTACKER),
        ("req-typed", "(unknown)", {"method": "basic", "reason": "password"}, ATTACKER),
        ("req-nul", "(unknown)", {"method": "basic", "reason": "password"}, ATTACKER),
    ]
    trail = str([r.model_dump() for r in store.audit.records()])
    for secret in (guessed_token, "Winter2026-guess", typed, PASSWORD):
        assert secret not in trail
        assert secret not in caplog.text
    assert store.audit.verify().ok


def test_token_use_is_recorded_once_an_hour_per_address(store: TicketStore) -> None:
    clock = FakeClock()
    app = started(store, [ROOT], clock)
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    def use(address: str, rid: str, path: str = "/api/v1/tickets") -> None:
        assert from_address(app, address).get(path, headers={**bearer, "X-Request-ID": rid}).status_code == 200

    use("10.0.0.7", "first", "/api/v1/tickets.csv")
    use("10.0.0.7", "again")
    use("2001:db8:1:2::7", "v6")
    use("2001:db8:1:2::8", "v6-same-64")  # one host's /64 is one address
    use("10.0.0.8", "other")
    clock.now += timedelta(minutes=59)
    use("10.0.0.7", "within-the-hour")
    clock.now += timedelta(minutes=2)
    use("10.0.0.7", "next-hour")

    uses = [r for r in store.audit.records() if r.kind == "token.use"]
    assert [(r.request_id, r.source) for r in uses] == [
        ("first", "10.0.0.7"),
        ("v6", "2001:db8:1:2::7"),
        ("other", "10.0.0.8"),
        ("next-hour", "10.0.0.7"),
    ]
    assert {(r.actor_issuer, r.actor_subject, r.actor_role) for r in uses} == {("local", "itsm-bot", "it_support")}
    assert uses[0].payload == {"method": "bearer", "sites": ["*"], "departments": []}
    export = next(r for r in store.audit.records() if r.kind == "export.csv")
    assert export.request_id == "first"  # the gate's record and the route's share the request's id


def test_http_basic_use_is_recorded_once_an_hour_per_login_and_address(store: TicketStore) -> None:
    """A script authenticating with HTTP basic leaves the same trace as one with a token: who, from where, and
    when it started (once an hour), whether its password was hashed or remembered."""
    clock = FakeClock()
    app = started(store, [ROOT, LEAD], clock)

    def use(address: str, rid: str, login: str = "root", path: str = "/api/v1/tickets") -> None:
        client = from_address(app, address)
        answer = client.get(path, auth=(login, PASSWORD), headers={"X-Request-ID": rid})
        assert answer.status_code == 200

    use("10.0.0.7", "first", path="/api/v1/tickets.csv")
    use("10.0.0.7", "again")  # remembered credentials, no hashing
    use("10.0.0.7", "lead", login="lead-a")
    use("2001:db8:1:2::7", "v6")
    use("2001:db8:1:2::8", "v6-same-64")
    clock.now += timedelta(minutes=59)
    use("10.0.0.7", "within-the-hour")
    clock.now += timedelta(minutes=2)
    use("10.0.0.7", "next-hour")

    uses = [r for r in store.audit.records() if r.kind == "basic.use"]
    assert [(r.request_id, r.actor_subject, r.source) for r in uses] == [
        ("first", "root", "10.0.0.7"),
        ("lead", "lead-a", "10.0.0.7"),
        ("v6", "root", "2001:db8:1:2::7"),
        ("next-hour", "root", "10.0.0.7"),
    ]
    assert (uses[0].actor_issuer, uses[0].actor_role) == ("local", "admin")
    assert uses[0].payload == {"method": "basic", "sites": ["*"], "departments": []}
    assert uses[1].payload == {"method": "basic", "sites": ["Town Hall"], "departments": []}
    assert PASSWORD not in str([r.model_dump() for r in store.audit.records()])
    assert next(r for r in store.audit.records() if r.kind == "export.csv").request_id == "first"


def test_guesses_the_throttle_refuses_are_not_recorded(store: TicketStore) -> None:
    """Recording stays within the throttle's budget: a guessing script cannot flood the trail."""
    limits = {"free_failures_per_login": 3, "free_failures_per_address": 5, "backoff_base": "PT60S"}
    app = started(store, [ROOT], limits=limits)
    guesser, token_guesser = from_address(app, ATTACKER), from_address(app, "198.51.100.67")
    basic = [guesser.get("/api/v1/tickets", auth=("root", f"guess{i}")).status_code for i in range(30)]
    tokens = [
        token_guesser.get("/api/v1/tickets", headers={"Authorization": f"Bearer guess-{i}"}).status_code
        for i in range(30)
    ]
    assert basic == [401] * 4 + [429] * 26
    assert tokens == [401] * 6 + [429] * 24
    methods = [r.payload["method"] for r in store.audit.records() if r.kind == "login.failure"]
    assert methods == ["basic"] * 4 + ["bearer"] * 6


# --- IPv6: one /64 is one address for the throttle -------------------------------------------------


def test_rotating_ipv6_addresses_within_a_64_are_throttled_as_one(store: TicketStore) -> None:
    app = started(store, [ROOT], limits={"free_failures_per_login": 5, "backoff_base": "PT60S"})

    def guess(address: str, password: str = "guess") -> int:
        return int(from_address(app, address).get("/api/v1/tickets", auth=("root", password)).status_code)

    rotating = [guess(f"2001:db8:1:2:{i:x}::{i + 1:x}") for i in range(12)]
    assert rotating == [401] * 6 + [429] * 6
    assert guess("2001:db8:1:2:ffff:ffff:ffff:fffe", PASSWORD) == 429  # still the attacker's /64
    assert guess("2001:db8:1:3::1", PASSWORD) == 200  # the owner in the next /64 is not locked out


def test_ipv4_mapped_addresses_count_as_their_ipv4_address(store: TicketStore) -> None:
    """A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d: keyed by their /64, all of IPv4 would share
    one throttle and one attacker would lock everyone out."""
    app = started(store, [ROOT], limits={"free_failures_per_login": 2, "backoff_base": "PT60S"})
    attacker = from_address(app, "::ffff:198.51.100.66")
    assert [attacker.get("/api/v1/tickets", auth=("root", "guess")).status_code for _ in range(4)] == [401] * 3 + [429]
    assert from_address(app, ATTACKER).get("/api/v1/tickets", auth=("root", PASSWORD)).status_code == 429
    owner = from_address(app, "::ffff:10.0.0.7")
    assert owner.get("/api/v1/tickets", auth=("root", PASSWORD)).status_code == 200


def test_throttle_scope() -> None:
    assert throttle_scope("10.0.0.7") == "10.0.0.7"
    assert throttle_scope("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert throttle_scope("2001:DB8:1:2::1") == throttle_scope("2001:db8:1:2::2")
    assert throttle_scope("::ffff:10.0.0.7") == "10.0.0.7"
    assert throttle_scope("fe80::1%eth0") == "fe80::/64"
    assert throttle_scope("unknown") == "unknown"


# --- wrong passwords from many addresses cannot stall the API --------------------------------------


class HeldHashing:
    """Wrong passwords are "hashed" until :meth:`release` (the correct one for real), and request
    threads waiting on a password check are counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.released = threading.Event()
        self.changed = threading.Condition()
        self.waiting = self.peak = 0
        real_verify, real_check = passwords._verify, auth.verify_secret

        def held_verify(secret: str, encoded: str) -> bool:
            if secret == PASSWORD:
                return real_verify(secret, encoded)
            self.released.wait()
            return False

        def counted_check(secret: str, encoded: str) -> bool:
            with self.changed:
                self.waiting += 1
                self.peak = max(self.peak, self.waiting)
                self.changed.notify_all()
            try:
                return real_check(secret, encoded)
            finally:
                with self.changed:
                    self.waiting -= 1

        monkeypatch.setattr(passwords, "_verify", held_verify)
        monkeypatch.setattr(auth, "verify_secret", counted_check)

    def await_waiting(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.waiting == count, timeout=30), self.waiting

    def release(self) -> None:
        self.released.set()


def test_a_flood_of_wrong_passwords_from_many_addresses_is_refused_not_queued(
    store: TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A botnet sends one wrong password per address (within every throttle budget) while hashing is
    stuck: beyond the bound the checks are refused with 503 at once, tokens, sessions and remembered
    credentials are served meanwhile. A refused guess still counts for the throttle: otherwise guesses
    from one address, refused unchecked, would end in the remembered password's 200."""
    bound, bots = 4, 24
    limits = {"max_pending_password_checks": bound, "trusted_proxies": ["127.0.0.0/8"]}
    fresh = {"name": "fm", "role": "fleet_manager", "password_hash": HASH}  # logs in only after the flood
    app = started(store, [ROOT, LEAD, fresh], limits=limits)
    hashing = HeldHashing(monkeypatch)
    guesses = {f"203.0.113.{i}": "root" if i % 2 else f"user{i}" for i in range(bots)}  # known and unknown names

    def send(address: str, **request: Any) -> httpx.Response:
        return client.get("/api/v1/me", headers={"X-Forwarded-For": address} | request.pop("headers", {}), **request)

    with (
        TestClient(app, client=("127.0.0.1", 40000), follow_redirects=False) as client,
        ThreadPoolExecutor(bots + 4) as pool,
    ):
        log_in(client, "lead-a")  # a page session, opened before the flood
        session = {"Cookie": f"fleetpulse_session={client.cookies['fleetpulse_session']}"}
        client.cookies.clear()
        assert send("10.0.0.9", auth=("root", PASSWORD)).status_code == 200  # a script remembered by the cache
        try:
            flood = {pool.submit(send, address, auth=(name, "guess")): address for address, name in guesses.items()}
            answered = as_completed(flood, timeout=30)
            refused = [next(answered) for _ in range(bots - bound)]
            hashing.await_waiting(bound)  # the admitted ones hold their request threads, and no more do
            assert {(f.result().status_code, f.result().headers["retry-after"]) for f in refused} == {(503, "1")}
            assert refused[0].result().json() == {"detail": "too many logins being checked; try again shortly"}

            def served(call: Callable[..., httpx.Response], *args: Any, **kwargs: Any) -> httpx.Response:
                """Answered while hashing is stuck (a failure, not a hang, if it waits for hashing)."""
                return pool.submit(call, *args, **kwargs).result(timeout=30)

            assert served(send, "10.0.0.8", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
            assert served(send, "10.0.0.7", headers=session).status_code == 200
            assert served(send, "10.0.0.9", auth=("root", PASSWORD)).status_code == 200
            form = client.get("/auth/login", headers=HTML).text.split('name="csrf" value="')[1].split('"')[0]
            login = {"username": "lead-a", "password": "typo", "csrf": form}
            busy = served(client.post, "/auth/login", data=login)
            assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
            assert "try again in a moment" in busy.text
            # attack: guess root's password from one address while the bots keep the admission full
            oracle = [served(send, "198.51.100.7", auth=("root", f"guess{i}")).status_code for i in range(6)]
            assert oracle == [503] * 6  # refused unchecked, yet counted: the 6th is past the 5 free failures
            assert served(send, "198.51.100.7", auth=("root", PASSWORD)).status_code == 429  # not the cache's 200
            assert hashing.peak == bound
        finally:
            hashing.release()
        assert sorted(f.result().status_code for f in flood) == [401] * bound + [503] * (bots - bound)

        failed = [r.source for r in store.audit.records(kind="login.failure")]
        checked = sorted(flood[f] for f in flood if f.result().status_code == 401)
        assert sorted(failed) == checked  # the refused attempts were never checked, nor recorded
        records = LoginRecords(store)
        throttle: LoginThrottle = app.state.authenticator.throttle
        unchecked = sorted(set(guesses) - set(checked))
        for address in unchecked:  # but counted by the throttle, one failure each: within every budget
            keys = [throttle.address_key(address), throttle.login_key(guesses[address], address)]
            assert [failures for failures, _ in records.failures(keys).values()] == [1, 1]
        assert send(unchecked[0], auth=("fm", PASSWORD)).status_code == 200  # hashed again, from a refused address


# --- hostile text is a 422, never a 500 ------------------------------------------------------------


@pytest.fixture
def sqlite_client(tmp_path: Path) -> Iterator[TestClient]:
    """The API over a SQLite store with tickets 1 and 2 (hostile text must fail in validation, not in a store)."""
    settings = api_settings(f"sqlite:///{tmp_path}/tickets.db")
    opened = TicketStore.open(settings.store_url)
    svc = TicketService(opened, settings)
    svc.apply_inventory(make_inventory("pc-1"))
    svc.apply_alert(make_alert("pc-1"), NOW)
    svc.apply_alert(make_alert("pc-2"), NOW)
    yield TestClient(create_app(settings, opened), raise_server_exceptions=False)
    opened.close()


def post_raw(client: TestClient, path: str, body: str) -> httpx.Response:
    """A JSON body as an attacker writes it (``\\ud800`` escapes a lone surrogate: valid JSON, invalid text)."""
    headers = {"Content-Type": "application/json"}
    return client.post(path, content=body, auth=("fm", PASSWORD), headers=headers)


REPORT = '"device_id": "pc-1", "component": "disk", "on_day": "2026-10-01", "outcome": "failed"'


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/v1/tickets/1/transition", '{"to": "approved", "note": "ok \\ud800"}', ["body", "note"]),
        (
            "/api/v1/tickets/bulk-transition",
            '{"ticket_ids": [1], "to": "approved", "note": "\\udfff"}',
            ["body", "note"],
        ),
        ("/api/v1/failure-reports", "{" + REPORT + ', "note": "\\ud800\\ud800"}', ["body", "note"]),
        ("/api/v1/failure-reports", "{" + REPORT + ', "component_id": "\\udc80"}', ["body", "component_id"]),
        ("/api/v1/tickets/1/transition", '{"to": "approved", "\\ud800": 1}', ["body"]),  # a hostile key
        ("/api/v1/tickets/1/transition", '{"to": "approved", "' + "k" * 5000 + '": 1}', ["body", "k" * 64]),
    ],
)
def test_lone_surrogates_are_refused_without_echoing_them(
    sqlite_client: TestClient, path: str, body: str, loc: list[str]
) -> None:
    answer = post_raw(sqlite_client, path, body)
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert set(error) == {"loc", "msg", "type"}  # the value sent is never echoed
    assert error["loc"] == loc
    assert sqlite_client.get("/api/v1/tickets/1", auth=("fm", PASSWORD)).json()["ticket"]["state"] == "open"


def test_control_characters_are_refused_in_text_fields(sqlite_client: TestClient) -> None:
    transition = "/api/v1/tickets/1/transition"
    for note in ("a\u0000b", "bell\u0007", "\u001b[31mred"):
        answer = sqlite_client.post(transition, json={"to": "approved", "note": note}, auth=("fm", PASSWORD))
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "note"]
        assert "control characters" in answer.json()["detail"][0]["msg"]
    report = {"device_id": "pc-1", "component": "disk", "on_day": "2026-10-01", "outcome": "failed"}
    for hostile in ({"component_id": "sn\u0000"}, {"component_id": "sn\n1"}, {"note": "\u0000"}):
        answer = sqlite_client.post("/api/v1/failure-reports", json=report | hostile, auth=("fm", PASSWORD))
        assert answer.status_code == 422, hostile
    bulk = {"ticket_ids": [1, 2], "to": "approved", "note": "\u0000"}
    assert sqlite_client.post("/api/v1/tickets/bulk-transition", json=bulk, auth=("fm", PASSWORD)).status_code == 422
    assert sqlite_client.get("/api/v1/tickets/1", auth=("fm", PASSWORD)).json()["ticket"]["state"] == "open"
    # free text keeps its tabs and line breaks
    lines = {"to": "approved", "note": "disk clicks\r\n\tsince Monday"}
    assert sqlite_client.post(transition, json=lines, auth=("fm", PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/tickets", {"site": "Town Hall\u0000"}),
        ("/api/v1/tickets", {"storm_group": "\u001b", "site": "Town Hall"}),
        ("/api/v1/tickets.csv", {"model": "\u0000"}),
        ("/api/v1/forecast", {"site": "\u0000"}),
        ("/", {"department": "\u0000"}),  # the page's filters too
    ],
)
def test_control_characters_are_refused_in_filters(sqlite_client: TestClient, path: str, query: dict[str, str]) -> None:
    answer = sqlite_client.get(path, params=query, auth=("fm", PASSWORD))
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"][0] == "query"
    assert error["loc"][1] in query
    assert error["msg"] == "must not contain control characters"
