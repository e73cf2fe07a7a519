"""Fleet rollup: the current at-risk picture, computed once and stored, instead of by every viewer.

Fleet-wide panels that need "each component's latest score" must visit every device's
series; with ~100,000 devices and dashboards refreshing every minute for every
viewer, that cost multiplies. The rollup runs that query on a schedule and writes
the few aggregated ``fleet`` points (see ``schema.FLEET``) the panels then read.
It speaks only InfluxDB's v1-compatible ``/query`` and ``/write`` endpoints, which
1.x, 2.x (DBRP) and 3.x all serve.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from fleetpulse.dashboards.schema import FLEET, FLEET_DEVICES, FLEET_SCORES, SILENT_DEVICE, TICKET
from fleetpulse.dashboards.settings import InfluxSourceSettings
from fleetpulse.streams.points import Point

if TYPE_CHECKING:
    from fleetpulse.alerts.store.repository import SilentDevice, TicketCount

log = logging.getLogger(__name__)
WINDOW = timedelta(hours=24)
GROUP = ("component", "site", "device_model")
DEVICE_GROUP = ("site", "device_model")
SCORE_GROUP = ("component", "role", "model_name", "model_version")


class InfluxQL(Protocol):
    def query(self, text: str) -> list[dict[str, Any]]: ...

    def write(self, lines: list[str]) -> None: ...


class InfluxV1Api:
    """InfluxDB's v1-compatible HTTP API with the configured credentials."""

    def __init__(self, settings: InfluxSourceSettings, timeout_s: float = 120.0) -> None:
        headers, auth = {}, None
        if settings.token is not None:
            headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
        elif settings.username is not None:
            auth = (settings.username, settings.password.get_secret_value() if settings.password else "")
        self._client = httpx.Client(
            base_url=settings.url, headers=headers, auth=auth, timeout=timeout_s, verify=not settings.tls_skip_verify
        )
        self._db = settings.database

    def query(self, text: str) -> list[dict[str, Any]]:
        resp = self._client.post("/query", params={"db": self._db, "epoch": "ms"}, data={"q": text})
        resp.raise_for_status()
        result = resp.json()["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxDB refused the rollup query: {result['error']}")
        return list(result.get("series", []))

    def write(self, lines: list[str]) -> None:
        if lines:
            self._client.post("/write", params={"db": self._db}, content="\n".join(lines)).raise_for_status()

    def close(self) -> None:
        self._client.close()


def _window(at: datetime) -> str:
    return f"time > {int((at - WINDOW).timestamp() * 1000)}ms AND time <= {int(at.timestamp() * 1000)}ms"


def _latest_scores(at: datetime) -> str:
    return (
        f'SELECT last("risk") AS "risk" FROM "risk" WHERE {_window(at)} AND "role" = \'champion\' '
        'GROUP BY "device_id", "component", "component_id", "site", "device_model"'
    )


def score_distribution_query(at: datetime) -> str:
    """Per component and model version/role: count, mean and percentiles of the latest scores."""
    by = ", ".join(f'"{tag}"' for tag in SCORE_GROUP)
    latest = f'SELECT last("risk") AS "risk" FROM "risk" WHERE {_window(at)} GROUP BY "device_id", "component_id", {by}'
    stats = ", ".join(f'percentile("risk", {n}) AS "p{n}"' for n in (50, 90, 99))
    return f'SELECT count("risk") AS "components", mean("risk") AS "mean", {stats} FROM ({latest}) GROUP BY {by}'


def score_points(series: list[dict[str, Any]], at: datetime) -> list[Point]:
    points = []
    for key, row in sorted(_by_group(series, SCORE_GROUP).items()):
        fields = {"components": int(row["components"]), **{f: float(row[f]) for f in ("mean", "p50", "p90", "p99")}}
        points.append(Point(FLEET_SCORES.name, dict(zip(SCORE_GROUP, key, strict=True)), fields, at))
    return points


def device_queries(at: datetime, threshold: float) -> tuple[str, str]:
    """(per site/model: devices that reported, devices with any component at or above the threshold)."""
    reporting = (
        'SELECT count("n") AS "reporting" FROM (SELECT last("collector_errors") AS "n" FROM "device" '
        f'WHERE {_window(at)} GROUP BY "device_id", "site", "device_model") GROUP BY "site", "device_model"'
    )
    worst = f'SELECT max("risk") AS "risk" FROM ({_latest_scores(at)}) GROUP BY "device_id", "site", "device_model"'
    at_risk = f'SELECT count("risk") AS "at_risk" FROM ({worst}) WHERE "risk" >= {threshold!r} GROUP BY "site", "device_model"'
    return reporting, at_risk


def rollup_queries(at: datetime, threshold: float) -> tuple[str, str]:
    """(per-group count/mean/max of the latest scores, per-group count of those at or above the threshold)."""
    inner = _latest_scores(at)
    by = ", ".join(f'"{tag}"' for tag in GROUP)
    stats = f'SELECT count("risk") AS "components", mean("risk") AS "mean_risk", max("risk") AS "max_risk" FROM ({inner}) GROUP BY {by}'
    at_risk = f'SELECT count("risk") AS "at_risk" FROM ({inner}) WHERE "risk" >= {threshold!r} GROUP BY {by}'
    return stats, at_risk


def _by_group(series: list[dict[str, Any]], group: tuple[str, ...] = GROUP) -> dict[tuple[str, ...], dict[str, Any]]:
    out = {}
    for s in series:
        tags: Mapping[str, str] = s.get("tags", {})
        row = dict(zip(s["columns"], s["values"][0], strict=True))
        out[tuple(tags.get(t, "") for t in group)] = row
    return out


def device_points(reporting: list[dict[str, Any]], at_risk: list[dict[str, Any]], at: datetime) -> list[Point]:
    """One ``fleet_devices`` point per (site, hardware model) that reported."""
    risky = _by_group(at_risk, DEVICE_GROUP)
    points = []
    for key, row in sorted(_by_group(reporting, DEVICE_GROUP).items()):
        fields = {"reporting": int(row["reporting"]), "at_risk": int(risky.get(key, {}).get("at_risk", 0))}
        points.append(Point(FLEET_DEVICES.name, dict(zip(DEVICE_GROUP, key, strict=True)), fields, at))
    return points


def rollup_points(stats: list[dict[str, Any]], at_risk: list[dict[str, Any]], at: datetime) -> list[Point]:
    """One ``fleet`` point per (component, site, hardware model); groups with no risky component get 0."""
    risky = _by_group(at_risk)
    points = []
    for key, row in sorted(_by_group(stats).items()):
        fields = {
            "components": int(row["components"]),
            "at_risk": int(risky.get(key, {}).get("at_risk", 0)),
            "mean_risk": float(row["mean_risk"]),
            "max_risk": float(row["max_risk"]),
        }
        points.append(Point(FLEET.name, dict(zip(GROUP, key, strict=True)), fields, at))
    return points


def run_rollup(api: InfluxQL, at: datetime, threshold: float) -> list[Point]:
    """Compute and write the rollup for time ``at``; returns the points written."""
    stats_q, risk_q = rollup_queries(at, threshold)
    points = rollup_points(api.query(stats_q), api.query(risk_q), at)
    reporting_q, devices_at_risk_q = device_queries(at, threshold)
    points += device_points(api.query(reporting_q), api.query(devices_at_risk_q), at)
    points += score_points(api.query(score_distribution_query(at)), at)
    api.write([p.to_line_protocol() for p in points])
    log.info("fleet rollup written", extra={"points": len(points), "at": at.isoformat()})
    return points


def ticket_points(counts: list[TicketCount], at: datetime) -> list[Point]:
    """The ``ticket`` snapshot (``schema.TICKET``) from the ticket store's counts: ticket outcomes per
    component are the honest precision signal on the model-quality dashboard."""
    return [
        Point(
            TICKET.name,
            {"component": c.component, "state": c.state, "outcome": c.outcome, "site": c.site},
            {"count": c.count},
            at,
        )
        for c in counts
    ]


def silent_device_points(devices: list[SilentDevice], at: datetime) -> list[Point]:
    """The ``silent_device`` snapshot (``schema.SILENT_DEVICE``): the devices behind the coverage alert, by name."""
    return [
        Point(
            SILENT_DEVICE.name,
            {"device_id": d.device_id, "site": d.site, "device_model": d.device_model},
            {"hours_silent": round((at - d.last_inventory_at).total_seconds() / 3600, 1)},
            at,
        )
        for d in devices
    ]
