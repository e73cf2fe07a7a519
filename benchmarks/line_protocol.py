"""µs per point of the sink's line-protocol serializer vs influxdb-client's ``Point``, side by side.

The worker serializes every point it writes (about 3 per report plus scores and alerts), so
the serializer's cost is paid per report. Points are the dashboards' sample fleet (realistic
tags and fields). ``hostile`` gives every point unique tag values full of control characters,
backslashes and separators, so no escaped text repeats (worst case for the escaping cache).
influxdb-client is timed including the conversion a sink would need (its ``Point`` built from
ours), and does not carry every text faithfully (a trailing backslash gains a space; other
control characters and lone surrogates pass through), so it is the speed baseline only.

    python benchmarks/line_protocol.py --devices 200
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from influxdb_client.client.write.point import Point as ClientPoint

from fleetpulse.dashboards.sample import iter_points
from fleetpulse.streams.points import Point


def ours(points: Sequence[Point]) -> list[str]:
    return [p.to_line_protocol() for p in points]


def influxdb_client(points: Sequence[Point]) -> list[str]:
    out = []
    for p in points:
        point = ClientPoint(p.measurement).time(p.time)  # type: ignore[no-untyped-call]
        for key, value in p.tags.items():
            point.tag(key, value)
        for key, field in p.fields.items():
            point.field(key, field)
        out.append(point.to_line_protocol())
    return out


def hostile(points: Sequence[Point], seed: int = 7) -> list[Point]:
    rng = random.Random(seed)
    alphabet = "ab \n\r\t\\,=\"'#\x00\u2028é"
    return [replace(p, tags={k: "".join(rng.choice(alphabet) for _ in range(24)) for k in p.tags}) for p in points]


def best_of(repeat: int, serialize: Callable[[Sequence[Point]], list[str]], points: Sequence[Point]) -> float:
    """Best CPU µs per point over ``repeat`` runs (CPU time: other processes on the machine do not count)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        serialize(points)
        best = min(best, time.process_time() - started)
    return best / len(points) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100, help="sample fleet size (about 700 points per device)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sample = list(iter_points(args.devices))
    for label, points in (("sample fleet", sample), ("hostile tags", hostile(sample))):
        mine = best_of(args.repeat, ours, points)
        client = best_of(args.repeat, influxdb_client, points)
        print(
            f"{label}: {len(points):,} points; fleetpulse {mine:.2f} µs/point, influxdb-client Point "
            f"{client:.2f} µs/point; ratio client/fleetpulse {client / mine:.1f}x"
        )


if __name__ == "__main__":
    main()
