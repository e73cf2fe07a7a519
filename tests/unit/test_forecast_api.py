"""The parts forecast over the ticket store, through the API and page: every caller sees only its scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.auth import hash_secret
from fleetpulse.alerts.forecast import ForecastCache
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.cli import app
from fleetpulse.compat import UTC
from fleetpulse.contract import Component, RiskScore
from fleetpulse.models.forecast import shift_odds
from fleetpulse.models.forecast_rows import ForecastRow
from fleetpulse.models.forecast_settings import ForecastSettings
from tests.alerts_support import NOW, make_inventory, store_url
from tests.harness import modules_loaded_by

__all__ = ["store_url"]  # fixture

PASSWORD = "correct horse battery staple"
HASH = hash_secret(PASSWORD)


def settings_for(url: str) -> AlertSettings:
    users = [
        {"name": "lead", "role": "fleet_manager", "password_hash": HASH, "sites": ["Town Hall"]},
        {"name": "fm", "role": "fleet_manager", "password_hash": HASH},
    ]
    return AlertSettings.model_validate(
        {"store_url": url, "api": {"users": users, "local_login": True, "session": {"cookie_secure": False}}}
    )


def score(
    device_id: str,
    risk: float,
    component: Component = Component.DISK,
    age: timedelta = timedelta(0),
    **extra: object,
) -> RiskScore:
    return RiskScore.model_validate(
        {
            "device_id": device_id,
            "component": component,
            "component_id": "sn1" if component is Component.DISK else "",
            "risk": risk,
            "model_name": "disk-gbm",
            "model_version": "1",
            "report_seq": 1,
            "collected_at": NOW - age,
            "scored_at": NOW - age,
            **extra,
        }
    )


@pytest.fixture
def client(store_url: str) -> Iterator[TestClient]:
    settings = settings_for(store_url)
    store = TicketStore.open(store_url)
    svc = TicketService(store, settings)
    svc.apply_inventory(make_inventory("pc-1", site="Town Hall"))
    svc.apply_inventory(make_inventory("pc-2", site="Library", model="OptiPlex 7090"))
    svc.apply_inventory(make_inventory("pc-3", site="Library", model="OptiPlex 7090"))
    svc.record_scores([score("pc-1", 0.2), score("pc-2", 0.6), score("pc-3", 0.9), score("pc-9", 0.5)])
    svc.record_scores([score("pc-1", 0.4, Component.THERMAL, age=timedelta(days=60))])  # stale: left out
    svc.record_scores([score("pc-3", 0.9, Component.BATTERY, days_to_failure=0.0)])  # below 60 %: due now
    with TestClient(create_app(settings, store, clock=lambda: NOW)) as test_client:
        yield test_client
    store.close()


def rows(client: TestClient, user: str, **params: str) -> list[dict[str, object]]:
    response = client.get("/api/v1/forecast", params=params, auth=(user, PASSWORD))
    assert response.status_code == 200, response.text
    body: list[dict[str, object]] = response.json()
    return body


def test_fleet_manager_of_every_site_sees_the_whole_fleet(client: TestClient) -> None:
    got = rows(client, "fm")
    assert {(r["site"], r["window_days"]) for r in got} == {
        (s, w) for s in ("Town Hall", "Library") for w in (30, 90)
    }  # pc-9 is not in the register: no parts ordered for it
    library = next(r for r in got if r["site"] == "Library" and r["window_days"] == 30 and r["component"] == "disk")
    assert library["parts"] == 2
    odds = ForecastSettings().disk_odds_factor
    assert library["expected"] == pytest.approx(shift_odds(0.6, odds) + shift_odds(0.9, odds), abs=1e-3)
    assert library["hardware_model"] == "OptiPlex 7090"
    assert library["component"] == "disk"
    assert all(r["component"] != "thermal" for r in got)  # its only score is older than max_score_age_days
    battery = [r for r in got if r["component"] == "battery"]
    assert [(r["site"], r["expected"], r["low"], r["high"]) for r in battery] == [("Library", 1.0, 1, 1)] * 2
    assert battery[0]["co2e_avoided_kg"] == pytest.approx(250.0 - 8.0)  # laptop kept, battery swapped


def test_site_lead_asking_for_another_sites_forecast_gets_nothing_of_it(client: TestClient) -> None:
    """The attack: a site lead of Town Hall asks for the Library's forecast, directly and via filters."""
    own = rows(client, "lead")
    assert {r["site"] for r in own} == {"Town Hall"}
    assert sum(r["parts"] for r in own if r["window_days"] == 30) == 1  # not the Library's or unknown devices
    assert rows(client, "lead", site="Library") == []
    assert rows(client, "lead", model="OptiPlex 7090") == []
    page = client.get("/", auth=("lead", PASSWORD))
    assert page.status_code == 200
    assert "Library" not in page.text.split('id="forecast"')[1]


def test_a_cached_forecast_never_crosses_scopes_and_expires() -> None:
    """The fleet manager's forecast is cached first; the site lead's answer must still be its own."""
    cache = ForecastCache(ttl_s=300)
    computed: list[str] = []

    def compute(who: str) -> list[ForecastRow]:
        computed.append(who)
        return [
            ForecastRow(
                component=Component.DISK,
                site=who,
                hardware_model="m",
                window_days=30,
                parts=1,
                expected=0.1,
                low=0,
                high=1,
                coverage=0.9,
                co2e_avoided_kg=0.0,
            )
        ]

    everyone = cache.get(None, frozenset(), NOW, lambda: compute("all"))
    lead = cache.get({"Town Hall"}, frozenset(), NOW, lambda: compute("Town Hall"))
    assert [r.site for r in everyone] == ["all"]
    assert [r.site for r in lead] == ["Town Hall"]
    assert cache.get({"Town Hall"}, frozenset(), NOW + timedelta(minutes=4), lambda: compute("again")) == lead
    assert cache.get({"Town Hall"}, frozenset({"IT"}), NOW, lambda: compute("department"))[0].site == "department"
    cache.get({"Town Hall"}, frozenset(), NOW + timedelta(minutes=6), lambda: compute("expired"))
    assert computed == ["all", "Town Hall", "department", "expired"]
    assert ForecastCache(ttl_s=0).get(None, frozenset(), NOW, lambda: compute("uncached")) is not None
    assert ForecastCache(ttl_s=0).get(None, frozenset(), NOW, lambda: compute("uncached")) is not None
    assert computed[-2:] == ["uncached", "uncached"]


def test_forecast_needs_a_role_and_valid_filters(client: TestClient) -> None:
    assert client.get("/api/v1/forecast").status_code == 401
    assert client.get("/api/v1/forecast", params={"component": "gpu"}, auth=("fm", PASSWORD)).status_code == 422
    assert client.get("/api/v1/forecast", params={"site": "x" * 500}, auth=("fm", PASSWORD)).status_code == 422
    only = rows(client, "fm", component="disk", site="Library")
    assert {r["site"] for r in only} == {"Library"}


def test_cli_prints_the_forecast_from_the_store(tmp_path: Path) -> None:
    """``fleetpulse forecast`` reads the same latest scores as the API (here: scored a minute ago)."""
    url = f"sqlite:///{tmp_path}/tickets.db"
    store = TicketStore.open(url)
    svc = TicketService(store, settings_for(url))
    svc.apply_inventory(make_inventory("pc-1", site="Town Hall"))
    svc.apply_inventory(make_inventory("pc-2", site="Library", model="OptiPlex 7090"))
    now = datetime.now(UTC) - timedelta(minutes=1)
    svc.record_scores(
        [
            score("pc-1", 0.2).model_copy(update={"collected_at": now}),
            score("pc-2", 0.9).model_copy(update={"collected_at": now}),
        ]
    )
    store.close()
    runner = CliRunner(env={"FLEETPULSE_ALERTS__STORE_URL": url})
    table = runner.invoke(app, ["forecast"])
    assert table.exit_code == 0, table.output
    assert "OptiPlex 7090" in table.output
    assert "90 % prediction interval" in table.output
    as_json = runner.invoke(app, ["forecast", "--format", "json", "--site", "Library", "--component", "disk"])
    rows = json.loads(as_json.stdout)
    assert {(r["site"], r["window_days"]) for r in rows} == {("Library", 30), ("Library", 90)}
    assert runner.invoke(app, ["forecast", "--component", "gpu"]).exit_code == 2


def test_starting_the_api_loads_no_numeric_library() -> None:
    """numpy and scipy (~100 MB resident) come with the first forecast, not with every API process:
    the request-body memory test measures the server as it starts."""
    loaded = modules_loaded_by("from fleetpulse.alerts.api import create_app\n")
    assert not {"numpy", "scipy", "sklearn", "pandas"} & {name.split(".")[0] for name in loaded}


def test_attack_a_pc_inventing_disk_serials_orders_no_more_parts_than_it_can_hold(store_url: str) -> None:
    """A PC reports a fresh disk serial every few minutes, each scored once (never alerted): every one used
    to count as a part, 1,600 'disks' from one PC in a day. A device counts at most the disks it is tracked
    with, the most recently scored."""
    from fleetpulse.alerts.forecast import fleet_forecast
    from fleetpulse.models.state import MAX_DISKS

    store = TicketStore.open(store_url)
    try:
        svc = TicketService(store, settings_for(store_url))
        svc.apply_inventory(make_inventory("pc-1", site="Town Hall"))
        invented = [score("pc-1", 0.5, component_id=f"evil-{n}", age=timedelta(minutes=n)) for n in range(200)]
        svc.record_scores(invented)
        disk = next(r for r in fleet_forecast(store, ForecastSettings(), NOW) if r.component is Component.DISK)
    finally:
        store.close()
    assert disk.parts == MAX_DISKS


def test_attack_a_pc_minting_device_ids_orders_no_parts_for_them(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``[streams] unknown_devices = "accept"`` one PC holding the agent credential enrolled 300 invented
    ids with 8 failing disks each: the forecast counted 2,400 disks under site "unknown". Only devices in IT's
    register count, and the fleet-wide forecast logs how many it left out."""
    from fleetpulse.alerts.forecast import fleet_forecast

    store = TicketStore.open(store_url)
    try:
        svc = TicketService(store, settings_for(store_url))
        svc.apply_inventory(make_inventory("pc-1", site="Town Hall"))
        svc.record_scores([score("pc-1", 0.5)])
        before = fleet_forecast(store, ForecastSettings(), NOW)
        minted = [
            score(f"minted-{n}", 0.99, component_id=f"d{k}", age=timedelta(minutes=1))
            for n in range(300)
            for k in range(8)
        ]
        svc.record_scores(minted)
        with caplog.at_level("INFO", logger="fleetpulse.alerts.forecast"):
            after = fleet_forecast(store, ForecastSettings(), NOW)
    finally:
        store.close()
    assert after == before
    assert [(r.site, r.window_days, r.parts) for r in after if r.component is Component.DISK] == [
        ("Town Hall", 30, 1),
        ("Town Hall", 90, 1),
    ]
    (record,) = [r for r in caplog.records if "outside the register" in r.getMessage()]
    assert record.fields == {"devices": 300}  # type: ignore[attr-defined]
