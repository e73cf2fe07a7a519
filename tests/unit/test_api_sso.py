"""Page login and access scope, end to end through the app with a fake OpenID Connect provider.

Runs on SQLite, and on PostgreSQL with the integration tests. The provider is the httpx mock of tests/unit/test_oidc.py (its own keys, discovery, token and
logout endpoints); the app runs in FastAPI's TestClient over https, so ``Secure`` cookies
travel as in a browser. Every attack on the login (forged callback, replay, other browser,
tampered or mis-addressed token, missing CSRF token, stale session) and every attempt of a
site lead to see or change another site's tickets or devices is performed here and refused.
The same flow runs against real Keycloak and Chromium in tests/integration/test_sso_browser.py.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.auth import hash_secret, token_sha256
from fleetpulse.alerts.oidc import RETRY_AFTER_FAILURE_S, OidcProvider
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.models import PendingLogin
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from tests.alerts_support import NOW, make_alert, make_inventory, store, store_url
from tests.unit.test_oidc import ISSUER, FakeProvider, Held, claims

__all__ = ["store", "store_url"]  # fixtures: SQLite, and PostgreSQL when integration tests run
TOKEN_NOW = 1_800_000_000  # the fake provider's clock (tests/unit/test_oidc.py)
PASSWORD = "correct horse battery staple"
HASH = hash_secret(PASSWORD)
SCHULE_TOKEN = "tok-schule-nord-0123456789"
HTML = {"Accept": "text/html"}
OIDC = {
    "issuer": ISSUER,
    "client_id": "fleetpulse-page",
    "client_secret": "s3cret-client",
    "redirect_url": "https://testserver/auth/callback",
    "post_logout_redirect_url": "https://testserver/auth/logged-out",
    "roles": {"fp-managers": "fleet_manager", "fp-support": "it_support", "fp-admins": "admin"},
    "sites": {"site-rathaus": "Rathaus", "site-schule": "Schule Nord", "site-all": "*"},
    "department_claim": "groups",
    "departments": {"dept-finance": "Finance"},
}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Provider(FakeProvider):
    """The fake provider, checking PKCE at its token endpoint and issuing a token for the last login's nonce."""

    def __init__(self) -> None:
        super().__init__()
        self.challenge = ""
        self.nonce = ""
        self.claims: dict[str, Any] = {}
        self.down = False
        self.exchanges = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("provider down")
        if request.url.path.endswith("/token"):
            self.exchanges += 1
            form = parse_qs(request.content.decode())
            verifier = form["code_verifier"][0]
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != self.challenge or form["code"] != ["good-code"]:
                return httpx.Response(400, json={"error": "invalid_grant"})
            return httpx.Response(200, json={"id_token": self.sign(claims(nonce=self.nonce, **self.claims))})
        return super().handler(request)


@pytest.fixture
def provider() -> Provider:
    return Provider()


def settings(tmp_url: str, **api: Any) -> AlertSettings:
    values: dict[str, Any] = {
        "oidc": OIDC,
        "users": [
            {"name": "local-rathaus", "role": "fleet_manager", "password_hash": HASH, "sites": ["Rathaus"]},
        ],
        "tokens": [
            {
                "name": "schule-bot",
                "role": "fleet_manager",
                "token_sha256": token_sha256(SCHULE_TOKEN),
                "sites": ["Schule Nord"],
            }
        ],
    }
    values.update(api)
    return AlertSettings.model_validate({"store_url": tmp_url, "api": values})


def populate(store: TicketStore, alert_settings: AlertSettings) -> None:
    """Tickets 1 (Rathaus/Finance), 2 (Rathaus/Culture), 3 (Schule Nord, the only Latitude 5440)."""
    svc = TicketService(store, alert_settings)
    svc.apply_inventory(make_inventory("pc-r1", site="Rathaus", department="Finance"))
    svc.apply_inventory(make_inventory("pc-r2", site="Rathaus", department="Culture"))
    svc.apply_inventory(make_inventory("pc-s1", site="Schule Nord", department="Finance", model="Latitude 5440"))
    for n, device in enumerate(("pc-r1", "pc-r2", "pc-s1")):
        svc.apply_alert(make_alert(device, risk=0.9 - n / 10), NOW)


class App:
    """The app with a fake clock and provider; ``browser()`` is a fresh browser (own cookie jar)."""

    def __init__(self, store: TicketStore, provider: Provider, **api: Any) -> None:
        self.clock = Clock()
        self.settings = settings(store.engine.url.render_as_string(hide_password=False), **api)
        populate(store, self.settings)
        self.provider = provider
        self.provider_clock = float(TOKEN_NOW)  # the relying party's: token times and what it remembers
        oidc = self.settings.api.oidc
        http = httpx.Client(transport=httpx.MockTransport(provider.handler))
        rp = None if oidc is None else OidcProvider(oidc, http=http, clock=lambda: self.provider_clock)
        self.app = create_app(self.settings, store, clock=self.clock, oidc=rp)

    def browser(self, address: str = "testclient") -> TestClient:
        return TestClient(self.app, base_url="https://testserver", follow_redirects=False, client=(address, 50000))

    def start_login(self, browser: TestClient, next_path: str = "/") -> dict[str, str]:
        """The browser opens the login; returns the authorization request's query (the provider got it)."""
        response = browser.get("/auth/login", params={"next": next_path}, headers=HTML)
        assert response.status_code == 302, response.text
        assert response.headers["location"].startswith(f"{ISSUER}/auth?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}
        self.provider.challenge, self.provider.nonce = query["code_challenge"], query["nonce"]
        return query

    def log_in(self, groups: list[str], browser: TestClient | None = None, **extra: Any) -> TestClient:
        browser = browser or self.browser()
        self.provider.claims = {"groups": groups, **extra}
        query = self.start_login(browser)
        back = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
        assert back.status_code == 303, back.text
        return browser


@pytest.fixture
def sso(store: TicketStore, provider: Provider) -> App:
    return App(store, provider)


def csrf(browser: TestClient) -> str:
    page = browser.get("/", headers=HTML).text
    return page.split('name="csrf-token" content="')[1].split('"')[0]


ANNA = ["fp-managers", "site-rathaus"]


# --- login -------------------------------------------------------------------------------------


def test_browser_without_session_goes_to_the_login_never_to_a_basic_popup(sso: App) -> None:
    browser = sso.browser()
    page = browser.get("/devices/pc-r1?x=1", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/auth/login?next=%2Fdevices%2Fpc-r1%3Fx%3D1"
    api = browser.get("/api/v1/tickets")
    assert api.status_code == 401
    assert api.headers["www-authenticate"].startswith("Bearer")


def test_sso_login_uses_pkce_and_opens_a_hardened_session(sso: App, provider: Provider) -> None:
    browser = sso.browser()
    query = sso.start_login(browser, next_path="/devices/pc-r1")
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == "https://testserver/auth/callback"
    pending = browser.cookies.jar
    login_cookie = next(c for c in pending if c.name == "fleetpulse_login")
    assert login_cookie.path == "/auth"
    assert login_cookie.secure
    provider.claims = {"groups": ANNA}
    back = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert back.status_code == 303
    assert back.headers["location"] == "/devices/pc-r1"
    set_cookie = next(v for v in back.headers.get_list("set-cookie") if v.startswith("fleetpulse_session="))
    for flag in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert flag.lower() in set_cookie.lower(), set_cookie
    me = browser.get("/api/v1/me").json()
    assert me == {"name": "anna", "role": "fleet_manager", "sites": ["Rathaus"], "departments": []}


def test_a_stolen_code_without_the_pkce_verifier_is_refused(sso: App, provider: Provider) -> None:
    browser = sso.browser()
    query = sso.start_login(browser)
    provider.challenge = "challenge-of-the-attackers-own-login"
    back = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert back.status_code == 403
    assert "invalid_grant" in back.text
    assert browser.get("/api/v1/me").status_code == 401


def test_forged_replayed_foreign_and_late_callbacks_are_refused(sso: App) -> None:
    victim = sso.browser()
    query = sso.start_login(victim)
    attacker = sso.browser()  # login CSRF: the attacker sends the victim's callback to another browser
    assert attacker.get("/auth/callback", params={"code": "good-code", "state": query["state"]}).status_code == 400
    assert victim.get("/auth/callback", params={"code": "good-code", "state": "forged"}).status_code == 400
    # the pending login was used up by the failed attempt: even the right state does not work twice
    assert victim.get("/auth/callback", params={"code": "good-code", "state": query["state"]}).status_code == 400
    late = sso.browser()
    query = sso.start_login(late)
    sso.clock.now += timedelta(minutes=11)  # login_timeout is 10 minutes
    answer = late.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert answer.status_code == 400
    assert "took too long" in answer.text
    for browser in (victim, attacker, late):
        assert browser.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        ({"aud": "another-client"}, "another client"),
        ({"exp": TOKEN_NOW - 3600}, "exp"),
        ({"iss": "https://evil.example.org"}, "iss"),
    ],
)
def test_expired_misaddressed_or_foreign_id_tokens_open_no_session(
    sso: App, token_claims: dict[str, Any], reason: str
) -> None:
    browser = sso.browser()
    sso.provider.claims = {"groups": ANNA, **token_claims}
    query = sso.start_login(browser)
    answer = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert answer.status_code == 403
    assert reason in answer.text
    assert browser.get("/api/v1/me").status_code == 401


def test_tampered_id_token_signature_opens_no_session(sso: App, provider: Provider) -> None:
    browser = sso.browser()
    query = sso.start_login(browser)
    original = provider.sign

    def tampered(token_claims: dict[str, Any], key: Any = None) -> str:
        header, payload, signature = original(token_claims, key).split(".")
        forged = base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(payload + "==").replace(b"fp-support", b"fp-admins")
        ).rstrip(b"=")
        return f"{header}.{forged.decode()}.{signature}"

    provider.sign = tampered  # type: ignore[method-assign]
    provider.claims = {"groups": ["fp-support", "site-all"]}
    answer = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert answer.status_code == 403
    assert browser.get("/api/v1/me").status_code == 401


def test_account_without_role_or_site_gets_a_clear_page_not_a_loop(sso: App, provider: Provider) -> None:
    for groups in ([], ["fp-managers"], ["site-rathaus"]):
        browser = sso.browser()
        provider.claims = {"groups": groups, "preferred_username": "nobody"}
        query = sso.start_login(browser)
        answer = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
        assert answer.status_code == 403
        assert "no fleetpulse role or site" in answer.text
        assert "fp-managers" in answer.text  # which groups IT can add
        assert "location" not in answer.headers
        assert browser.get("/api/v1/me").status_code == 401


def test_provider_down_gives_a_clear_page_not_a_crash(sso: App, provider: Provider) -> None:
    """The failure is remembered for a few seconds: logins meanwhile get the page at once, without asking."""
    provider.down = True
    answer = sso.browser().get("/auth/login", headers=HTML)
    assert answer.status_code == 503
    assert "cannot be reached" in answer.text
    provider.down = False
    assert sso.browser().get("/auth/login", headers=HTML).status_code == 503
    sso.provider_clock += RETRY_AFTER_FAILURE_S
    browser = sso.browser()
    query = sso.start_login(browser)
    provider.down = True
    answer = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert answer.status_code == 503


class HangingProvider(Provider):
    """The provider, its endpoints ending in ``paths`` hanging until ``held.release`` is set."""

    def __init__(self, *paths: str) -> None:
        super().__init__()
        self.held = Held(super().handler, *paths)

    def handler(self, request: httpx.Request) -> httpx.Response:
        return self.held.handler(request)


def request_threads(client: TestClient, count: int) -> None:
    """Give the app in ``client`` (entered) ``count`` request threads, which its routes and the gate share."""

    def limit() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = count

    client.portal.call(limit)  # type: ignore[union-attr]


def test_attack_logins_while_the_provider_hangs_leave_the_request_threads_to_tokens(store: TicketStore) -> None:
    """Anonymous logins while the provider hangs: one waits for it, the others are answered 503 at once, so the
    request threads (here as many as the logins) stay free for a token's request."""
    logins = 4
    provider = HangingProvider("/openid-configuration")
    sso = App(store, provider)
    with sso.browser() as client, ThreadPoolExecutor(logins + 1) as pool:
        request_threads(client, logins)
        try:
            first = pool.submit(client.get, "/auth/login", headers=HTML)
            provider.held.await_request()
            others = [pool.submit(client.get, "/auth/login", headers=HTML) for _ in range(logins - 1)]
            assert [f.result(timeout=30).status_code for f in others] == [503] * (logins - 1)
            bot = {"Authorization": f"Bearer {SCHULE_TOKEN}"}
            assert pool.submit(client.get, "/api/v1/me", headers=bot).result(timeout=30).status_code == 200
            assert provider.held.requests == 1
        finally:
            provider.held.release.set()
        assert first.result(timeout=30).status_code == 503


def test_attack_callbacks_beyond_the_bound_are_refused_while_the_token_endpoint_hangs(store: TicketStore) -> None:
    """Callbacks need no secret either: past ``max_pending_exchanges`` waiting for the provider, one is refused at
    once, unchecked and unrecorded."""
    provider = HangingProvider("/token")
    sso = App(store, provider, oidc={**OIDC, "max_pending_exchanges": 1})
    browsers = [sso.browser(), sso.browser()]
    states = [sso.start_login(browser)["state"] for browser in browsers]
    with ThreadPoolExecutor(2) as pool:
        try:
            waiting = pool.submit(browsers[0].get, "/auth/callback", params={"code": "c1", "state": states[0]})
            provider.held.await_request()
            refused = pool.submit(browsers[1].get, "/auth/callback", params={"code": "c2", "state": states[1]})
            assert refused.result(timeout=30).status_code == 503
            assert "too many logins" in refused.result().text
            assert _login_failures(sso) == 0
        finally:
            provider.held.release.set()
        assert waiting.result(timeout=30).status_code == 503
    assert _login_failures(sso) == 1  # the exchange that reached the provider


def test_next_parameter_cannot_send_the_browser_to_another_site(sso: App, provider: Provider) -> None:
    for target in ("https://evil.example.org/", "//evil.example.org", "/\\evil.example.org"):
        browser = sso.browser()
        provider.claims = {"groups": ANNA}
        query = sso.start_login(browser, next_path=target)
        back = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
        assert back.headers["location"] == "/"


# --- session: CSRF, timeouts, logout -----------------------------------------------------------


def test_cookie_authenticated_writes_need_the_csrf_token(sso: App) -> None:
    browser = sso.log_in(ANNA)
    body = {"to": "approved"}
    assert browser.post("/api/v1/tickets/1/transition", json=body).status_code == 403
    wrong = {"X-CSRF-Token": "guessed"}
    assert browser.post("/api/v1/tickets/1/transition", json=body, headers=wrong).status_code == 403
    bulk = {"ticket_ids": [1, 2], "to": "approved"}
    assert browser.post("/api/v1/tickets/bulk-transition", json=bulk).status_code == 403
    assert browser.get("/api/v1/tickets/1").json()["ticket"]["state"] == "open"
    right = {"X-CSRF-Token": csrf(browser)}
    assert browser.post("/api/v1/tickets/1/transition", json=body, headers=right).status_code == 200
    events = browser.get("/api/v1/tickets/1").json()["events"]
    assert events[-1]["actor"] == "anna"


def test_forged_session_cookie_is_refused(sso: App) -> None:
    browser = sso.log_in(ANNA)
    value = browser.cookies["fleetpulse_session"]
    session_id, _, mac = value.rpartition(".")
    for cookie in (f"{session_id[:-1]}x.{mac}", session_id, f"{session_id}.{mac[:-1]}x"):
        assert sso.browser().get("/api/v1/me", headers={"Cookie": f"fleetpulse_session={cookie}"}).status_code == 401
    assert sso.browser().get("/api/v1/me", headers={"Cookie": f"fleetpulse_session={value}"}).status_code == 200


def test_idle_and_absolute_timeouts_end_the_session(sso: App) -> None:
    idle = sso.log_in(ANNA)
    sso.clock.now += timedelta(minutes=29)
    assert idle.get("/api/v1/me").status_code == 200
    sso.clock.now += timedelta(minutes=29)  # 29 min since the last use: still alive
    assert idle.get("/api/v1/me").status_code == 200
    sso.clock.now += timedelta(minutes=31)
    assert idle.get("/api/v1/me").status_code == 401
    assert idle.get("/", headers=HTML).status_code == 303  # back to the login

    busy = sso.log_in(ANNA)
    for _ in range(10 * 3 - 1):  # used every 20 minutes for just under 10 hours
        sso.clock.now += timedelta(minutes=20)
        assert busy.get("/api/v1/me").status_code == 200
    sso.clock.now += timedelta(minutes=20)
    assert busy.get("/api/v1/me").status_code == 401


def test_logout_ends_the_session_here_and_at_the_provider(sso: App) -> None:
    browser = sso.log_in(ANNA)
    cookie = browser.cookies["fleetpulse_session"]
    token = csrf(browser)
    assert browser.post("/auth/logout", data={"csrf": "forged"}).status_code == 403  # cross-site logout form
    assert browser.get("/api/v1/me").status_code == 200
    out = browser.post("/auth/logout", data={"csrf": token})
    assert out.status_code == 303
    target = urlsplit(out.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{ISSUER}/logout"
    query = parse_qs(target.query)
    assert query["post_logout_redirect_uri"] == ["https://testserver/auth/logged-out"]
    assert query["id_token_hint"][0].count(".") == 2
    assert browser.get("/api/v1/me").status_code == 401
    replay = sso.browser()  # the old cookie, kept by an attacker, is dead on every replica
    assert replay.get("/api/v1/me", headers={"Cookie": f"fleetpulse_session={cookie}"}).status_code == 401
    assert "logged out" in browser.get("/auth/logged-out").text


# --- local login and machine access ------------------------------------------------------------


def test_a_password_typed_into_the_name_field_never_reaches_the_trail(
    store: TicketStore, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fleetpulse.access")
    app = App(store, provider, oidc=None)
    browser = app.browser()
    token = browser.get("/auth/login", headers=HTML).text.split('name="csrf" value="')[1].split('"')[0]
    typed = "My-Secret-Passw0rd!"
    answer = browser.post("/auth/login", data={"username": typed, "password": "x", "next": "/", "csrf": token})
    assert answer.status_code == 401
    failures = [r for r in store.audit.records(limit=1000) if r.kind == "login.failure"]
    assert [r.actor_subject for r in failures] == ["(unknown)"]
    assert typed not in caplog.text
    assert typed not in str([r.model_dump() for r in store.audit.records(limit=1000)])


def test_local_login_form_is_the_default_without_sso(store: TicketStore, provider: Provider) -> None:
    app = App(store, provider, oidc=None)
    browser = app.browser()
    form = browser.get("/auth/login", headers=HTML)
    assert form.status_code == 200
    assert 'name="csrf"' in form.text
    token = form.text.split('name="csrf" value="')[1].split('"')[0]
    login = {"username": "local-rathaus", "password": PASSWORD, "next": "/"}
    assert browser.post("/auth/login", data={**login, "csrf": "forged"}).status_code == 403  # login CSRF
    token = browser.get("/auth/login", headers=HTML).text.split('name="csrf" value="')[1].split('"')[0]
    wrong = browser.post("/auth/login", data={**login, "password": "wrong", "csrf": token})
    assert wrong.status_code == 401
    assert "Wrong name or password" in wrong.text
    token = wrong.text.split('name="csrf" value="')[1].split('"')[0]
    ok = browser.post("/auth/login", data={**login, "csrf": token})
    assert ok.status_code == 303
    assert browser.get("/api/v1/me").json()["sites"] == ["Rathaus"]
    assert [t["device_id"] for t in browser.get("/api/v1/tickets").json()["items"]] == ["pc-r1", "pc-r2"]
    # HTTP basic for API clients only where local login is switched on explicitly
    assert app.browser().get("/api/v1/me", auth=("local-rathaus", PASSWORD)).status_code == 401


def test_basic_for_api_clients_only_when_enabled_explicitly(store: TicketStore, provider: Provider) -> None:
    app = App(store, provider, local_login=True)
    client = app.browser()
    answer = client.get("/api/v1/me", auth=("local-rathaus", PASSWORD))
    assert answer.status_code == 200
    assert "basic" not in client.get("/api/v1/me").headers["www-authenticate"].lower()
    login = client.get("/auth/login", headers=HTML)
    assert login.status_code == 200
    assert 'id="sso"' in login.text


def test_sso_only_config_offers_no_password_login(sso: App) -> None:
    browser = sso.browser()
    assert browser.get("/api/v1/me", auth=("local-rathaus", PASSWORD)).status_code == 401
    assert browser.post("/auth/login", data={"username": "x", "password": "y", "csrf": "z"}).status_code == 404


def test_bearer_token_keeps_to_its_scope(sso: App) -> None:
    bot = sso.browser()
    bot.headers["Authorization"] = f"Bearer {SCHULE_TOKEN}"
    assert [t["device_id"] for t in bot.get("/api/v1/tickets").json()["items"]] == ["pc-s1"]
    assert bot.get("/api/v1/tickets/1").status_code == 404
    assert bot.post("/api/v1/tickets/1/transition", json={"to": "approved"}).status_code == 404
    assert bot.post("/api/v1/tickets/3/transition", json={"to": "approved"}).status_code == 200  # no CSRF: no cookie


# --- scope on every route ------------------------------------------------------------------------


def test_site_lead_never_sees_another_sites_tickets_or_devices(sso: App) -> None:
    anna = sso.log_in(ANNA)
    listed = anna.get("/api/v1/tickets").json()
    assert (listed["total"], [t["device_id"] for t in listed["items"]]) == (2, ["pc-r1", "pc-r2"])
    assert anna.get("/api/v1/tickets", params={"site": "Schule Nord"}).json()["total"] == 0
    rows = list(csv.DictReader(io.StringIO(anna.get("/api/v1/tickets.csv").text)))
    assert [r["device_id"] for r in rows] == ["pc-r1", "pc-r2"]
    assert anna.get("/api/v1/tickets.csv", params={"site": "Schule Nord"}).text.count("\n") == 1  # header only
    missing = anna.get("/api/v1/tickets/999")
    other = anna.get("/api/v1/tickets/3")
    assert (
        (other.status_code, other.json())
        == (missing.status_code, missing.json())
        == (404, {"detail": "ticket not found"})
    )
    assert anna.get("/api/v1/devices/pc-s1").status_code == 404
    assert anna.get("/api/v1/devices/pc-r1").status_code == 200
    assert anna.get("/devices/pc-s1", headers=HTML).status_code == 404
    page = anna.get("/", headers=HTML).text
    assert "pc-r1" in page
    assert "pc-s1" not in page
    assert "Schule Nord" not in page  # not even as a filter choice
    assert "Latitude 5440" not in page  # nor the hardware another site runs
    assert "Schule Nord" not in anna.get("/", params={"state": "all"}, headers=HTML).text


def test_site_lead_never_changes_another_sites_tickets(sso: App, store: TicketStore) -> None:
    anna = sso.log_in(ANNA)
    token = {"X-CSRF-Token": csrf(anna)}
    answer = anna.post("/api/v1/tickets/3/transition", json={"to": "approved"}, headers=token)
    assert (answer.status_code, answer.json()) == (404, {"detail": "ticket not found"})
    bulk = anna.post("/api/v1/tickets/bulk-transition", json={"ticket_ids": [1, 3], "to": "approved"}, headers=token)
    assert bulk.status_code == 404
    assert "3" not in bulk.json()["detail"]  # names nothing outside the scope
    assert [store.get_ticket(i).state.value for i in (1, 2, 3)] == ["open", "open", "open"]  # type: ignore[union-attr]
    ok = anna.post("/api/v1/tickets/bulk-transition", json={"ticket_ids": [1, 2], "to": "approved"}, headers=token)
    assert ok.status_code == 200
    assert store.get_ticket(3).state.value == "open"  # type: ignore[union-attr]


def test_department_scope_narrows_a_site(sso: App) -> None:
    finance = sso.log_in(["fp-support", "site-rathaus", "dept-finance"])
    assert [t["device_id"] for t in finance.get("/api/v1/tickets").json()["items"]] == ["pc-r1"]
    assert finance.get("/api/v1/tickets/2").status_code == 404
    assert finance.get("/api/v1/devices/pc-r2").status_code == 404
    page = finance.get("/", headers=HTML).text
    assert "Finance" in page
    assert "Culture" not in page  # the filter offers no department outside the scope


def test_attack_an_unmapped_department_group_gets_no_access_not_the_whole_site(sso: App, provider: Provider) -> None:
    """Only Finance is mapped: a Culture clerk at the Rathaus would otherwise see every Rathaus department."""
    browser = sso.browser()
    provider.claims = {"groups": ["fp-support", "site-rathaus", "dept-culture"]}
    query = sso.start_login(browser)
    answer = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert answer.status_code == 403
    assert "map your department group" in answer.text
    assert browser.get("/api/v1/tickets").status_code == 401
    store: TicketStore = sso.app.state.store
    (failure,) = store.audit.records(kind="login.failure")
    assert (failure.actor_subject, failure.payload) == ("anna", {"method": "oidc", "reason": "no mapped department"})


def test_outbox_is_for_admins_of_every_site_only(sso: App) -> None:
    site_admin = sso.log_in(["fp-admins", "site-rathaus"])
    assert site_admin.get("/api/v1/outbox").status_code == 403
    carla = sso.log_in(["fp-admins", "site-all"])
    assert carla.get("/api/v1/outbox").status_code == 200
    assert carla.get("/api/v1/tickets").json()["total"] == 3
    support = sso.log_in(["fp-support", "site-all"])
    assert (
        support.post(
            "/api/v1/tickets/1/transition", json={"to": "approved"}, headers={"X-CSRF-Token": csrf(support)}
        ).status_code
        == 403
    )


def test_logins_exports_and_bulk_actions_land_in_the_audit_trail(sso: App) -> None:
    """Who logged in or failed, who exported which filter, who moved which tickets: identity as the
    provider asserted it, source address and request id, in the hash chain."""
    anna = sso.log_in(ANNA)
    anna.get("/api/v1/tickets.csv", params={"state": "open"}, headers={"X-Request-ID": "req-export-1"})
    anna.post(
        "/api/v1/tickets/bulk-transition",
        json={"ticket_ids": [1, 2], "to": "approved"},
        headers={"X-CSRF-Token": csrf(anna), "X-Request-ID": "bad id with spaces"},
    )
    refused = sso.browser()
    query = sso.start_login(refused)
    refused.get("/auth/callback", params={"code": "good-code", "state": "forged"})
    store: TicketStore = sso.app.state.store
    records = {record.kind: record for record in store.audit.records(limit=1000)}
    login = records["login.success"]
    assert (login.actor_issuer, login.actor_subject, login.actor_role) == (ISSUER, "f3c1-subject", "fleet_manager")
    assert login.source
    assert records["login.failure"].payload["reason"] == "state mismatch"
    export = records["export.csv"]
    assert export.request_id == "req-export-1"
    assert (export.payload["rows"], export.payload["filter"]["in_sites"]) == (2, ["Rathaus"])
    bulk = records["tickets.bulk"]
    assert bulk.payload["tickets"] == [1, 2]
    assert bulk.actor_subject == "f3c1-subject"
    assert bulk.request_id != "bad id with spaces"  # a hostile header is replaced, never stored
    assert records["ticket.transition"].actor_issuer == ISSUER
    assert store.audit.verify().ok
    assert query["state"] != "forged"


def test_logouts_and_outbox_retries_land_in_the_audit_trail(sso: App) -> None:
    """The real logout form and the admin's retry, not records written by hand: both change who sees or
    receives what, so both are evidence."""
    carla = sso.log_in(["fp-admins", "site-all"])
    retried = carla.post("/api/v1/outbox/retry", json={"ids": [1, 2]}, headers={"X-CSRF-Token": csrf(carla)})
    assert retried.status_code == 200
    assert carla.post("/auth/logout", data={"csrf": csrf(carla)}).status_code == 303
    store: TicketStore = sso.app.state.store
    records = {record.kind: record for record in store.audit.records(limit=1000)}
    retry = records["outbox.retry"]
    assert (retry.actor_subject, retry.payload["ids"]) == ("f3c1-subject", [1, 2])
    assert retry.payload["rescheduled"] == retried.json()["rescheduled"]
    logout = records["session.logout"]
    assert (logout.actor_issuer, logout.actor_subject, logout.payload["method"]) == (ISSUER, "f3c1-subject", "oidc")
    assert store.audit.verify().ok


def _login_failures(app: App) -> int:
    store: TicketStore = app.app.state.store
    return sum(record.kind == "login.failure" for record in store.audit.records(limit=10_000))


def test_callbacks_sent_without_a_login_cannot_flood_the_audit_trail(sso: App) -> None:
    """A callback needs no secret: a script sends it by the thousand. Past the address's free failures it is
    refused (429) and not recorded; a login through the provider still completes."""
    script = sso.browser()
    statuses = [script.get("/auth/callback", params={"code": "x", "state": "y"}).status_code for _ in range(200)]
    free = sso.settings.api.limits.free_failures_per_address
    assert _login_failures(sso) == statuses.count(400) == free + 1
    assert statuses.count(429) == 200 - (free + 1)
    sso.log_in(ANNA, sso.browser("10.0.0.7"))


def _pending_logins(app: App) -> int:
    store: TicketStore = app.app.state.store
    with store.session() as session:
        return len(session.scalars(select(PendingLogin)).all())


def test_attack_callbacks_with_a_made_up_code_cannot_flood_the_audit_trail(
    store: TicketStore, provider: Provider
) -> None:
    """A script starts logins for real states and sends them back with a made-up code: each refused exchange
    counts against its address like a wrong token. Past the free failures the address gets 429, unrecorded and
    before the provider is asked, at the callback and at the start, which then stores no pending login; people
    at other addresses log in as ever."""
    rounds = 40
    sso = App(store, provider, oidc={**OIDC, "max_pending_logins_per_address": rounds})  # every state stays valid
    free = sso.settings.api.limits.free_failures_per_address
    scripts = [sso.browser() for _ in range(rounds)]  # one login cookie each, all from the script's address
    states = [parse_qs(urlsplit(s.get("/auth/login").headers["location"]).query)["state"][0] for s in scripts]
    statuses = [
        script.get("/auth/callback", params={"code": "made-up", "state": state}).status_code
        for script, state in zip(scripts, states, strict=True)
    ]
    assert statuses == [403] * (free + 1) + [429] * (rounds - free - 1)
    assert _login_failures(sso) == provider.exchanges == free + 1
    assert scripts[0].get("/auth/login").status_code == 429
    assert _pending_logins(sso) == 0
    sso.log_in(ANNA, sso.browser("10.0.0.7"))


def test_login_forms_without_their_token_cannot_flood_the_audit_trail(store: TicketStore, provider: Provider) -> None:
    local = App(store, provider, oidc=None)
    script = local.browser()
    login = {"username": "local-rathaus", "password": "guess", "csrf": "forged"}
    statuses = [script.post("/auth/login", data=login).status_code for _ in range(100)]
    free = local.settings.api.limits.free_failures_per_address
    assert _login_failures(local) == statuses.count(403) == free + 1
    assert statuses.count(429) == 100 - (free + 1)


# --- pending logins: anyone can start one, each is stored until login_timeout -------------------------


def _pending_by_source(app: App) -> dict[str | None, int]:
    store: TicketStore = app.app.state.store
    with store.session() as session:
        rows = session.execute(select(PendingLogin.source_key, func.count()).group_by(PendingLogin.source_key))
        return {key: count for key, count in rows}


def test_attack_logins_started_from_one_address_keep_only_its_newest(sso: App) -> None:
    """A script starting logins in a loop only replaces its own: the table holds its newest
    ``max_pending_logins_per_address``, the newest still completes, and someone at another address logs in."""
    per_address = sso.settings.api.oidc.max_pending_logins_per_address  # type: ignore[union-attr]
    script = sso.browser("203.0.113.9")
    for _ in range(300):
        assert script.get("/auth/login", headers=HTML).status_code == 302
    assert _pending_logins(sso) == per_address
    assert sso.log_in(ANNA, script).get("/api/v1/tickets").status_code == 200  # a person clicking again and again
    sso.log_in(ANNA, sso.browser("10.0.0.7"))
    assert not sso.app.state.store.audit.records(kind="login.failure")


def test_attack_logins_from_one_ipv6_range_count_as_one_address(sso: App) -> None:
    """Every host gets a whole /64: a fresh address for each login is still one source."""
    per_address = sso.settings.api.oidc.max_pending_logins_per_address  # type: ignore[union-attr]
    for n in range(100):
        assert sso.browser(f"2001:db8:7:1::{n + 1:x}").get("/auth/login").status_code == 302
    assert list(_pending_by_source(sso).values()) == [per_address]
    assert None not in _pending_by_source(sso)  # no address is stored, only its digest
    store: TicketStore = sso.app.state.store
    with store.session() as session:
        assert not any("2001:db8" in (key or "") for key in session.scalars(select(PendingLogin.source_key)))


def test_attack_logins_started_from_many_addresses_stop_at_the_global_cap(
    store: TicketStore, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """A botnet starting logins from many addresses fills ``max_pending_logins`` and no more: further logins get
    a 503 page saying to try again, one warning a minute is logged, and once the started logins time out
    people log in again."""
    sso = App(store, provider, oidc={**OIDC, "max_pending_logins": 100})
    caplog.set_level(logging.WARNING, logger="fleetpulse.alerts.api.sessions")
    statuses = [sso.browser(f"198.51.100.{n}").get("/auth/login").status_code for n in range(1, 31) for _ in range(5)]
    assert statuses == [302] * 100 + [503] * 50
    assert _pending_logins(sso) == 100
    person = sso.browser("10.0.0.7").get("/auth/login", headers=HTML)
    assert person.status_code == 503
    assert "Too many logins in progress" in person.text
    assert "try again in a minute" in person.text
    assert person.headers["retry-after"] == "60"
    assert "set-cookie" not in person.headers
    assert _pending_logins(sso) == 100
    warnings = [r for r in caplog.records if "too many single sign-on logins in progress" in r.getMessage()]
    assert len(warnings) == 1
    sso.clock.now += sso.settings.api.session.login_timeout
    sso.log_in(ANNA, sso.browser("10.0.0.7"))
    assert _pending_logins(sso) <= 100


def test_attack_a_token_without_department_gets_no_access_when_one_is_required(
    store: TicketStore, provider: Provider
) -> None:
    """With ``require_department``, a person whose token names no department is refused and the refusal is in the
    audit trail, instead of seeing every department of their sites."""
    sso = App(store, provider, oidc={**OIDC, "require_department": True})
    browser = sso.browser()
    provider.claims = {"groups": ["fp-support", "site-rathaus"]}
    query = sso.start_login(browser)
    answer = browser.get("/auth/callback", params={"code": "good-code", "state": query["state"]})
    assert answer.status_code == 403
    assert "names no department" in answer.text
    assert browser.get("/api/v1/tickets").status_code == 401
    (failure,) = store.audit.records(kind="login.failure")
    assert (failure.actor_subject, failure.payload) == ("anna", {"method": "oidc", "reason": "no department value"})
    finance = sso.log_in(["fp-support", "site-rathaus", "dept-finance"])
    assert [t["device_id"] for t in finance.get("/api/v1/tickets").json()["items"]] == ["pc-r1"]
