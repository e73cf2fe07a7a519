"""Line-protocol injection against the real TSDBs: VictoriaMetrics (v2 write API) and InfluxDB 1.6.7.

Every point goes through the production sinks. What each TSDB stores is read back
(VictoriaMetrics' export, InfluxDB's ``SELECT * ... GROUP BY *``) and compared with
exactly the series the points name, so an injected line, tag or field shows up as a
difference.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceInventory, DiskHealth, HealthReport
from fleetpulse.streams.metrics import PipelineMetrics
from fleetpulse.streams.points import Point, UnencodablePoint, report_points, stored_field_key, stored_text
from fleetpulse.streams.settings import InfluxV1Sink, InfluxV2Sink
from fleetpulse.streams.sinks.influxdb1 import InfluxV1PointSink
from fleetpulse.streams.sinks.influxdb2 import InfluxV2PointSink
from fleetpulse.streams.sinks.lineprotocol import LineProtocolSink

pytestmark = pytest.mark.integration

HOSTILE = st.text(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from("\n\r\t\x00\x0b\x85\u2028\\,= \"'#")),
    min_size=1,
    max_size=30,
)
# (measurement, tags, fields) as the TSDB stores them; fields as {key: value}
Stored = tuple[str, frozenset[tuple[str, str]], frozenset[tuple[str, float]]]


def recent() -> datetime:
    """Inside VictoriaMetrics' retention, millisecond-aligned (it stores milliseconds)."""
    return (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)


def expected(points: Sequence[Point]) -> set[Stored]:
    return {
        (
            stored_text(p.measurement),
            frozenset((stored_text(k), stored_text(v)) for k, v in p.tags.items() if v),
            frozenset((stored_field_key(k), float(v)) for k, v in p.fields.items()),
        )
        for p in points
    }


def encodes(point: Point) -> bool:
    try:
        point.to_line_protocol()
    except UnencodablePoint:
        return False
    return True


async def write(sink: LineProtocolSink, points: Sequence[Point]) -> None:
    sink.add(points)
    await sink.flush()
    await sink.close()


def vm_points(url: str, selector: str, measurements: set[str]) -> set[Stored]:
    """VictoriaMetrics names each series ``<measurement>_<field>``; split by the measurements written."""
    httpx.get(f"{url}/internal/force_flush", timeout=10).raise_for_status()
    resp = httpx.get(f"{url}/api/v1/export", params={"match[]": selector}, timeout=30)
    resp.raise_for_status()
    grouped: dict[tuple[str, frozenset[tuple[str, str]], int], set[tuple[str, float]]] = {}
    for line in resp.text.splitlines():
        series = json.loads(line)
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        measurement = max((m for m in measurements if name.startswith(f"{m}_")), key=len)
        for value, ts in zip(series["values"], series["timestamps"], strict=True):
            key = (measurement, frozenset(labels.items()), ts)
            grouped.setdefault(key, set()).add((name.removeprefix(f"{measurement}_"), float(value)))
    return {(m, tags, frozenset(fields)) for (m, tags, _), fields in grouped.items()}


def metric_names(url: str) -> list[str]:
    resp = httpx.get(f"{url}/api/v1/label/__name__/values", timeout=30)
    resp.raise_for_status()
    return list(resp.json()["data"])


class InfluxDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"fp_lp_{uuid.uuid4().hex[:10]}"
        self.query(f'CREATE DATABASE "{self.name}"')

    def query(self, q: str) -> list[dict[str, Any]]:
        resp = httpx.post(f"{self.url}/query", params={"db": self.name, "q": q, "epoch": "ns"}, timeout=30)
        resp.raise_for_status()
        result = resp.json()["results"][0]
        assert "error" not in result, result
        return list(result.get("series", []))

    def sink(self) -> InfluxV1PointSink:
        return InfluxV1PointSink(InfluxV1Sink(url=self.url, database=self.name, timeout_s=10, retries=1))

    def stored(self) -> set[Stored]:
        out: set[Stored] = set()
        for series in self.query("SELECT * FROM /.*/ GROUP BY *"):
            tags = frozenset((k, v) for k, v in series.get("tags", {}).items() if v)
            for row in series["values"]:
                fields = frozenset(
                    (col, float(val))
                    for col, val in zip(series["columns"][1:], row[1:], strict=True)
                    if val is not None
                )
                out.add((series["name"], tags, fields))
        return out

    def series_count(self) -> int:
        return sum(len(s["values"]) for s in self.query("SHOW SERIES"))

    def drop(self) -> None:
        self.query(f'DROP DATABASE "{self.name}"')


@pytest.fixture
def influx_db(influxdb1_url: str) -> Iterator[InfluxDatabase]:
    db = InfluxDatabase(influxdb1_url)
    yield db
    db.drop()


@pytest.mark.slow
@settings(max_examples=40, phases=[Phase.explicit, Phase.generate])  # shrinking through real servers takes minutes
@given(
    hostile=st.lists(st.tuples(HOSTILE, st.dictionaries(HOSTILE, HOSTILE, max_size=4), HOSTILE), min_size=1, max_size=6)
)
@example(hostile=[('=\\," \n#', {"=": "\\", ",": "a\\", "\r": "\\\\"}, '"= \\'), ("\ud800", {"\t": "\x00"}, "\u2028")])
def test_arbitrary_text_round_trips_through_both_tsdbs_without_extra_series(
    victoria_metrics_url: str, influxdb1_url: str, hostile: list[tuple[str, dict[str, str], str]]
) -> None:
    run = uuid.uuid4().hex[:12]
    at = recent()
    points = [
        Point(
            f"lp{measurement}",
            {"run": run, "n": str(i), **{f"t{k}": v for k, v in tags.items()}},
            {f"f{field}": i + 0.5},
            at + timedelta(milliseconds=i),
        )
        for i, (measurement, tags, field) in enumerate(hostile)
    ]
    points.append(Point("honest", {"run": run, "n": "h", "device_id": "pc-1"}, {"risk": 0.25}, at))
    storable = [p for p in points if encodes(p)]  # e.g. keys "t\n" and "t\r" are both stored as "t\ufffd"
    want = expected(storable)

    db = InfluxDatabase(influxdb1_url)
    try:
        influx_sink, vm_sink = db.sink(), InfluxV2PointSink(InfluxV2Sink(url=victoria_metrics_url, retries=1))
        asyncio.run(write(influx_sink, points))
        asyncio.run(write(vm_sink, points))
        for sink in (influx_sink, vm_sink):
            unencodable = len(points) - len(storable)
            assert (sink.written, dict(sink.dropped)) == (
                len(storable),
                {"invalid": unencodable} if unencodable else {},
            )
        assert db.stored() == want
        assert db.series_count() == len(storable)  # nothing else was created: no injected series
    finally:
        db.drop()
    measurements = {stored_text(p.measurement) for p in storable}
    assert vm_points(victoria_metrics_url, f'{{run="{run}"}}', measurements) == want


def attack_fleet(prefix: str, at: datetime) -> tuple[list[Point], str, str]:
    """20 honest devices and one whose disk serial and MDM model carry line-protocol injections."""
    points: list[Point] = []
    for i in range(20):
        report = HealthReport(
            device_id=f"{prefix}-{i:02d}",
            seq=1,
            collected_at=at,
            kind="desktop",
            platform="windows",
            disks=[DiskHealth(name="PhysicalDrive0", serial_hash=f"s{i}", kind="ssd", reallocated_sectors=i)],
        )
        points += report_points(report, DeviceInventory(device_id=report.device_id, kind="desktop", updated_at=at))
    victim = f"{prefix}-00"
    serial = f"x\ndisk,device_id={victim},device_model=unknown,disk=s0"  # forges the victim's disk series
    model = "Opti\nplex reallocated_sectors=4500i\r\n#"
    evil = HealthReport(
        device_id=f"{prefix}-evil",
        seq=1,
        collected_at=at,
        kind="desktop",
        platform="windows",
        disks=[DiskHealth(name="sda\\", serial_hash=serial, kind="hdd", reallocated_sectors=4500)],
    )
    inventory = DeviceInventory(device_id=evil.device_id, kind="desktop", model=model, site="a\\,b", updated_at=at)
    points[10:10] = report_points(evil, inventory)  # in the middle of the honest batch
    return points, serial, model


async def test_injection_attack_lands_only_in_the_attackers_own_series(
    victoria_metrics_url: str, influx_db: InfluxDatabase
) -> None:
    prefix = f"inj{uuid.uuid4().hex[:8]}"
    points, serial, model = attack_fleet(prefix, recent())
    want = expected(points)
    for sink in (InfluxV2PointSink(InfluxV2Sink(url=victoria_metrics_url, retries=1)), influx_db.sink()):
        await write(sink, points)
        assert (sink.written, dict(sink.dropped)) == (len(points), {})  # no honest point lost, none miscounted
    assert influx_db.stored() == want
    assert influx_db.series_count() == len(points)
    assert [s["values"] for s in influx_db.query("SHOW MEASUREMENTS")] == [[["device"], ["disk"]]]
    vm = vm_points(victoria_metrics_url, f'{{device_id=~"{prefix}-.*"}}', {"device", "disk"})
    assert vm == want
    assert not [n for n in metric_names(victoria_metrics_url) if prefix in n]  # none named by injected text
    evil_disk = next(p for p in want if p[0] == "disk" and (("device_id", f"{prefix}-evil") in p[1]))
    assert ("disk", stored_text(serial)) in evil_disk[1]
    assert ("device_model", stored_text(model)) in evil_disk[1]
    victim_disk = next(p for p in want if p[0] == "disk" and (("device_id", f"{prefix}-00") in p[1]))
    assert victim_disk[2] == frozenset({("reallocated_sectors", 0.0)})


async def test_a_point_the_tsdb_rejects_costs_only_itself(
    victoria_metrics_url: str, influx_db: InfluxDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """InfluxDB refuses a field whose type changed (integer after float) with a 400 for the whole request."""
    run = uuid.uuid4().hex[:12]
    at = recent()
    first = [Point("risk", {"run": run, "device_id": "pc-0"}, {"risk": 0.5}, at)]
    batch = [
        Point("risk", {"run": run, "device_id": f"pc-{i}"}, {"risk": 0.5}, at + timedelta(seconds=1))
        for i in range(200)
    ]
    batch.insert(137, Point("risk", {"run": run, "device_id": "pc-bad"}, {"risk": 1}, at + timedelta(seconds=1)))
    influx_sink = influx_db.sink()
    metrics = PipelineMetrics()
    metrics.track_sink(influx_sink)
    await write(influx_sink, first)
    with caplog.at_level(logging.ERROR):
        await write(influx_sink, batch)
    assert (influx_sink.written, dict(influx_sink.dropped)) == (1 + 200, {"rejected": 1})
    drops = [r for r in caplog.records if r.getMessage() == "tsdb points dropped"]
    assert len(drops) == 1
    assert drops[0].fields["reason"] == "rejected"  # type: ignore[attr-defined]
    assert "field type conflict" in drops[0].fields["error"]  # type: ignore[attr-defined]
    exposition = metrics.exposition().decode()
    assert 'fleetpulse_stream_tsdb_dropped_total{reason="rejected"} 1.0' in exposition
    assert "fleetpulse_stream_tsdb_points_total 201.0" in exposition
    stored = influx_db.query(f"SELECT count(risk) FROM risk WHERE run = '{run}'")
    assert stored[0]["values"][0][1] == 201
    # VictoriaMetrics stores every value as a float: the same batch is written whole.
    vm_sink = InfluxV2PointSink(InfluxV2Sink(url=victoria_metrics_url, retries=1))
    await write(vm_sink, first + batch)
    assert (vm_sink.written, dict(vm_sink.dropped)) == (202, {})
