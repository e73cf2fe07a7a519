"""Generated dashboard JSON: deterministic, committed, valid for the SDK's types, and on-schema."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("grafana_foundation_sdk", reason="the dashboards' SDK is published for Python 3.11+ only")

from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from fleetpulse.cli import app
from fleetpulse.dashboards import influxql
from fleetpulse.dashboards.build import JSON_DIR, build_all, render
from fleetpulse.dashboards.influxql import InfluxQLQuery
from fleetpulse.dashboards.queries import dashboard_queries, fill_macros
from fleetpulse.dashboards.schema import EXTRA_MEASUREMENTS
from fleetpulse.streams import points

DASHBOARDS = build_all()


def _schema() -> dict[str, set[str]]:
    """measurement -> tags and fields, from points.py's documented mapping plus the extra measurements."""
    doc = points.__doc__ or ""
    schema: dict[str, set[str]] = {}
    for match in re.finditer(r"^  (\w+)\s+tags ([\w ]+)\n\s+fields ([\w ]+(?:\n {18}[\w ]+)*)", doc, re.MULTILINE):
        schema[match.group(1)] = set(match.group(2).split()) | set(match.group(3).split())
    for m in EXTRA_MEASUREMENTS:
        schema[m.name] = set(m.tags) | set(m.fields)
    return schema


SCHEMA = _schema()


def test_schema_parsed_from_points_docstring() -> None:
    assert {"device", "disk", "battery", "risk", "alert", "pipeline", "drift", "ticket"} <= set(SCHEMA)
    assert "mem_uncorrectable" in SCHEMA["device"]
    assert "smart_failed" in SCHEMA["disk"]


def test_four_dashboards_with_fleetpulse_uids() -> None:
    uids = sorted(d["uid"] for d in DASHBOARDS.values())
    assert uids == ["fleetpulse-device", "fleetpulse-fleet-health", "fleetpulse-model-quality", "fleetpulse-pipeline"]
    for name, dashboard in DASHBOARDS.items():
        assert name == f"{dashboard['uid']}.json"
        assert "fleetpulse" in dashboard["tags"]


def test_committed_json_equals_generated() -> None:
    committed = {p.name for p in JSON_DIR.glob("*.json")}
    assert committed == set(DASHBOARDS), "run: fleetpulse dashboards build"
    for name, dashboard in DASHBOARDS.items():
        assert (JSON_DIR / name).read_text(encoding="utf-8") == render(dashboard), f"{name} stale"


def test_generation_is_deterministic() -> None:
    assert {k: render(v) for k, v in build_all().items()} == {k: render(v) for k, v in DASHBOARDS.items()}


def test_build_check_command(tmp_path: Any) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["dashboards", "build", "--check"]).exit_code == 0
    assert runner.invoke(app, ["dashboards", "build", "--check", "--out", str(tmp_path)]).exit_code == 1
    assert runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path)]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DASHBOARDS)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_json_decodes_into_sdk_types_without_loss(name: str) -> None:
    """Round trip through the SDK's generated models: unknown or mistyped keys would be dropped or fail."""
    cogplugins.register_default_plugins()
    influxql.register()
    raw = json.loads((JSON_DIR / name).read_text(encoding="utf-8"))
    model = dm.Dashboard.from_json(raw)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    # The SDK's AnnotationQuery only models Grafana's built-in source; InfluxDB fields are checked below.
    annotations = raw.pop("annotations", {})
    again.pop("annotations", None)
    assert again == raw
    panels = [p for p in model.panels or [] if not isinstance(p, dm.RowPanel)]
    assert len(panels) >= 8
    for panel in panels:
        assert isinstance(panel, dm.Panel)
        assert panel.datasource is not None
        assert panel.datasource.uid == "fleetpulse-influxdb"
        assert panel.targets, panel.title
        assert all(isinstance(t, InfluxQLQuery) for t in panel.targets), panel.title
    for anno in annotations.get("list", []):
        assert anno["query"] == anno["target"]["query"]
        assert anno["datasource"] == {"type": "influxdb", "uid": "fleetpulse-influxdb"}


def test_strict_target_decoding_rejects_non_influxql() -> None:
    with pytest.raises(ValueError, match="raw InfluxQL"):
        InfluxQLQuery.from_json({"refId": "A", "query": "", "rawQuery": True, "resultFormat": "table"})
    with pytest.raises(ValueError, match="unknown"):
        InfluxQLQuery.from_json({"refId": "A", "query": "SELECT 1", "rawQuery": True, "expr": "up"})


def _queries() -> list[str]:
    return [q.query for q in dashboard_queries(DASHBOARDS)]


def test_queries_use_only_schema_names() -> None:
    """Every quoted identifier is a measurement, tag, field or alias the query itself defines."""
    for query in _queries():
        measurements = set(re.findall(r'FROM "(\w+)"', query))
        assert measurements, query
        known = set().union(*(SCHEMA[m] for m in measurements)) | measurements
        aliases = set(re.findall(r'AS "([^"]+)"', query))
        for ident in re.findall(r'"([^"]+)"', query):
            assert ident in known or ident in aliases, f"{ident!r} not in schema of {measurements}: {query}"


def test_queries_avoid_influxql_newer_than_1_6() -> None:
    """Features InfluxDB 1.6 lacks (1.8+ and Flux) must not appear: the panels must run on 1.x, 2.x DBRP and 3.x."""
    for query in _queries():
        for construct in ("|>", "from(bucket", "SHOW TAG VALUES CARDINALITY", "tz("):
            assert construct not in query, query
        if "GROUP BY time(" in query:
            assert "$__interval" in query, query


def test_fill_macros_expands_like_grafana_and_refuses_unknown_variables() -> None:
    from datetime import datetime

    from fleetpulse.compat import UTC

    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    out = fill_macros(
        'SELECT 1 FROM "x" WHERE $timeFilter AND "a" =~ /^${site}$/ GROUP BY time($__interval)',
        start,
        end,
        "5m",
        {"site": ".*"},
    )
    assert (
        out
        == 'SELECT 1 FROM "x" WHERE time >= 1767225600000ms and time <= 1767312000000ms AND "a" =~ /^.*$/ GROUP BY time(5m)'
    )
    with pytest.raises(KeyError, match="device_id"):
        fill_macros("WHERE \"device_id\" = '$device_id'", start, end, "1h", {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
target_like = st.fixed_dictionaries(
    {},
    optional={
        "refId": json_values,
        "query": json_values,
        "rawQuery": json_values,
        "resultFormat": json_values,
        "datasource": json_values,
        "alias": json_values,
    },
)


@given(st.one_of(target_like, st.dictionaries(st.text(max_size=10), json_values, max_size=5)))
def test_target_decoding_never_fails_with_anything_but_value_error(data: dict[str, Any]) -> None:
    """Hand-edited or foreign dashboard JSON gets a clear ValueError, never a crash."""
    try:
        decoded = InfluxQLQuery.from_json(data)
    except ValueError:
        return
    assert decoded.to_json()["query"] == data["query"]
