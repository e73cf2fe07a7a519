"""The fleet-manager page in real headless Chromium (Debian package), driven over the DevTools protocol.

Checks what a fleet manager sees and does: the queue sorted by urgency, filters, bulk approve
(clicks, the API call, the page update and the audit trail), CSV export, the device page with
its SVG history plot, and no JavaScript or CSP errors. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.storm import StormPolicy
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.alerts.web.browser import Cdp, chromium_page, screenshot_pages
from fleetpulse.contract.v1 import Component, DeviceKind, Factor, RiskScore, TicketState
from tests.alerts_support import NOW, T0, make_alert, make_inventory
from tests.harness import REPO, free_port, served
from tests.unit.test_tickets_api import PASSWORD, api_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


def populate(service: TicketService) -> None:
    sites = ["Town Hall", "Library", "Fire Station"]
    departments = ["Finance", "Culture", "Safety"]
    for n in range(9):
        kind = DeviceKind.PHONE if n % 4 == 3 else DeviceKind.LAPTOP
        service.apply_inventory(
            make_inventory(
                f"dev-{n:02d}",
                kind=kind,
                site=sites[n % 3],
                department=departments[n % 3],
                model="Fairphone 4" if kind is DeviceKind.PHONE else "ThinkPad T14 Gen 2",
            )
        )
        component = Component.BATTERY if n % 2 else Component.DISK
        risk = 0.5 + n * 0.055
        factors = [
            Factor(feature="health_ratio", value=0.62, contribution=0.4, text="battery holds 62% of design capacity")
            if component is Component.BATTERY
            else Factor(
                feature="reallocated_sectors", value=40 + n, contribution=0.4, text=f"{40 + n} reallocated sectors"
            )
        ]
        for hour in range(0, 24 * 14, 6):
            service.record_score(
                RiskScore(
                    device_id=f"dev-{n:02d}",
                    component=component,
                    risk=min(1.0, max(0.0, risk * hour / (24 * 14))),
                    model_name="m",
                    model_version="1",
                    report_seq=hour,
                    collected_at=T0 + timedelta(hours=hour),
                    scored_at=T0 + timedelta(hours=hour),
                )
            )
        service.apply_alert(
            make_alert(
                f"dev-{n:02d}",
                i=n,
                component=component,
                component_id="",
                risk=risk,
                days_to_failure=60 - n * 6,
                days_to_failure_low=40 - n * 4,
                days_to_failure_high=90 - n * 5,
                factors=factors,
                at=T0 + timedelta(days=13, hours=2 * n),  # spread out: independent failures, no storm
            ),
            NOW,
        )
    for n in range(5):  # a fleet-wide spike: same model, same main signal, within minutes
        service.apply_inventory(make_inventory(f"st-{n}", model="EliteBook 840 G8", site="Depot", department="IT"))
        service.apply_alert(
            make_alert(
                f"st-{n}",
                i=n,
                risk=0.52,
                days_to_failure=None,
                days_to_failure_low=None,
                days_to_failure_high=None,
                factors=[Factor(feature="udma_crc_errors", value=900, contribution=0.5, text="900 CRC errors")],
                at=T0 + timedelta(days=13, minutes=n),
            ),
            NOW,
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, TicketStore]]:
    data = api_settings(f"sqlite:///{tmp_path}/tickets.db").model_dump()
    data["api"]["session"]["cookie_secure"] = True  # as the demo serves it: Chromium keeps Secure cookies on loopback
    settings = AlertSettings.model_validate(data).model_copy(update={"storm": StormPolicy(threshold=4)})
    store = TicketStore.open(settings.store_url)
    populate(TicketService(store, settings))
    port = free_port()
    with served(create_app(settings, store), port):
        yield f"http://127.0.0.1:{port}", store
    store.close()


async def drive(base: str, ws_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=64 * 2**20) as ws:
        cdp = Cdp(ws)
        await cdp.start()
        await cdp.navigate(base + "/")
        seen["login_redirect"] = await cdp.js("location.pathname")
        await cdp.log_in(base, "fm", PASSWORD)

        await cdp.navigate(base + "/")
        seen["title"] = await cdp.js("document.title")
        seen["urgencies"] = await cdp.js(
            "[...document.querySelectorAll('#queue tbody .urgency')].map(e => e.textContent)"
        )
        seen["risks"] = await cdp.js(
            "[...document.querySelectorAll('#queue tbody td.num:nth-of-type(5)')].map(e => e.textContent)"
        )
        seen["devices"] = await cdp.js("[...document.querySelectorAll('#queue tbody tr')].map(r => r.dataset.ticket)")
        seen["shot_queue"] = await cdp.screenshot(ARTIFACTS / "tickets-queue.png")

        await cdp.navigate(base + "/?site=Library&component=battery")
        seen["filtered"] = await cdp.js(
            "[...document.querySelectorAll('#queue tbody tr')].map(r => r.children[2].textContent.trim())"
        )
        seen["filter_selected"] = await cdp.js("document.querySelector('select[name=site]').value")
        seen["csv"] = await cdp.js(
            "fetch(document.getElementById('export').href, {credentials: 'same-origin'}).then(r => r.text())"
        )
        seen["shot_filtered"] = await cdp.screenshot(ARTIFACTS / "tickets-filtered.png")

        await cdp.navigate(base + "/")
        await cdp.js(
            "document.querySelectorAll('input.pick')[0].click(); document.querySelectorAll('input.pick')[1].click()"
        )
        seen["button"] = await cdp.js("document.getElementById('bulk-approve').textContent")
        await cdp.js("document.getElementById('bulk-approve').click()")
        seen["status"] = await cdp.wait_for(
            "document.getElementById('bulk-status').textContent.startsWith('Approved') && "
            "document.getElementById('bulk-status').textContent"
        )
        seen["approved_rows"] = await cdp.js(
            "[...document.querySelectorAll('#queue tbody tr.state-approved')].map(r => r.dataset.ticket)"
        )
        seen["shot_approved"] = await cdp.screenshot(ARTIFACTS / "tickets-bulk-approved.png")

        seen["storms"] = await cdp.js("[...document.querySelectorAll('section.storms li')].map(e => e.innerText)")
        await cdp.js("document.querySelector('section.storms a').click()")
        await cdp.wait_for("location.search.includes('storm_group') && document.readyState === 'complete'")
        seen["storm_rows"] = await cdp.js(
            "[...document.querySelectorAll('#queue tbody tr')].map(r => r.children[2].textContent.trim())"
        )

        await cdp.navigate(base + "/devices/dev-08")
        seen["plot_lines"] = await cdp.js("document.querySelectorAll('#history svg polyline').length")
        seen["plot_points"] = await cdp.js(
            "document.querySelector('#history svg polyline').getAttribute('points').split(' ').length"
        )
        seen["device_text"] = await cdp.js("document.querySelector('main').innerText")
        seen["shot_device"] = await cdp.screenshot(ARTIFACTS / "tickets-device.png")
        await cdp.js(
            "window.beforeReload = true; const f = document.querySelector('form.transition'); f.elements.to.value = 'ordered';"
            "f.elements.note.value = 'ordered battery from vendor'; f.querySelector('button').click()"
        )
        await cdp.wait_for("!window.beforeReload && document.readyState === 'complete'")  # reloads after a change
        seen["device_state"] = await cdp.js("document.querySelector('article.ticket .state').textContent")
        seen["errors"] = cdp.errors()
    return seen


def test_fleet_manager_page_in_headless_chromium(server: tuple[str, TicketStore]) -> None:
    base, store = server
    with chromium_page() as ws_url:
        seen = asyncio.run(drive(base, ws_url))

    assert seen["login_redirect"] == "/auth/login"  # the login form, never the browser's basic-auth pop-up
    assert seen["title"] == "Ticket queue · fleetpulse"
    ranks = {"critical": 3, "high": 2, "medium": 1, "low": 0}
    assert len(seen["urgencies"]) == 14
    assert [ranks[u] for u in seen["urgencies"]] == sorted((ranks[u] for u in seen["urgencies"]), reverse=True)
    assert seen["filtered"] == ["dev-07", "dev-01"]  # Library batteries, most urgent first
    assert seen["filter_selected"] == "Library"
    csv_lines = seen["csv"].strip().splitlines()
    assert csv_lines[0].startswith("id,state,urgency,device_id")
    assert len(csv_lines) == 3

    assert seen["button"] == "Approve selected (2)"
    assert seen["status"] == "Approved 2 ticket(s)."
    approved = [int(t) for t in seen["approved_rows"]]
    assert approved == [int(t) for t in seen["devices"][:2]]
    for ticket_id in approved:  # approved in the browser (dev-08 was then ordered on its device page)
        assert store.get_ticket(ticket_id).state in (TicketState.APPROVED, TicketState.ORDERED)  # type: ignore[union-attr]
        transitions = [(e.actor, e.to_state) for e in store.ticket_events(ticket_id) if e.kind == "transition"]
        assert transitions[0] == ("fm", "approved")

    assert len(seen["storms"]) == 1
    assert "5 EliteBook 840 G8 devices" in seen["storms"][0]
    assert "udma_crc_errors" in seen["storms"][0]
    assert sorted(seen["storm_rows"]) == [f"st-{n}" for n in range(5)]
    assert seen["device_state"] == "ordered"
    dev08 = next(t for t in store.list_tickets() if t.device_id == "dev-08")
    last = store.ticket_events(dev08.id)[-1]
    assert (last.actor, last.from_state, last.to_state, last.note) == (
        "fm",
        "approved",
        "ordered",
        "ordered battery from vendor",
    )
    assert seen["plot_lines"] == 1
    assert seen["plot_points"] == 14 * 4  # one point per 6 h over 14 days, the 1 h downsampling keeps all
    assert "Fire Station" in seen["device_text"]
    assert "Failure risk history" in seen["device_text"]
    assert seen["errors"] == []
    for key in ("shot_queue", "shot_filtered", "shot_approved", "shot_device"):
        assert seen[key].stat().st_size > 10_000, key


def test_demo_screenshot_helper(server: tuple[str, TicketStore]) -> None:
    base, _ = server
    shots = screenshot_pages({"demo-queue": base + "/"}, ARTIFACTS, "it", PASSWORD)
    assert shots["demo-queue"].stat().st_size > 10_000
