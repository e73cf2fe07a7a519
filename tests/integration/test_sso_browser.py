"""Single sign-on in a real browser: headless Chromium, real Keycloak, the real API server.

Anna (fleet manager, site Rathaus) logs in through Keycloak's own login form, sees and exports
only Rathaus tickets, cannot include another site's ticket in a bulk action, approves one over the session with its CSRF token (a write without the
token is refused), and logs out at fleetpulse and at Keycloak (RP-initiated): opening the page
again asks Keycloak for a password again. A person without fleetpulse groups ends on the
"no access" page, not in a login loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.alerts.web.browser import Cdp, chromium_page
from tests.alerts_support import NOW, make_alert, make_inventory
from tests.harness import STATE, free_port, served
from tests.integration.test_oidc_keycloak import PASSWORDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ACTOR = "anna"  # the username Keycloak asserts as preferred_username (realm file)


def allow_redirects(keycloak_url: str, base: str) -> None:
    """Register this test server's callback and logout URLs with the realm's client (Keycloak admin API)."""
    admin = (STATE / "keycloak" / "admin-password").read_text().strip()
    with httpx.Client(base_url=keycloak_url, timeout=120) as client:
        token = client.post(
            "/realms/master/protocol/openid-connect/token",
            data={"grant_type": "password", "client_id": "admin-cli", "username": "admin", "password": admin},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        found = client.get("/admin/realms/fleetpulse/clients", params={"clientId": "fleetpulse-page"}, headers=headers)
        page_client = found.json()[0]
        page_client["redirectUris"] = sorted({*page_client["redirectUris"], f"{base}/auth/callback"})
        logout_uris = set(page_client["attributes"].get("post.logout.redirect.uris", "").split("##")) - {""}
        page_client["attributes"]["post.logout.redirect.uris"] = "##".join(
            sorted(logout_uris | {f"{base}/auth/logged-out"})
        )
        updated = client.put(f"/admin/realms/fleetpulse/clients/{page_client['id']}", json=page_client, headers=headers)
        assert updated.status_code == 204, updated.text


@pytest.fixture
def server(tmp_path: Path, keycloak_url: str) -> Iterator[tuple[str, TicketStore]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    allow_redirects(keycloak_url, base)
    settings = AlertSettings.model_validate(
        {
            "store_url": f"sqlite:///{tmp_path}/tickets.db",
            "api": {
                "oidc": {
                    "issuer": f"{keycloak_url}/realms/fleetpulse",
                    "client_id": "fleetpulse-page",
                    "client_secret": "local-test-client-secret",
                    "redirect_url": f"{base}/auth/callback",
                    "post_logout_redirect_url": f"{base}/auth/logged-out",
                    "roles": {
                        "fleetpulse-fleet-managers": "fleet_manager",
                        "fleetpulse-it-support": "it_support",
                        "fleetpulse-admins": "admin",
                    },
                    "sites": {"site-rathaus": "Rathaus", "site-schule-nord": "Schule Nord", "fleetpulse-admins": "*"},
                    "allow_insecure_http": True,
                },
            },
        }
    )
    store = TicketStore.open(settings.store_url)
    service = TicketService(store, settings)
    for n, (device, site) in enumerate([("rh-1", "Rathaus"), ("rh-2", "Rathaus"), ("sn-1", "Schule Nord")]):
        service.apply_inventory(make_inventory(device, site=site))
        service.apply_alert(make_alert(device, risk=0.9 - n / 10), NOW)
    with served(create_app(settings, store), port):
        yield base, store
    store.close()


async def keycloak_login(cdp: Cdp, username: str) -> None:
    """Fill in Keycloak's real login form, as a person would."""
    await cdp.wait_for("document.getElementById('kc-form-login') !== null", within_s=60)
    cdp.events = [e for e in cdp.events if e.get("method") != "Page.loadEventFired"]
    await cdp.js(
        f"document.getElementById('username').value = {json.dumps(username)};"
        f"document.getElementById('password').value = {json.dumps(PASSWORDS[username])};"
        "document.getElementById('kc-form-login').submit()"
    )
    await cdp.wait_event("Page.loadEventFired", within_s=60)


async def anna_session(base: str, ws_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=64 * 2**20) as ws:
        cdp = Cdp(ws)
        await cdp.start()
        await cdp.navigate(base + "/")
        seen["login_host"] = await cdp.js("location.host")
        await keycloak_login(cdp, "anna")
        await cdp.wait_for("document.getElementById('queue') !== null", within_s=30)
        seen["back_at"] = await cdp.js("location.href")
        seen["who"] = await cdp.js("document.querySelector('header .who').textContent")
        seen["devices"] = await cdp.js(
            "[...document.querySelectorAll('#queue tbody tr')].map(r => r.children[2].textContent.trim())"
        )
        seen["cookie_visible_to_scripts"] = await cdp.js("document.cookie")
        seen["without_csrf"] = await cdp.js(
            "fetch('/api/v1/tickets/bulk-transition', {method: 'POST', credentials: 'same-origin',"
            " headers: {'Content-Type': 'application/json'}, body: JSON.stringify({ticket_ids: [1], to: 'approved'})})"
            ".then(r => r.status)"
        )
        seen["other_site"] = await cdp.js("fetch('/api/v1/tickets/3').then(r => r.status)")
        seen["csv"] = await cdp.js("fetch(document.getElementById('export').href).then(r => r.text())")
        seen["bulk_other_site"] = await cdp.js(
            "fetch('/api/v1/tickets/bulk-transition', {method: 'POST', credentials: 'same-origin',"
            " headers: {'Content-Type': 'application/json',"
            " 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},"
            " body: JSON.stringify({ticket_ids: [1, 3], to: 'approved'})}).then(r => r.status)"
        )
        await cdp.js("document.querySelectorAll('input.pick')[0].click()")
        await cdp.js("document.getElementById('bulk-approve').click()")
        seen["status"] = await cdp.wait_for(
            "document.getElementById('bulk-status').textContent.startsWith('Approved') && "
            "document.getElementById('bulk-status').textContent"
        )
        cdp.events = [e for e in cdp.events if e.get("method") != "Page.loadEventFired"]
        await cdp.js("document.getElementById('logout').click()")
        await cdp.wait_for("location.pathname === '/auth/logged-out' && document.readyState === 'complete'", 60)
        seen["logged_out"] = await cdp.js("document.getElementById('message').textContent")
        seen["after_logout"] = await cdp.js("fetch('/api/v1/me').then(r => r.status)")
        await cdp.navigate(base + "/")
        await cdp.wait_for("document.readyState === 'complete'")
        # Keycloak's own session ended too: it asks for the password again instead of logging in silently
        seen["relogin_form"] = await cdp.wait_for("document.getElementById('kc-form-login') !== null", 60)
        # the refused write, the other site's ticket and the logged-out call are logged by Chromium as failed loads
        seen["errors"] = [e for e in cdp.errors() if not e.startswith("Failed to load resource")]
    return seen


def test_anna_logs_in_with_keycloak_sees_her_site_approves_and_logs_out(server: tuple[str, TicketStore]) -> None:
    base, store = server
    with chromium_page() as ws_url:
        seen = asyncio.run(anna_session(base, ws_url))
    assert seen["login_host"] != base.removeprefix("http://")  # Keycloak's login page, not a browser pop-up
    assert seen["back_at"] == base + "/"
    assert "fleet manager" in seen["who"]
    assert "Rathaus" in seen["who"]
    assert sorted(seen["devices"]) == ["rh-1", "rh-2"]
    assert seen["cookie_visible_to_scripts"] == ""  # HttpOnly
    assert seen["without_csrf"] == 403
    assert seen["other_site"] == 404
    assert [line.split(",")[3] for line in seen["csv"].strip().splitlines()[1:]] == ["rh-1", "rh-2"]
    assert seen["bulk_other_site"] == 404  # with a valid CSRF token, but ticket 3 is at Schule Nord
    assert seen["status"] == "Approved 1 ticket(s)."
    approved = [t for t in store.list_tickets() if t.state.value == "approved"]
    assert [t.device_id for t in approved] == ["rh-1"]
    events = [e for e in store.ticket_events(approved[0].id) if e.kind == "transition"]
    assert events[-1].actor == ACTOR, events[-1].actor
    assert "logged out" in seen["logged_out"]
    assert seen["after_logout"] == 401
    assert seen["relogin_form"]
    assert seen["errors"] == []


async def nobody_session(base: str, ws_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=64 * 2**20) as ws:
        cdp = Cdp(ws)
        await cdp.start()
        await cdp.navigate(base + "/")
        await keycloak_login(cdp, "nobody")
        await cdp.wait_for("document.getElementById('message') !== null", within_s=30)
        return {
            "path": await cdp.js("location.pathname"),
            "message": await cdp.js("document.getElementById('message').textContent"),
            "me": await cdp.js("fetch('/api/v1/me').then(r => r.status)"),
        }


def test_person_without_fleetpulse_groups_gets_the_no_access_page(server: tuple[str, TicketStore]) -> None:
    base, _ = server
    with chromium_page() as ws_url:
        seen = asyncio.run(nobody_session(base, ws_url))
    assert seen["path"] == "/auth/callback"
    assert "no fleetpulse role or site" in seen["message"]
    assert seen["me"] == 401
