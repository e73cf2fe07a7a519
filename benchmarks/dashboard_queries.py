"""How long the Grafana dashboards' InfluxQL queries take as the fleet grows, and what the TSDB stores.

Loads the sample fleet (``fleetpulse.dashboards.sample``: 3 days of 2-hourly reports,
written as the sink's line protocol) into a fresh database on InfluxDB 1.x, then runs
the fleet rollup four times (as the 5-minute job would) and every panel, variable
and annotation query of the four dashboards with Grafana's
macros filled in ('All' selected) and prints, per dashboard, the time of all its
queries run one after another and the slowest one. The baseline,
measured side by side, is the same queries on the 24-device test fleet: the ratio
shows how query cost scales with fleet size. Also prints points and line-protocol
bytes per report (telemetry) and per scoring (scores), the numbers storage sizing starts from.

    python benchmarks/dashboard_queries.py --devices 2000 --url http://127.0.0.1:18086
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections import Counter, defaultdict
from datetime import timedelta

import httpx
from record import record

from fleetpulse.dashboards.build import build_all
from fleetpulse.dashboards.queries import dashboard_queries, fill_macros
from fleetpulse.dashboards.rollup import InfluxV1Api, run_rollup
from fleetpulse.dashboards.sample import DRILL_DEVICE, END, START, STEP, iter_points
from fleetpulse.dashboards.settings import InfluxSourceSettings

ALL = {"site": ".*", "device_model": ".*", "worker": ".*", "model_name": ".*", "component": ".*"}
VARIABLES = {**ALL, "threshold": "0.5", "device_id": DRILL_DEVICE}


TELEMETRY = ("device", "disk", "battery")
SCORES = ("risk", "alert")


def load(client: httpx.Client, database: str, devices: int) -> tuple[int, Counter[str], Counter[str], float]:
    """Write the fleet; returns (points, points per measurement, line-protocol bytes per measurement, seconds)."""
    client.post("/query", params={"q": f'CREATE DATABASE "{database}"'}).raise_for_status()
    batch: list[str] = []
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    t0 = time.perf_counter()
    for point in iter_points(devices):
        line = point.to_line_protocol()
        batch.append(line)
        counts[point.measurement] += 1
        sizes[point.measurement] += len(line) + 1
        if len(batch) == 5000:
            client.post("/write", params={"db": database}, content="\n".join(batch)).raise_for_status()
            batch.clear()
    if batch:
        client.post("/write", params={"db": database}, content="\n".join(batch)).raise_for_status()
    return sum(counts.values()), counts, sizes, time.perf_counter() - t0


def time_dashboards(client: httpx.Client, database: str, repeats: int) -> dict[str, tuple[float, float, str]]:
    """Per dashboard: median over repeats of (all its queries run one after another, slowest query), and which."""
    queries: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for q in dashboard_queries(build_all()):
        start, end = q.time_range(START, END)
        queries[q.dashboard].append((q.where, fill_macros(q.query, start, end, "1h", VARIABLES)))
    out = {}
    for dashboard, items in queries.items():
        totals, slowest = [], defaultdict(list)
        for _ in range(repeats):
            total = 0.0
            for where, text in items:
                t0 = time.perf_counter()
                resp = client.get("/query", params={"db": database, "q": text, "epoch": "ms"})
                resp.raise_for_status()
                if "error" in resp.json()["results"][0]:
                    raise RuntimeError(f"{resp.json()['results'][0]['error']}: {text}")
                elapsed = time.perf_counter() - t0
                total += elapsed
                slowest[where].append(elapsed)
            totals.append(total)
        worst = max(slowest, key=lambda w: statistics.median(slowest[w]))
        out[dashboard] = (statistics.median(totals), statistics.median(slowest[worst]), worst)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--url", default="http://127.0.0.1:18086", help="InfluxDB 1.x (deploy/local/stack.sh)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    reports_per_device = int((END - START) / STEP) + 1
    results = {}
    recorded: dict[str, object] = {"devices": args.devices, "reports_per_device": reports_per_device}
    with httpx.Client(base_url=args.url, timeout=600) as client:
        for label, devices in (("baseline", 24), ("fleet", args.devices)):
            database = f"fp_bench_{uuid.uuid4().hex[:8]}"
            try:
                points, counts, sizes, load_s = load(client, database, devices)
                reports = devices * reports_per_device
                per = {
                    kind: (sum(counts[m] for m in ms) / reports, sum(sizes[m] for m in ms) / reports)
                    for kind, ms in (("telemetry", TELEMETRY), ("scores", SCORES))
                }
                if label == "fleet":
                    recorded["write_points_per_s"] = round(points / load_s)
                    recorded["per_report"] = {
                        kind: {"points": round(n, 2), "bytes": round(b)} for kind, (n, b) in per.items()
                    }
                print(
                    f"{label}: {devices:,} devices, {reports:,} reports -> {points:,} points written in {load_s:.1f} s "
                    f"= {points / load_s:,.0f} points/s (one HTTP client, batches of 5000); per report: "
                    + ", ".join(f"{kind} {n:.1f} points {b:,.0f} B" for kind, (n, b) in per.items())
                )
                api = InfluxV1Api(InfluxSourceSettings(url=args.url, database=database), timeout_s=600)
                t0 = time.perf_counter()
                for hours_before_end in (18, 12, 6, 0):
                    run_rollup(api, END - timedelta(hours=hours_before_end), 0.5)
                api.close()
                if label == "fleet":
                    recorded["rollup_s_per_run"] = round((time.perf_counter() - t0) / 4, 2)
                print(
                    f"  fleet rollup (what the 5-minute job pays once): {(time.perf_counter() - t0) / 4 * 1000:,.0f} ms per run"
                )
                results[label] = time_dashboards(client, database, args.repeats)
            finally:
                client.post("/query", params={"q": f'DROP DATABASE "{database}"'})
    print(
        f"\nquery time per dashboard load, all queries sequential, 'All' selected, 3-day range (median of {args.repeats})"
    )
    print(f"{'dashboard':32} {'baseline':>9} {'fleet':>9} {'ratio':>6}  slowest query on the fleet")
    for dashboard in sorted(results["fleet"]):
        base, fleet = results["baseline"][dashboard], results["fleet"][dashboard]
        print(
            f"{dashboard:32} {base[0] * 1000:6.0f} ms {fleet[0] * 1000:6.0f} ms {fleet[0] / base[0]:6.1f}  "
            f"{fleet[1] * 1000:.0f} ms {fleet[2]}"
        )
    recorded["dashboard_load_s"] = {
        dashboard: {"baseline": round(results["baseline"][dashboard][0], 3), "fleet": round(fleet[0], 3)}
        for dashboard, fleet in sorted(results["fleet"].items())
    }
    record("dashboard_queries", recorded, load_at_start)


if __name__ == "__main__":
    main()
