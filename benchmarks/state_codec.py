"""What the stream's table value costs to decode and encode: packed arrays (version 3) vs JSON (version 1).

The worker decodes a device's value, applies the report and encodes it again for every
event. States come from the fleet simulator after ``--days`` daily reports (a laptop's
battery history grows to ``MAX_BATTERY_POINTS`` days, disks and device keep 35), stored as
the worker stores them: with alert states for their components. The baseline, measured
side by side in the same run on the same states, is the JSON codec as the worker ran it
(pydantic's ``model_validate_json``/``model_dump_json`` of list-based models, kept here
verbatim because the models themselves moved to arrays). CPU time, best of ``--repeat``.

    python benchmarks/state_codec.py --devices 300 --days 1 60 120
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetpulse.agents.simulator import FleetMix, FleetSimulator
from fleetpulse.alerts.policy import PolicyState
from fleetpulse.compat import UTC
from fleetpulse.contract import DeviceKind, DiskKind, Platform
from fleetpulse.models.state import DeviceState, apply_report_in_place
from fleetpulse.streams.processing import DeviceRecord


class JsonSeries(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: list[int] = []
    columns: dict[str, list[float | None]] = {}


class JsonDisk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: DiskKind = DiskKind.UNKNOWN
    model: str | None = None
    capacity_bytes: int | None = None
    first_seen: datetime
    last_seen: datetime
    series: JsonSeries = Field(default_factory=JsonSeries)


class JsonBattery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    design_capacity: float
    unit: Literal["mWh", "mAh"] = "mWh"
    first_seen: datetime
    last_seen: datetime
    series: JsonSeries = Field(default_factory=JsonSeries)


class JsonState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    kind: DeviceKind | None = None
    platform: Platform | None = None
    last_seq: int = -1
    last_collected_at: datetime | None = None
    vendor: str | None = None
    model: str | None = None
    site: str | None = None
    department: str | None = None
    purchase_date: date | None = None
    warranty_end: date | None = None
    disks: dict[str, JsonDisk] = {}
    battery: JsonBattery | None = None
    device: JsonSeries = Field(default_factory=JsonSeries)


class JsonRecord(BaseModel):
    """The table value as version 1 stored it (``DeviceRecord`` with list-based histories)."""

    model_config = ConfigDict(extra="forbid")

    state: JsonState
    policies: dict[str, PolicyState] = {}
    inventory_at: datetime | None = None
    scored_at: datetime | None = None
    device_key: str | None = None
    pinned_fingerprint: str | None = None
    offered_key: str | None = None


def fleet_records(devices: int, days: int, seed: int) -> list[DeviceRecord]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    mix = FleetMix(laptop=0.6, desktop=0.4, phone=0.0, tablet=0.0)
    sim = FleetSimulator(devices=devices, seed=seed, start=start, days=days, mix=mix)
    states: dict[str, DeviceState] = {}
    for report in sim.reports():
        state = states.get(report.device_id) or DeviceState(device_id=report.device_id)
        states[report.device_id] = apply_report_in_place(state, report)
    at = start + timedelta(days=days)
    records = []
    for state in states.values():
        components = [f"disk:{key}" for key in state.disks] + ["device:"] + (["battery:"] if state.battery else [])
        policies = {key: PolicyState(above=1, last_at=at, last_report_seq=state.last_seq) for key in components}
        records.append(
            DeviceRecord(state=state, policies=policies, inventory_at=start, scored_at=at, device_key="ab" * 32)
        )
    return records


def best_us(work: Callable[[bytes], object], values: Sequence[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for value in values:
            work(value)
        best = min(best, time.process_time() - started)
    return 1e6 * best / len(values)


def json_round_trip(value: bytes) -> bytes:
    return JsonRecord.model_validate_json(value).model_dump_json().encode()


def packed_round_trip(value: bytes) -> bytes:
    return DeviceRecord.from_bytes(value).to_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=300)
    parser.add_argument("--days", type=int, nargs="+", default=[1, 60, 120])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    print("µs per value, CPU; 'both' = decode + encode, the worker's cost per event")
    head = ("days", "states", "JSON B", "packed B", "JSON dec", "packed dec", "JSON enc", "packed enc")
    print(*(f"{h:>10}" for h in (*head, "JSON both", "packed both", "ratio")))
    for days in args.days:
        records = fleet_records(args.devices, days, args.seed)
        old = [record.model_dump_json().encode() for record in records]  # version 1, as the JSON worker stored it
        new = [record.to_bytes() for record in records]
        assert all(json_round_trip(v) == v for v in old[:50]), "the baseline must read and write version 1 exactly"
        assert all(packed_round_trip(v) == v for v in new[:50])
        json_records = [JsonRecord.model_validate_json(v) for v in old]
        json_decode = best_us(JsonRecord.model_validate_json, old, args.repeat)
        packed_decode = best_us(DeviceRecord.from_bytes, new, args.repeat)
        json_encode = _encode_us([r.model_dump_json for r in json_records], args.repeat)
        packed_encode = _encode_us([r.to_bytes for r in records], args.repeat)
        json_both = best_us(json_round_trip, old, args.repeat)
        packed_both = best_us(packed_round_trip, new, args.repeat)
        row = (
            f"{days}",
            f"{len(records)}",
            f"{sum(map(len, old)) / len(old):.0f}",
            f"{sum(map(len, new)) / len(new):.0f}",
            *(f"{us:.1f}" for us in (json_decode, packed_decode, json_encode, packed_encode, json_both, packed_both)),
            f"{json_both / packed_both:.1f}x",
        )
        print(*(f"{cell:>10}" for cell in row))


def _encode_us(encoders: Sequence[Callable[[], object]], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for encode in encoders:
            encode()
        best = min(best, time.process_time() - started)
    return 1e6 * best / len(encoders)


if __name__ == "__main__":
    main()
