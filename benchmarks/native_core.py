"""What a native per-report core would cost: a Rust prototype against the Python worker, same records.

The stream worker's per-report path (decode and validate the report, check its record key, authenticate
it, deduplicate, fold it into the device's cached state, encode the table value, build its TSDB lines)
spends its time building and reading Python objects. ``native_core/`` implements that path in Rust, with
no Python object per field, as a measurement prototype (it is not shipped). This script:

1. simulates ``--devices`` devices and ``--rounds`` reports each, as ``stream_throughput.py`` publishes them
   (timed), and builds a second input from the real smartctl outputs in ``--corpus`` (checked only): a
   device per one to ten real disks, six reports each over 42 days, so that day buckets, the 35-day
   window, stale disks and the eight-disk bound are all exercised;
2. runs the Python worker's own functions for those stages over the reports, states cached between
   reports as in the worker (``decode_report``, ``authentication_failure``/``mobile_refusal``,
   ``apply_report_in_place``, ``DeviceRecord.to_bytes``, ``report_points``/``to_line_protocol``);
3. runs the Rust core over the same bytes;
4. checks that every device's final table value and every line are equal, byte for byte;
5. prints CPU µs per report for both, stage by stage (each prefix of the path is timed; a stage is the
   difference of two), their ratio, and the whole in-process processor (scoring included) over the
   same fleet for scale.

    python benchmarks/native_core.py --devices 10000 --rounds 5

Needs cargo (rustup); the first run builds the prototype into ``native_core/target``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from stream_common import Fleet
from stream_profile import batches
from stream_profile import run as run_processor

from fleetpulse.agents.parsers import ParseError
from fleetpulse.agents.parsers.smartctl import parse_smartctl_json, parse_smartctl_text
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    BatteryHealth,
    ContractError,
    DeviceKind,
    HealthReport,
    Platform,
    StabilityHealth,
    ThermalHealth,
    Topics,
    decode_report,
    encode,
)
from fleetpulse.contract.auth import MAC_HEADER, header, report_headers
from fleetpulse.models.registry import load_scorers
from fleetpulse.models.state import DeviceState, apply_report_in_place
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import tune_gc
from fleetpulse.streams.points import report_points
from fleetpulse.streams.processing import DeviceRecord, Processor, authentication_failure, mobile_refusal

CRATE = Path(__file__).parent / "native_core"
Report = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Workload:
    """Records as the worker reads them: topic, key, value, headers; and each PC's enrolled report key."""

    reports: list[Report]
    device_keys: dict[bytes, bytes]
    health_topic: str


def real_disks(corpus: Path, topics: Topics) -> Workload:
    """Devices carrying the real disks of the smartctl corpus, reported on days 0, 0, 1, 2, 40 and 41."""
    disks = []
    with (corpus / "manifest.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            path = corpus / row["file"]
            serial = lambda text: hashlib.sha256(text.encode()).hexdigest()[:16]  # noqa: E731
            try:
                if row["format"] == "json":
                    disks.append(parse_smartctl_json(path.read_bytes(), name=path.name, hasher=serial))
                else:
                    text = path.read_text(errors="replace")
                    disks.append(parse_smartctl_text(text, name=path.name, hasher=serial))
            except ParseError:
                continue
    start = datetime(2025, 3, 1, 8, tzinfo=UTC)
    offsets = [timedelta(0), timedelta(hours=5), timedelta(days=1), timedelta(days=2), timedelta(days=40)]
    offsets.append(timedelta(days=41, minutes=1, microseconds=250_000))
    reports: list[Report] = []
    device_keys: dict[bytes, bytes] = {}
    first, n = 0, 0
    while first < len(disks):
        size = (1, 2, 3, 10)[n % 4]
        device_id = f"real-{n:04d}"
        key = device_id.encode()
        device_keys[key] = hashlib.sha256(key).digest()
        for seq, offset in enumerate(offsets):
            # the first disk leaves after day 2 (stale by day 40): the window drops it
            carried = disks[first : first + size] if offset < timedelta(days=40) else disks[first + 1 : first + size]
            report = HealthReport(
                device_id=device_id,
                seq=seq,
                collected_at=start + offset + timedelta(seconds=n),
                kind=DeviceKind.LAPTOP,
                platform=Platform.LINUX,
                disks=carried,
                battery=BatteryHealth(design_capacity=50_000.0, full_charge_capacity=41_000.0 - 7.5 * seq - n),
                thermal=ThermalHealth(cpu_max_c=60.0 + seq * 9.5, sensors_max_c=70.0, fan_rpm=[2100.0, 2950.5]),
                stability=StabilityHealth(crashes=seq % 2, boot_duration_s=30.0 + seq / 3),
            )
            value = encode(report)
            reports.append((topics.health, key, value, report_headers(device_keys[key], value)))
        first, n = first + size, n + 1
    return Workload(reports, device_keys, topics.health)


def build() -> Path:
    cargo = shutil.which("cargo")
    if cargo is None:
        sys.exit("cargo not found: install Rust (https://rustup.rs) to build the prototype")
    print("building the Rust prototype (cargo build --release) ...", flush=True)
    subprocess.run([cargo, "build", "--release", "--quiet", "--manifest-path", str(CRATE / "Cargo.toml")], check=True)
    return CRATE / "target" / "release" / "fleetpulse-native-core-probe"


STAGES = (
    "decode and validate the report",
    "authenticate it (HMAC)",
    "deduplicate, fold into the cached state",
    "encode the table value",
    "build its TSDB points",
    "encode them as line protocol",
)
"""The per-report path in order; ``--stages``-style prefixes of it are timed, their differences are the stages."""


def python_path(
    work: Workload, settings: ServerSettings, now: datetime, stages: int = len(STAGES)
) -> tuple[float, dict[bytes, bytes], list[bytes], int]:
    """The worker's functions for the first ``stages`` of :data:`STAGES`; (CPU s, table, lines, dead letters).

    Five stages build the points without encoding them, as in a worker whose TSDB sink is ``none``
    (``stream_throughput.py`` without ``--tsdb-url``).
    """
    health = work.health_topic
    skew = settings.streams.max_clock_skew
    records = {
        key.decode(): DeviceRecord(state=DeviceState(device_id=key.decode()), device_key=device_key.hex())
        for key, device_key in work.device_keys.items()
    }
    table: dict[bytes, bytes] = {}
    lines: list[str] = []
    dead = 0
    started = time.process_time()
    for topic, key, value, headers in work.reports:
        try:
            report = decode_report(value)
        except ContractError:
            dead += 1
            continue
        device_id = report.device_id
        if key != device_id.encode() or report.collected_at > now + skew:
            dead += 1
            continue
        if stages == 1:
            continue
        record = records.get(device_id)
        if topic == health:
            refused = authentication_failure(record, device_id, value, headers)
        else:
            refused = mobile_refusal(record, report)
        if refused is not None:
            dead += 1
            continue
        if stages == 2:
            continue
        if record is None:
            record = records[device_id] = DeviceRecord(state=DeviceState(device_id=device_id))
        state = record.state
        last_at = state.last_collected_at
        if report.seq <= state.last_seq and (last_at is None or report.collected_at <= last_at):
            dead += 1
            continue
        apply_report_in_place(state, report)
        if stages == 3:
            continue
        table[key] = record.to_bytes()
        if stages == 4:
            continue
        points = report_points(report, record.asset_facts())
        if stages == 6:
            lines.extend(point.to_line_protocol() for point in points)
    spent = time.process_time() - started
    return spent, table, [line.encode() for line in lines], dead


def frame(*parts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(part)) + part for part in parts)


def native_path(
    probe: Path, work: Workload, now: datetime, stages: int = 5
) -> tuple[dict[str, float], dict[bytes, bytes], list[bytes]]:
    """The Rust core over the same records, up to ``stages`` (its 5th writes the lines: points and encoding)."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "records").write_bytes(
            b"".join(
                frame(key, work.device_keys.get(key, b""), header(headers, MAC_HEADER) or b"", value)
                for _, key, value, headers in work.reports
            )
        )
        micros = int(now.timestamp()) * 1_000_000 + now.microsecond
        names = ("records", "table", "lines")
        args = [str(probe), *(str(folder / name) for name in names), str(micros), str(stages)]
        result = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        raw, table, at = (folder / "table").read_bytes(), {}, 0
        while at < len(raw):
            parts = []
            for _ in range(2):
                (size,) = struct.unpack_from("<I", raw, at)
                parts.append(raw[at + 4 : at + 4 + size])
                at += 4 + size
            table[parts[0]] = parts[1]
        return result, table, (folder / "lines").read_bytes().splitlines()


def compare(
    name: str,
    python: tuple[dict[bytes, bytes], list[bytes], int],
    native: tuple[dict[str, float], dict[bytes, bytes], list[bytes]],
) -> bool:
    """Print whether both paths stored the same values, wrote the same lines and refused the same records."""
    (table, lines, dead), (result, native_table, native_lines) = python, native
    same_values = sum(native_table.get(key) == value for key, value in table.items())
    same_lines = sum(a == b for a, b in zip(lines, native_lines, strict=False))
    print(
        f"{name}: table values equal byte for byte for {same_values} of {len(table)} devices ({len(native_table)} native)"
    )
    print(f"{name}: lines equal byte for byte: {same_lines} of {len(lines)} ({len(native_lines)} native)")
    print(f"{name}: dead letters: python {dead}, native {result['dead_letters']:.0f}")
    for key, value in table.items():
        if native_table.get(key) != value:
            print(
                f"  first differing value, {key!r}:\n  python {value[:400]!r}\n  native {native_table.get(key, b'')[:400]!r}"
            )
            break
    return (
        same_values == len(table) == len(native_table)
        and same_lines == len(lines) == len(native_lines)
        and dead == result["dead_letters"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path; the fastest counts")
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/smartctl")
    args = parser.parse_args()

    probe = build()
    settings = ServerSettings()
    topics = Topics(prefix="native.")
    fleet = Fleet.simulate(args.devices, topics)
    preamble = sum(1 for _ in fleet.preamble())
    records = list(fleet.rounds(args.rounds))
    reports = records[preamble:]
    now = datetime.now(UTC)
    tune_gc(settings.streams)
    print(f"{args.devices} devices, {args.rounds} rounds: {len(reports)} reports", flush=True)

    timed = Workload(reports, fleet.device_keys, topics.health)
    python_runs = [python_path(timed, settings, now) for _ in range(args.repeat)]
    _, table, lines, dead = min(python_runs, key=lambda run: run[0])
    native_runs = [native_path(probe, timed, now) for _ in range(args.repeat)]
    fastest = min(native_runs, key=lambda run: run[0]["cpu_s"])
    same = compare("simulated fleet", (table, lines, dead), fastest)
    if (args.corpus / "manifest.csv").is_file():
        real = real_disks(args.corpus, topics)
        _, real_table, real_lines, real_dead = python_path(real, settings, now)
        same = (
            compare("real smartctl disks", (real_table, real_lines, real_dead), native_path(probe, real, now)) and same
        )
    else:
        print(f"real smartctl disks: skipped, no corpus at {args.corpus} (the repository's ../shared/data)")
    if not same:
        sys.exit("the prototype's output differs from the Python worker's: its timings compare different work")

    def us(seconds: float) -> float:
        return 1e6 * seconds / len(reports)

    # each prefix of the path, fastest of --repeat runs; a stage's cost is the difference of two prefixes
    python_prefix = [0.0] + [
        us(min(python_path(timed, settings, now, stages)[0] for _ in range(args.repeat)))
        for stages in range(1, len(STAGES) + 1)
    ]
    native_prefix = [0.0] + [
        us(min(native_path(probe, timed, now, stages)[0]["cpu_s"] for _ in range(args.repeat)))
        for stages in range(1, 6)
    ]
    native_prefix.append(native_prefix[-1])  # the native core writes the lines directly: no separate encoding

    decoded = list(fastest[1].values())
    started = time.process_time()
    for value in decoded:
        DeviceRecord.from_bytes(value)
    decode_us = 1e6 * (time.process_time() - started) / len(decoded)

    processor = Processor(settings.streams, topics, load_scorers(settings.models), settings.alerts.policy)
    work = batches(fleet, args.rounds, 2000)
    started = time.process_time()
    spent = run_processor(processor, work)
    whole = time.process_time() - started
    events = sum(len(batch) for batch in work)

    print()
    print(f"CPU us per report, fastest of {args.repeat} runs {'python':>18s} {'native':>8s}")
    for index, stage in enumerate(STAGES, start=1):
        python_us = python_prefix[index] - python_prefix[index - 1]
        native_us = native_prefix[index] - native_prefix[index - 1]
        print(f"  {stage:44s} {python_us:8.1f} {native_us:8.2f}")
    for label, stages in (("total, points built (TSDB sink none)", 5), ("total, lines encoded (writing to a TSDB)", 6)):
        ratio = native_prefix[stages] / python_prefix[stages]
        print(f"  {label:44s} {python_prefix[stages]:8.1f} {native_prefix[stages]:8.2f}   native/python {ratio:.3f}")
    print(f"a native table value read back by Python (a state to score): {decode_us:.1f} us")
    print(f"the whole in-process processor, scoring included: {1e6 * whole / events:.1f} us per event, of which")
    for stage, seconds in spent.items():
        print(f"  {stage:14s} {1e6 * seconds / events:6.1f}")


if __name__ == "__main__":
    main()
