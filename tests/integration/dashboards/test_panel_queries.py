"""Every dashboard query runs on real InfluxDB 1.6.7 (Debian) against sink-format data and returns rows.

The data is written as the line protocol ``fleetpulse.streams.points`` produces;
Grafana's macros and template variables are replaced the way Grafana would
(``$timeFilter`` as epoch-millisecond bounds, ``$__interval`` as a duration,
'All' as the regex ``.*``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fleetpulse.dashboards.build import build_all
from fleetpulse.dashboards.sample import DRILL_DEVICE, END, SITES, START, fleet_points
from fleetpulse.dashboards.schema import EXTRA_MEASUREMENTS

pytestmark = pytest.mark.integration

ALL = ".*"
SELECTIONS = {
    "all": {"site": ALL, "device_model": ALL, "worker": ALL, "model_name": ALL, "component": ALL},
    "one": {
        "site": SITES[1],
        "device_model": "Latitude 7420",
        "worker": "worker-1",
        "model_name": "hazard-gbm",
        "component": "disk",
    },
}


def _queries() -> list[tuple[str, str, str]]:
    """(dashboard, where, query) for every panel target, variable and annotation."""
    found = []
    for name, dashboard in build_all().items():
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                found.append((name, f"panel {panel['title']!r} {target['refId']}", target["query"]))
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                found.append((name, f"variable {var['name']}", var["query"]))
        for anno in dashboard.get("annotations", {}).get("list", []):
            found.append((name, f"annotation {anno['name']}", anno["query"]))
    return found


QUERIES = _queries()


def substitute(query: str, selection: dict[str, str]) -> str:
    start_ms = int(START.timestamp() * 1000)
    end_ms = int(END.timestamp() * 1000)
    values = {
        "timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
        "__interval": "1h",
        "threshold": "0.5",
        "device_id": DRILL_DEVICE,
        **selection,
    }

    def repl(match: re.Match[str]) -> str:
        key = match.group(1) or match.group(2)
        if key not in values:
            raise KeyError(f"no test value for Grafana variable ${key} in: {query}")
        return values[key]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, query)


@pytest.fixture(scope="module")
def loaded_db(influxdb1_url: str) -> Iterator[tuple[str, str]]:
    database = f"fp_dash_{uuid.uuid4().hex[:8]}"
    lines = [p.to_line_protocol() for p in fleet_points()]
    with httpx.Client(base_url=influxdb1_url, timeout=30) as client:
        client.post("/query", params={"q": f'CREATE DATABASE "{database}"'}).raise_for_status()
        for i in range(0, len(lines), 5000):
            resp = client.post(
                "/write", params={"db": database, "precision": "ns"}, content="\n".join(lines[i : i + 5000])
            )
            assert resp.status_code == 204, resp.text
        yield influxdb1_url, database
        client.post("/query", params={"q": f'DROP DATABASE "{database}"'})


def run(url: str, database: str, query: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{url}/query", params={"db": database, "q": query, "epoch": "ms"}, timeout=30)
    resp.raise_for_status()
    result = resp.json()["results"][0]
    if "error" in result:
        raise AssertionError(f"InfluxDB error {result['error']!r} for: {query}")
    return list(result.get("series", []))


def test_sample_covers_every_measurement_the_dashboards_read() -> None:
    points = fleet_points()
    measurements = {p.measurement for p in points}
    read = {m for _, _, query in QUERIES for m in re.findall(r'FROM "(\w+)"', query)}
    assert read <= measurements, read - measurements
    for extra in EXTRA_MEASUREMENTS:
        sample = next(p for p in points if p.measurement == extra.name)
        assert (set(sample.tags), set(sample.fields)) == (set(extra.tags), set(extra.fields)), extra.name


@pytest.mark.parametrize("selection", sorted(SELECTIONS))
@pytest.mark.parametrize(("dashboard", "where", "query"), QUERIES, ids=[f"{d}:{w}" for d, w, _ in QUERIES])
def test_query_returns_rows(loaded_db: tuple[str, str], dashboard: str, where: str, query: str, selection: str) -> None:
    url, database = loaded_db
    series = run(url, database, substitute(query, SELECTIONS[selection]))
    rows = [row for s in series for row in s.get("values", [])]
    assert rows, f"{dashboard} {where}: no rows for {substitute(query, SELECTIONS[selection])}"
    value_columns = [
        [v for col, v in zip(s["columns"], row, strict=True) if col != "time"] for s in series for row in s["values"]
    ]
    assert any(v is not None for values in value_columns for v in values), f"{dashboard} {where}: only nulls"
