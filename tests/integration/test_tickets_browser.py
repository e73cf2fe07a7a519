"""The fleet-manager page in real headless Chromium (Debian package), driven over the DevTools protocol.

Checks what a fleet manager sees and does: the queue sorted by urgency, filters, bulk approve
(clicks, the API call, the page update and the audit trail), CSV export, the device page with
its SVG history plot, and no JavaScript or CSP errors. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.contract.v1 import Component, DeviceKind, Factor, RiskScore, TicketState
from tests.alerts_support import NOW, T0, make_alert, make_inventory
from tests.harness import REPO, free_port
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
                at=T0 + timedelta(days=13),
            ),
            NOW,
        )


class Cdp:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    async def wait_event(self, method: str, within_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            message = await self.ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
            self.events.append(message)

    async def navigate(self, url: str) -> None:
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        await self.send("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def js(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, within_s: float = 15) -> Any:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))
        return path

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(event["params"])[:500])
            if event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                found.append(event["params"]["entry"]["text"])
        return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, TicketStore]]:
    settings = api_settings(f"sqlite:///{tmp_path}/tickets.db")
    store = TicketStore.open(settings.store_url)
    populate(TicketService(store, settings))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(settings, store), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store
    uv.should_exit = True
    thread.join(10)
    store.close()


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    """Headless Chromium with a DevTools port; yields the page's websocket URL."""
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1400,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().count("\n") >= 1):
            assert proc.poll() is None, "chromium exited"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(active.read_text().splitlines()[0])
        targets: list[dict[str, Any]] = []
        while not targets:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                targets = [t for t in json.load(answer) if t["type"] == "page"]
        yield str(targets[0]["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def drive(base: str, ws_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    auth = "Basic " + base64.b64encode(f"fm:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=64 * 2**20) as ws:
        cdp = Cdp(ws)
        for domain in ("Page", "Runtime", "Log", "Network"):
            await cdp.send(f"{domain}.enable")
        await cdp.send("Network.setExtraHTTPHeaders", headers={"Authorization": auth})
        await cdp.send("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)

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

        await cdp.navigate(base + "/devices/dev-08")
        seen["plot_lines"] = await cdp.js("document.querySelectorAll('#history svg polyline').length")
        seen["plot_points"] = await cdp.js(
            "document.querySelector('#history svg polyline').getAttribute('points').split(' ').length"
        )
        seen["device_text"] = await cdp.js("document.querySelector('main').innerText")
        seen["shot_device"] = await cdp.screenshot(ARTIFACTS / "tickets-device.png")
        seen["errors"] = cdp.errors()
    return seen


def test_fleet_manager_page_in_headless_chromium(server: tuple[str, TicketStore], chromium: str) -> None:
    base, store = server
    seen = asyncio.run(drive(base, chromium))

    assert seen["title"] == "Ticket queue · fleetpulse"
    ranks = {"critical": 3, "high": 2, "medium": 1, "low": 0}
    assert len(seen["urgencies"]) == 9
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
    for ticket_id in approved:
        assert store.get_ticket(ticket_id).state is TicketState.APPROVED  # type: ignore[union-attr]
        last = store.ticket_events(ticket_id)[-1]
        assert (last.actor, last.to_state) == ("fm", "approved")

    assert seen["plot_lines"] == 1
    assert seen["plot_points"] == 14 * 4  # one point per 6 h over 14 days, the 1 h downsampling keeps all
    assert "Fire Station" in seen["device_text"]
    assert "Failure risk history" in seen["device_text"]
    assert seen["errors"] == []
    for key in ("shot_queue", "shot_filtered", "shot_approved", "shot_device"):
        assert seen[key].stat().st_size > 10_000, key
