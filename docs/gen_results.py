"""Render the measured-results tables of README.md and the Performance page from the files the
measuring commands write, so no number in them is copied by hand.

Sources: ``models/reports/example/metrics.json`` (``fleetpulse evaluate``) and
``benchmarks/results/<name>.json`` (the benchmark scripts). Each table lives between
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``.

    python docs/gen_results.py --write   # after measuring (make results)
    python docs/gen_results.py --check   # fails when a table differs from its source (make docs)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METRICS = REPO / "models" / "reports" / "example" / "metrics.json"
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
PERFORMANCE = REPO / "docs" / "explanation" / "performance.md"

RULE = "Backblaze rule (SMART 5/187/188/197/198 > 0)"
SINGLE = "single attribute (chosen on training models)"
POOLED = "pooled over held-out drive models"
SURVIVAL = "backblaze-2013-2016-survival"

TARGET_UTILISATION = 0.3
"""Share of a worker's capacity to plan for: where the end-to-end p99 stayed under a second."""

BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)

Document = dict[str, Any]


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def points(x: float) -> str:
    return f"{100 * x:+.1f}"


def provenance(doc: Document) -> str:
    host = doc["machine"]
    load = host.get("load_average_1m_at_start", host["load_average_1m"])
    return (
        f"Measured {doc['measured_at'][:10]} by `{doc['command']}` at revision {doc['revision']} on "
        f"{host['cores']} cores ({host['cpu']}), {host['memory_gib']:g} GiB, load average {load:g} at the start, "
        f"Python {host['python']}."
    )


def readme_results(metrics: Document) -> str:
    pooled = metrics["leave_model_out"][SURVIVAL]["held_out"][POOLED]
    detection, pr_auc = pooled["detection"], pooled["pr_auc"]
    models = [k for k, v in metrics["leave_model_out"][SURVIVAL]["held_out"].items() if v["kind"] == "drive model"]
    rows = [
        ("fleetpulse disk model", "model"),
        ("Backblaze rule (SMART 5/187/188/197/198 > 0)", RULE),
        ("best single attribute, chosen on the training drive models", SINGLE),
    ]
    diff = pooled["paired_differences"]

    def interval(key: str) -> str:
        d = diff[key]["FA 1%"]
        return f"{points(d['difference'])} points (95 % paired bootstrap interval {points(d['low'])} to {points(d['high'])})"

    lines = [
        f"The disk model on drive models it never saw in training: Backblaze 2013-2016, "
        f"{metrics['leave_model_out'][SURVIVAL]['horizon']}-day horizon, each of the {len(models)} drive models "
        f"with at least 20 failures held out in turn and scored by a model trained on the others, pooled "
        f"({pooled['failed_drives']:,} failed and {pooled['healthy_drives']:,} healthy drives; `fleetpulse evaluate`, "
        f"seed {metrics['meta']['seed']}; the full report with per-model rows, intervals, lead times and calibration "
        f"is [models/reports/example/report.md](models/reports/example/report.md)):",
        "",
        "| scorer | detection at 0.1 % false alarms | at 1 % false alarms | PR-AUC |",
        "|---|---|---|---|",
        *(
            f"| {label} | {pct(detection[key]['FA 0.1%'])} | {pct(detection[key]['FA 1%'])} | {pr_auc[key]:.3f} |"
            for label, key in rows
        ),
        "",
        f"Model minus rule at 1 %: {interval(RULE)}; model minus single attribute: {interval(SINGLE)}. The trained "
        "model ships with the package and is what the worker serves by default.",
    ]
    return "\n".join(lines) + "\n"


def workers_for(reports_per_s: float, events_per_cpu_s: float) -> int:
    """Worker processes (one core each) that keep every worker at the planned utilisation."""
    return max(1, math.ceil(reports_per_s / (events_per_cpu_s * TARGET_UTILISATION)))


def stream_table(throughput: Document, fleet: Document | None) -> str:
    r = throughput["results"]
    lines = [
        provenance(throughput),
        "",
        "| stage | events/s | per CPU second | share of the ceiling (CPU) |",
        "|---|---|---|---|",
        f"| ceiling: aiokafka consume + contract decode | {r['ceiling_eps']:,} | {r['ceiling_eps_per_cpu_s']:,} | 100 % |",
        f"| Faust floor: decode + one table write per event | {r['floor_eps']:,} | {r['floor_eps_per_cpu_s']:,} | "
        f"{pct(r['floor_eps_per_cpu_s'] / r['ceiling_eps_per_cpu_s'])} |",
    ]
    if "new_floor_eps" in r:
        lines.append(
            f"| worker's own floor: bulk reads, batched state and changelog writes | {r['new_floor_eps']:,} | "
            f"{r['new_floor_eps_per_cpu_s']:,} | {pct(r['new_floor_eps_per_cpu_s'] / r['ceiling_eps_per_cpu_s'])} |"
        )
    lines.append(
        f"| the worker: state, features, five scorers, alert policy, scores ({r['workers']} process) | "
        f"{r['pipeline_eps']:,} | {r['pipeline_eps_per_cpu_s']:,} | {pct(r['ratio_cpu'])} |"
    )
    lines.append("")
    lines.append(
        f"{r['records']:,} records ({r['devices']:,} devices, {r['rounds']} reports each); "
        f"{1e6 / r['pipeline_eps_per_cpu_s']:.0f} µs of CPU per event in the worker."
    )
    ceiling_runs, worker_runs = r.get("ceiling_cpu_us_per_event_runs"), r.get("worker_cpu_us_per_event_runs")
    if ceiling_runs and worker_runs:
        lines.append(
            f"The shares use the medians. From run to run the ceiling took {min(ceiling_runs):g} to "
            f"{max(ceiling_runs):g} µs of CPU per event and the worker {min(worker_runs):g} to {max(worker_runs):g} µs: "
            "between "
            f"{pct(min(ceiling_runs) / max(worker_runs))} and {pct(max(ceiling_runs) / min(worker_runs))} of the ceiling."
        )
    if fleet is not None:
        f = fleet["results"]
        lines += ["", provenance(fleet), ""]
        lines += ["| measured | value |", "|---|---|"]
        for key, value in f.items():
            if key.startswith("latency_"):
                lines.append(
                    f"| report to score at {value['achieved_rate']:,} reports/s ({key.removeprefix('latency_')} of "
                    f"{f['devices']:,} devices a minute), {f['workers']} worker(s) | p50 {value['score_p50_s']:g} s, "
                    f"p99 {value['score_p99_s']:g} s |"
                )
                if "worker_cpu_us_per_report" in value:
                    lines.append(
                        f"| worker CPU per report at {value['achieved_rate']:,} reports/s (idle polling"
                        f"{', TSDB writes' if wrote_tsdb(fleet) else ''} included) | "
                        f"{value['worker_cpu_us_per_report']:,.0f} µs |"
                    )
        if "recovery_local_rocksdb" in f:
            lines.append(
                f"| ready after kill -9, from its own RocksDB ({f['devices']:,} devices) | "
                f"{f['recovery_local_rocksdb']['ready_s']:g} s |"
            )
        if "recovery_from_changelog" in f:
            lines.append(
                f"| ready after kill -9, from the changelog alone | {f['recovery_from_changelog']['ready_s']:g} s |"
            )
    return "\n".join(lines) + "\n"


def wrote_tsdb(fleet: Document) -> bool:
    """Whether the fleet run's workers wrote their points to a TSDB, as production workers do."""
    return bool(fleet["results"].get("tsdb"))


def steady_state_us(fleet: Document | None) -> tuple[float, float] | None:
    """(CPU µs per report, reports/s) of the costliest steady load measured, if any."""
    if fleet is None:
        return None
    loads = [
        (value["worker_cpu_us_per_report"], value["achieved_rate"])
        for key, value in fleet["results"].items()
        if key.startswith("latency_") and "worker_cpu_us_per_report" in value
    ]
    return max(loads, default=None)


def sizing_table(throughput: Document, fleet: Document | None) -> str:
    drain_us = 1e6 / throughput["results"]["pipeline_eps_per_cpu_s"]
    steady = steady_state_us(fleet)
    cost_us = max(drain_us, steady[0]) if steady else drain_us
    per_cpu = round(1e6 / cost_us)
    rows = [
        ("100,000 devices, a report every 15 minutes (the agent's default)", 100_000 / 900),
        ("100,000 devices, a report a minute", 100_000 / 60),
        ("1,000,000 devices, a report a minute", 1_000_000 / 60),
    ]
    basis = f"the worker's {drain_us:.0f} µs of CPU per event while draining a backlog"
    if steady:
        basis = (
            f"the higher of {basis} and its {steady[0]:.0f} µs per report keeping up with {steady[1]:,} reports/s "
            "(small batches and idle polling cost more per report"
            f"{'; points written to the TSDB' if fleet and wrote_tsdb(fleet) else ''})"
        )
    lines = [
        f"From {basis}, planning each worker at {100 * TARGET_UTILISATION:.0f} % of its capacity "
        "(run at least two workers for availability):",
        "",
        "| fleet | reports/s | worker processes (one core each) |",
        "|---|---|---|",
    ]
    for label, rate in rows:
        lines.append(f"| {label} | {rate:,.0f} | {workers_for(rate, per_cpu)} |")
    return "\n".join(lines) + "\n"


def tsdb_table(doc: Document) -> str:
    r = doc["results"]
    telemetry, scores = r["per_report"]["telemetry"], r["per_report"]["scores"]
    dashboards = ", ".join(
        f"{name.removeprefix('fleetpulse-').removesuffix('.json')} {timing['fleet'] * 1000:,.0f} ms"
        for name, timing in sorted(r["dashboard_load_s"].items())
    )
    lines = [
        provenance(doc),
        "",
        "| measured | value |",
        "|---|---|",
        f"| points per health report (device, disks, battery) | {telemetry['points']:g} points, {telemetry['bytes']:,} B "
        "of line protocol |",
        f"| points per scoring (champion and challenger per component, alerts) | {scores['points']:g} points, "
        f"{scores['bytes']:,} B |",
        f"| InfluxDB 1.6.7 write rate, one client, batches of 5,000 | {r['write_points_per_s']:,} points/s |",
        f"| dashboard load, all queries in turn, {r['devices']:,} devices | {dashboards} |",
        f"| fleet rollup (`fleetpulse dashboards rollup`) | {r['rollup_s_per_run']:g} s per run |",
    ]
    return "\n".join(lines) + "\n"


def agent_table(doc: Document) -> str:
    r = doc["results"]
    lines = [
        provenance(doc),
        "",
        f"Over {r['period_s']:,} s with a collection every {r['interval_s']:g} s:",
        "",
        "| process | RSS MB | USS MB | CPU % of one core |",
        "|---|---|---|---|",
        *(
            f"| {name} | {p['rss_mb']:g} | {p['uss_mb']:g} | {p['cpu_pct_core']:.4f} |"
            for name, p in sorted(
                r["processes"].items(), key=lambda item: (item[0] != "fleetpulse-agent", item[0].startswith("floor"))
            )
        ),
    ]
    return "\n".join(lines) + "\n"


def load(path: Path) -> Document | None:
    return json.loads(path.read_text()) if path.exists() else None


def blocks() -> dict[Path, dict[str, Callable[[], str]]]:
    """Per file, each generated block's renderer; a block whose source is missing is left as it is."""
    out: dict[Path, dict[str, Callable[[], str]]] = {README: {}, PERFORMANCE: {}}
    metrics = load(METRICS)
    if metrics is not None:
        out[README]["results"] = lambda: readme_results(metrics)
    throughput = load(RESULTS / "stream_throughput.json")
    if throughput is not None:
        fleet = load(RESULTS / "stream_fleet.json")
        out[PERFORMANCE]["stream"] = lambda: stream_table(throughput, fleet)
        out[PERFORMANCE]["sizing"] = lambda: sizing_table(throughput, fleet)
    for name, render in (("tsdb", tsdb_table), ("agent", agent_table)):
        doc = load(RESULTS / f"{'dashboard_queries' if name == 'tsdb' else 'agent_footprint'}.json")
        if doc is not None:
            out[PERFORMANCE][name] = lambda d=doc, r=render: r(d)  # type: ignore[misc]
    return out


def render(text: str, renderers: Mapping[str, Callable[[], str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        body = renderers[name]() if name in renderers else match["body"]
        return f"{match.group(1)}{body}{match.group(4)}"

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path, renderers in blocks().items():
        text = path.read_text()
        fresh = render(text, renderers)
        if fresh != text:
            if args.write:
                path.write_text(fresh)
                print(f"updated {path.relative_to(REPO)}")
            else:
                stale.append(str(path.relative_to(REPO)))
    if stale:
        print(f"measured tables differ from their sources in {', '.join(stale)}: run make results", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
