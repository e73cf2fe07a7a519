"""Is a faster processor still the same processor? Digests of everything it produces over the profile fleet.

Runs :meth:`Processor.process_batch` over the records ``stream_profile.py`` feeds it (inventory,
enrolments, then ``--rounds`` reports per device), at one fixed clock, with the table as bytes
between batches, and prints a SHA-256 per output kind: scores, alerts, feature-log records, TSDB
points, dead letters, counts, and the stored table values. The input is written to ``--input`` on
the first run and read back on later runs, so two checkouts process the same bytes::

    python benchmarks/processor_outputs.py --input /tmp/fleet.json --out /tmp/main.json       # main
    PYTHONPATH=$PWD python benchmarks/processor_outputs.py --input /tmp/fleet.json --expect /tmp/main.json

``--expect`` exits 1 naming each kind whose digest differs. ``table`` is the stored bytes: a change of the
state encoding changes it by design; every other kind must stay identical under an optimisation.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from stream_common import Fleet

from fleetpulse.compat import UTC
from fleetpulse.contract import Topics
from fleetpulse.models.registry import load_scorers
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord

TOPICS = Topics(prefix="profile.")


def write_input(path: Path, devices: int, rounds: int) -> None:
    fleet = Fleet.simulate(devices, TOPICS)
    records = [
        [
            topic,
            base64.b64encode(key).decode(),
            base64.b64encode(value).decode(),
            [[k, base64.b64encode(v).decode()] for k, v in headers],
        ]
        for topic, key, value, headers in fleet.rounds(rounds)
    ]
    path.write_text(json.dumps({"now": datetime.now(UTC).isoformat(), "records": records}))


def read_input(path: Path) -> tuple[list[RawRecord], datetime]:
    data = json.loads(path.read_text())
    records = [
        RawRecord(
            topic,
            0,
            offset,
            base64.b64decode(key),
            base64.b64decode(value),
            [(k, base64.b64decode(v)) for k, v in headers],
        )
        for offset, (topic, key, value, headers) in enumerate(data["records"])
    ]
    return records, datetime.fromisoformat(data["now"])


def digest(lines: Iterable[str | bytes]) -> str:
    sha = hashlib.sha256()
    for line in lines:
        sha.update(line if isinstance(line, bytes) else line.encode())
        sha.update(b"\n")
    return sha.hexdigest()


def outputs(records: list[RawRecord], now: datetime, batch: int) -> dict[str, str]:
    settings = ServerSettings()
    processor = Processor(settings.streams, TOPICS, load_scorers(settings.models), settings.alerts.policy)
    table: dict[str, bytes] = {}
    seen: dict[str, list[str | bytes]] = {
        kind: [] for kind in ("scores", "alerts", "features", "points", "dead_letters", "counts", "table")
    }

    def lookup(_index: int, device_id: str) -> DeviceRecord | None:
        raw = table.get(device_id)
        return None if raw is None else DeviceRecord.from_bytes(raw)

    for start in range(0, len(records), batch):
        result = processor.process_batch(records[start : start + batch], lookup, now)
        seen["scores"] += [s.model_dump_json() for s in result.scores]
        seen["alerts"] += [a.model_dump_json() for a in result.alerts]
        seen["features"] += [f.model_dump_json() for f in result.features]
        seen["points"] += [repr(p) for p in result.points]
        seen["dead_letters"] += [d.model_dump_json() for d in result.dead_letters]
        seen["counts"].append(json.dumps(dict(sorted(result.counts.items()))))
        for device_id, record in result.records.items():
            table[device_id] = record.to_bytes()
            seen["table"].append(device_id.encode() + b"=" + table[device_id])
    out = {kind: digest(lines) for kind, lines in seen.items()}
    out["sizes"] = json.dumps({kind: len(lines) for kind, lines in seen.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="the records; written on the first run")
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="write the digests as JSON")
    parser.add_argument("--expect", type=Path, help="digests (JSON) of another checkout to compare with")
    args = parser.parse_args()
    if not args.input.exists():
        write_input(args.input, args.devices, args.rounds)
    records, now = read_input(args.input)
    got = outputs(records, now, args.batch)
    for kind, value in got.items():
        print(f"{kind:13s} {value}")
    if args.out:
        args.out.write_text(json.dumps(got, indent=2) + "\n")
    if args.expect:
        expected = json.loads(args.expect.read_text())
        differ = [kind for kind in expected if got.get(kind) != expected[kind]]
        print("identical" if not differ else f"DIFFERENT: {', '.join(differ)}")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
